"""Live auctions in process on one core: how many bids ``LiveAuctions.place`` accepts per second.

    .venv/bin/python bench/auction.py [--calls 10000] [--bids 100]

Opens ``--calls`` auctions, places ``--bids`` bids on each (interleaved across calls, all accepted), then closes
them all; ``--rounds`` fresh books, the median reported (the machine is shared).
Last line: ``bids_per_s=... calls=... bids=... place_ns=... close_us_per_call=... best_bids_per_s=...``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dce.bidding.auction import LiveAuctions, PlaceResult


def one_round(n_calls: int, n_bids: int, seed: int) -> tuple[float, float, int]:
    """One fresh book: returns (seconds placing, seconds closing, bids accepted)."""
    rng = random.Random(seed)
    book = LiveAuctions()
    call_ids = [f"call-{n}" for n in range(n_calls)]
    bidders = [f"buyer-{n}" for n in range(50)]
    for call_id in call_ids:
        book.open(call_id, reserve=1_000_000, window_ends_at=1e12, now=0.0)
    # pre-generated workload: (call_id, bidder, amount) interleaved across calls
    work = [
        (rng.choice(call_ids), rng.choice(bidders), rng.randrange(1_000_000, 50_000_000))
        for _ in range(n_calls * n_bids)
    ]
    place = book.place
    now = 1.0
    accepted = 0
    started = time.perf_counter()
    for call_id, bidder, amount in work:
        if place(call_id, bidder, amount, now) is PlaceResult.ACCEPTED:
            accepted += 1
    placed = time.perf_counter() - started
    started = time.perf_counter()
    for call_id in call_ids:
        book.close(call_id, now)
    closed = time.perf_counter() - started
    assert accepted == len(work)
    return placed, closed, accepted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--bids", type=int, default=100, help="bids per call")
    parser.add_argument("--rounds", type=int, default=3, help="fresh books; the median round is reported")
    args = parser.parse_args()
    rounds = sorted(one_round(args.calls, args.bids, seed) for seed in range(args.rounds))
    placed, closed, accepted = rounds[len(rounds) // 2]
    for p, _, n in rounds:
        print(f"round: bids_per_s={n / p:.0f}")
    print(
        f"bids_per_s={accepted / placed:.0f} calls={args.calls} bids={accepted} "
        f"place_ns={placed / accepted * 1e9:.0f} close_us_per_call={closed / args.calls * 1e6:.1f} "
        f"best_bids_per_s={rounds[0][2] / rounds[0][0]:.0f}"
    )


if __name__ == "__main__":
    main()
