"""W3 fan-out: one producer to 4 consumers, with the demand and the partition dispatchers.

    python bench/fanout.py [--events 2000000] [--repeat 5]

range(N) goes to 4 consumers that sum what they get (max_demand 1000 each), through a
DemandDispatcher (each batch to the consumer with the most demand) and through a
PartitionDispatcher of 4 partitions (hash: x % 4, so every event is looked at once);
beside them, the same work with one consumer and a plain Python loop. Medians of
``--repeat`` runs; ratios are within this run.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from common import machine, median_rate  # noqa: E402

import genstage_nb as gs  # noqa: E402


def plain_loop(n: int) -> int:
    total = 0
    for x in range(n):
        total += x
    return total


def pipeline(n: int, consumers: int, dispatcher: str) -> int:
    totals: list[int] = []
    if dispatcher == "partition":
        options = {"dispatcher": gs.PartitionDispatcher(partitions=consumers, hash=_by_rest)}
    else:
        options = {}
    p = gs.Pipeline(metrics_interval=0.25)
    src = p.add(gs.from_iterable(range(n), **options), name="range")
    for i in range(consumers):
        sink = p.add(gs.consumer(lambda events: totals.append(sum(events))), name=f"sum{i}")
        link = {"partition": i} if dispatcher == "partition" else {}
        p.link(src, sink, max_demand=1000, **link)
    p.run_sync()
    return sum(totals)


def _by_rest(x: int) -> int:
    return x % 4


def measure(fn, n: int, repeat: int, *args) -> float:
    """Median events per second of ``fn(n, *args)``, which sums range(n)."""
    return median_rate(fn, n, repeat, n * (n - 1) // 2, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n, rep = args.events, args.repeat
    print(f"W3 fan-out: range({n:,}) -> 4 consumers (sum), max_demand 1000, median of {rep}")
    print(f"machine: {machine()}")
    loop = measure(plain_loop, n, rep)
    one = measure(pipeline, n, rep, 1, "demand")
    rows = [
        ("plain Python loop", loop),
        ("1 consumer", one),
        ("4 consumers, DemandDispatcher", measure(pipeline, n, rep, 4, "demand")),
        ("4 consumers, PartitionDispatcher(4)", measure(pipeline, n, rep, 4, "partition")),
    ]
    print()
    print(f"{'pipeline':<38} {'M events/s':>11} {'x plain loop':>13} {'x 1 consumer':>13}")
    for name, rate in rows:
        print(f"{name:<38} {rate / 1e6:>11.2f} {rate / loop:>13.2f} {rate / one:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
