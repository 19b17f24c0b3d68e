"""The registrar in the sans-IO SIP core: REGISTER with digest through the B2BUA in memory (no sockets, no loop).

Each registration is what a device sends: a REGISTER, its 401 challenge, the REGISTER again with a SHA-256 (or
``--md5``) digest answer, its 200 listing the bindings; ``--agents`` agents with one device each, registering in
turn, then refreshing (``--rounds``). This is the CPU one registration costs the SIP core (parse, transactions,
digest, bindings); the client's digest is computed before the clock starts.

    .venv/bin/python bench/registrar.py [--agents 2000] [--rounds 2] [--md5]

Last line: ``registrations=... us_per_registration=... registrations_per_s=... bindings=...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dce.sip.b2bua import B2BUA
from dce.sip.digest import Challenge, NonceSigner, authorization, ha1
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Response, parse
from dce.sip.registrar import Account, Registrar
from tests.unit.sipfactory import request

DOMAIN = "sip:10.0.0.1"
WALL = 1_767_600_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="registrations per agent (the later ones refresh)")
    parser.add_argument("--md5", action="store_true", help="answer the MD5 challenge instead of SHA-256")
    args = parser.parse_args()

    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060)})
    b2bua = B2BUA(endpoint)
    registrar = Registrar(NonceSigner(b"0123456789abcdef0123456789abcdef"))
    registrar.replace_accounts(Account(f"a{i}", f"agent{i}", "dce", ha1(f"agent{i}", "dce", "pw", "SHA-256"),
                                       ha1(f"agent{i}", "dce", "pw", "MD5")) for i in range(args.agents))
    b2bua.registrar = registrar
    b2bua.wall_offset = WALL

    def device(i: int) -> tuple[str, int]:
        return (f"192.0.{2 + i // 250 % 250}.{1 + i % 250}", 5060)

    # the challenge is the same for every REGISTER of one source within a second: learn it, answer it up front
    index = 1 if args.md5 else 0
    attempts = []
    for round_ in range(args.rounds):
        for i in range(args.agents):
            user, cseq = f"agent{i}", 1 + 2 * round_
            extra = [("Contact", f"<sip:{user}@{device(i)[0]}:5060>"), ("Expires", "600")]
            first = request("REGISTER", DOMAIN, to_uri=f"sip:{user}@10.0.0.1", from_uri=f"sip:{user}@10.0.0.1",
                            call_id=f"reg-{i}", cseq=cseq, via_host=device(i)[0], extra=extra)
            b2bua.receive(first, "udp", device(i), 0.0)
            (challenge_bytes, _, _), = b2bua.datagrams_to_send()
            challenge = parse(challenge_bytes)
            assert isinstance(challenge, Response) and challenge.status == 401
            credentials = authorization(Challenge.parse(challenge.get_all("WWW-Authenticate")[index]), username=user,
                                        password="pw", method="REGISTER", uri=DOMAIN, cnonce=f"c{i}")
            second = request("REGISTER", DOMAIN, to_uri=f"sip:{user}@10.0.0.1", from_uri=f"sip:{user}@10.0.0.1",
                             call_id=f"reg-{i}", cseq=cseq + 1, via_host=device(i)[0],
                             extra=[*extra, ("Authorization", str(credentials))])
            attempts.append((first, second, device(i)))
    endpoint.server_transactions.clear()  # the learning pass's transactions would absorb the timed ones

    now = 0.0
    started = time.perf_counter()
    for first, second, addr in attempts:
        now += 0.0001
        b2bua.receive(first.replace(b"branch=z9hG4bK", b"branch=z9hG4bKt"), "udp", addr, now)
        b2bua.receive(second, "udp", addr, now)
    elapsed = time.perf_counter() - started
    sent = b2bua.datagrams_to_send()
    ok = sum(1 for data, _, _ in sent if data.startswith(b"SIP/2.0 200"))
    assert ok == len(attempts), f"{ok} of {len(attempts)} registered"
    count = len(attempts)
    print(f"registrations={count} us_per_registration={elapsed / count * 1e6:.1f} "
          f"registrations_per_s={count / elapsed:.0f} bindings={registrar.binding_count()}")


if __name__ == "__main__":
    main()
