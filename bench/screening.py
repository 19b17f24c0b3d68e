"""The compliance gate per call, every check on, 10M list numbers loaded: ``CallGate.screen`` as the CallFlow calls it.

Setup (not timed): a ListBook of 10M numbers (national DNC 8M, litigators 1M, blocked ANIs 0.5M, state DNC 0.4M,
buyers' suppression 0.1M), the fraud scorer with the seed's thresholds, and STIR/SHAKEN against a throwaway PKI
(a test CA and a signing certificate, as ``compliance.stir`` would load them). Callers come from a pool of 20k US
numbers, 10% of them on some list; each was seen once before (the phonenumbers work is cached per number, as on
the call path), and a separate figure gives a first-sight caller.

Three workloads, each timed call by call (perf_counter_ns):
- ``unsigned``: no Identity header (lists + STIR's unsigned policy + fraud);
- ``signed``: every call carries its own freshly signed PASSporT (real traffic: ES256 verified per call);
- ``es256``: the peer: one bare ECDSA P-256 verify through ``cryptography`` (OpenSSL), the floor for ``signed``.

    .venv/bin/python bench/screening.py [--calls 50000] [--numbers 10000000]

Last line: ``unsigned_p50_us=... unsigned_p99_us=... signed_p50_us=... signed_p99_us=... es256_verify_us=...
first_sight_us=... numbers=...``.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dce.compliance.lists import ListBook, ListKind, NumberList
from dce.compliance.numberset import NumberSet
from dce.exchange.compliance_setup import build_compliance
from dce.exchange.config import ComplianceConfig
from dce.exchange.router import CallRequest, Routed
from dce.routing.model import CallerContext, Campaign, RoutingPlan
from tests.stir_pki import StirPki

DID = "+18005550100"
CAMPAIGN = Campaign("c1", "Auto", stir_min_attestation="B")
SHARES = ((ListKind.DNC_NATIONAL, None, 0.8), (ListKind.LITIGATOR, None, 0.1), (ListKind.BLOCKED_ANI, None, 0.05),
          (ListKind.DNC_STATE, "CA", 0.04), (ListKind.SUPPRESSION, "b1", 0.01))


def random_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` US numbers +1 NXX NXX XXXX as int64 digits (area code and exchange 200-999)."""
    area = rng.integers(200, 1000, n, dtype=np.int64)
    exchange = rng.integers(200, 1000, n, dtype=np.int64)
    line = rng.integers(0, 10_000, n, dtype=np.int64)
    return 10_000_000_000 + area * 10_000_000 + exchange * 10_000 + line


def book_of(total: int, callers: list[str], rng: np.random.Generator) -> ListBook:
    numbers = random_numbers(rng, total)
    listed = np.array([int(c[1:]) for c in callers[: len(callers) // 10]], dtype=np.int64)
    lists, start = [], 0
    for index, (kind, scope, share) in enumerate(SHARES):
        size = int(total * share)
        part = numbers[start:start + size]
        if index == 0:
            part = np.concatenate([part, listed])
        lists.append(NumberList(f"l{index}", kind, scope, NumberSet(part)))
        start += size
    return ListBook(lists)


def percentiles(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--numbers", type=int, default=10_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    pick = random.Random(7)
    callers = ["+" + str(n) for n in random_numbers(rng, 20_000)]
    started = time.perf_counter()
    book = book_of(args.numbers, callers, rng)
    print(f"book: {args.numbers:,} numbers in {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        pki = StirPki(Path(tmp))
        signer = pki.issue("sp-bench")
        config = ComplianceConfig.model_validate({"stir": {"trust_store": str(pki.trust_dir),
                                                           "certificates": str(pki.cert_dir)}})
        compliance = build_compliance(config, None, campaign=lambda _id: CAMPAIGN,  # type: ignore[arg-type]
                                      conversion_s=lambda _id: 60)
        assert compliance.gate is not None and compliance.lists is not None
        compliance.lists.replace(book)
        gate = compliance.gate

        def routed_for(caller: str) -> Routed:
            return Routed(RoutingPlan(()), CallerContext(ani=caller, did=DID, state="CA", campaign_id="c1",
                                                         publisher_id=f"p{pick.randrange(50)}"))

        now = datetime.now(UTC).timestamp()
        for caller in callers:  # each caller seen once: per-number caches warm, as for a returning caller
            gate.screen(CallRequest(DID, caller), routed_for(caller), now - 7200)

        def run(signed: bool) -> tuple[list[int], dict[str, int]]:
            requests = []
            for i in range(args.calls):
                caller = pick.choice(callers)
                headers: tuple[tuple[str, str], ...] = ()
                at = now + i * 0.02  # 50 calls/s: velocity stays realistic over the run
                if signed:
                    headers = (("Identity", signer.identity(caller, [DID], attest="A", iat=at)),)
                requests.append((CallRequest(DID, caller, headers), routed_for(caller), at))
            gc.collect()
            gc.freeze()
            samples, actions = [], {"allow": 0, "flag": 0, "reject": 0}
            clock = time.perf_counter_ns
            for request, routed, at in requests:
                t0 = clock()
                verdict = gate.screen(request, routed, at)
                samples.append(clock() - t0)
                actions[str(verdict.action)] += 1
            gc.unfreeze()
            return samples, actions

        unsigned, unsigned_actions = run(False)
        now += args.calls * 0.02 + 7200
        signed, signed_actions = run(True)

        fresh = ["+" + str(n) for n in random_numbers(rng, 2000)]
        first = []
        for caller in fresh:
            t0 = time.perf_counter_ns()
            gate.screen(CallRequest(DID, caller), routed_for(caller), now)
            first.append(time.perf_counter_ns() - t0)

    key = ec.generate_private_key(ec.SECP256R1())
    data = b"x" * 400
    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    verifies = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        verifies.append(time.perf_counter_ns() - t0)

    u50, u99 = percentiles(unsigned)
    s50, s99 = percentiles(signed)
    print(f"unsigned: {unsigned_actions}  signed: {signed_actions}")
    print(f"unsigned p50 {u50:.1f} µs p99 {u99:.1f} µs | signed p50 {s50:.1f} µs p99 {s99:.1f} µs | "
          f"bare ES256 verify median {statistics.median(verifies) / 1000:.1f} µs | "
          f"first-sight caller median {statistics.median(first) / 1000:.1f} µs")
    print(f"unsigned_p50_us={u50:.1f} unsigned_p99_us={u99:.1f} signed_p50_us={s50:.1f} signed_p99_us={s99:.1f} "
          f"es256_verify_us={statistics.median(verifies) / 1000:.1f} "
          f"first_sight_us={statistics.median(first) / 1000:.1f} numbers={args.numbers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
