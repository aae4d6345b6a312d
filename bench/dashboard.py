"""The dashboard must not slow what it watches: a pipeline's throughput with the
dashboard open against the same pipeline without it, in one run.

    python bench/dashboard.py [--seconds 12] [--repeat 3] [--refresh 1.0]

The pipeline is W1's shape on the event loop (itertools.count -> x + 1 -> sum, links at
max_demand 1000), run in the background of an asyncio loop as in a notebook kernel,
for ``--seconds`` each time, without and with ``p.dashboard(refresh=...)`` (its text
refreshed every ``refresh`` seconds on the loop, its pictures drawn in a worker
thread); the two alternate, ``--repeat`` times. Printed: the median events/s of each,
their ratio (target >= 0.90x), the longest a refresh held the event loop (target about
20 ms) and how long the pictures took to draw.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from common import machine  # noqa: E402

import genstage_nb as gs  # noqa: E402


class Sum(gs.Consumer):
    def init(self) -> None:
        self.total = 0
        self.count = 0

    def handle_events(self, events: list) -> None:
        self.total += sum(events)
        self.count += len(events)


async def one_run(seconds: float, dashboard: bool, refresh: float) -> tuple[float, dict]:
    p = gs.Pipeline("W1 live", metrics_interval=0.25)
    src = p.add(gs.from_iterable(itertools.count()), name="numbers")
    plus = p.add(gs.producer_consumer(lambda events: [e + 1 for e in events]), name="plus")
    sink = p.add(Sum(name="sum"))
    p.link(src, plus, max_demand=1000)
    p.link(plus, sink, max_demand=1000)
    p.start()
    dash = p.dashboard(refresh=refresh) if dashboard else None
    await asyncio.sleep(seconds)
    handled = sink.count
    await p.stop(timeout=0)
    seen: dict = {}
    if dash is not None:
        seen = {
            "held": max(dash.loop_seconds, default=0.0),
            "draw": statistics.median(dash.draw_seconds or [0.0]),
            "refreshes": dash.refreshes,
            "pictures": len(dash.draw_seconds),
        }
        dash.close()
    return handled / seconds, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--refresh", type=float, default=1.0)
    args = parser.parse_args()
    without, with_, held, draws, pictures = [], [], [], [], []
    for _ in range(args.repeat):
        rate, _ = asyncio.run(one_run(args.seconds, False, args.refresh))
        without.append(rate)
        rate, seen = asyncio.run(one_run(args.seconds, True, args.refresh))
        with_.append(rate)
        held.append(seen["held"])
        draws.append(seen["draw"])
        pictures.append(seen["pictures"])
    base, open_ = statistics.median(without), statistics.median(with_)
    print(
        f"{'W1 live, md1000, ' + str(args.seconds) + ' s each':<44} {'events/s':>12} {'ratio':>7}"
    )
    print(f"{'dashboard closed':<44} {base:>12,.0f} {1.0:>7.2f}")
    print(
        f"{'dashboard open (refresh ' + str(args.refresh) + ' s)':<44} {open_:>12,.0f} "
        f"{open_ / base:>7.2f}   target >= 0.90"
    )
    print(f"longest a refresh held the event loop: {1000 * max(held):.1f} ms (target ~20 ms)")
    print(
        f"pictures drawn per run (worker thread): {statistics.median(pictures):.0f}, each in "
        f"{1000 * statistics.median(draws):.0f} ms of wall time (the thread shares the "
        f"interpreter with the loop: the busier the loop, the longer it takes)"
    )
    print(machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
