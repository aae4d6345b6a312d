"""W2 bounded memory: a fast producer and a slow consumer over 1e5, 1e6 and 1e7 events.

    python bench/memory.py [--sizes 100000 1000000 10000000]

Each size runs in a fresh Python process, which reports its peak RSS (``ru_maxrss``)
after the run; the ratio compares each peak with the smallest size's, measured in this
same run. Back-pressure should keep memory flat: the producer makes only what the
consumer asked for (max_demand 1000), however many events go through. Target: the peak
at 1e7 within 10% of the peak at 1e5.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import machine

CHILD = r"""
import resource, sys, time
sys.path.insert(0, {root!r})
import anyio
import genstage_nb as gs

n = {n}

class Slow(gs.Consumer):
    def init(self):
        self.total = 0
    async def handle_events(self, events):
        self.total += sum(x * x for x in events)  # a little work per event
        await anyio.sleep(0)                     # and a turn of the loop per batch

p = gs.Pipeline(metrics_interval=0.25)
sink = p.add(Slow(), name="slow")
p.link(p.add(gs.from_iterable(range(n)), name="fast"), sink, max_demand=1000)
started = time.perf_counter()
p.run_sync()
elapsed = time.perf_counter() - started
assert sink.total == sum(x * x for x in range(n))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, elapsed)
"""


def peak_rss_kib(n: int) -> tuple[int, float]:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=root, n=n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), float(out[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    args = parser.parse_args(argv)
    print("W2: fast producer -> slow consumer (max_demand 1000), peak RSS of a fresh process")
    print(f"machine: {machine()}")
    print()
    print(f"{'events':>12} {'peak RSS MiB':>13} {'x smallest':>11} {'seconds':>8}")
    base = None
    for n in args.sizes:
        kib, seconds = peak_rss_kib(n)
        base = base or kib
        print(f"{n:>12,} {kib / 1024:>13.1f} {kib / base:>11.3f} {seconds:>8.2f}")
    verdict = "met" if kib <= 1.1 * base else "NOT met"
    print(f"target: the largest within 10% of the smallest -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
