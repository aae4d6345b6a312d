"""What checkpoints cost: W1 and W5 with ``checkpoint=`` beside the same pipeline without.

    python bench/checkpoints.py [--events 3000000] [--repeat 5] [--flights 336776]

W1 is ``range(n) -> x + 1 -> sum`` (max_demand 1000, the sum a stage's state); W5 the
336,776 NYC flights as dicts -> per carrier and day the count and mean delay (a Flow,
``partition(stages=1).reduce``). Each runs without checkpoints (the baseline), with a
checkpoint every 5 s (the default: within a run this short, the final one only), and
every 0.05 s (a hundred times as often: several during the run, an upper bound on what the
5 s interval costs a longer run). The runs of the three rows alternate within each
repeat, and each row is the median; ratios are against the baseline of the same run.
The last columns are from ``p.checkpoints``: checkpoints taken, the mean time one took
(from the cut to the commit of its write, which runs in a worker thread beside the
pipeline: under a CPU-bound run it waits for the GIL) and its size in bytes. Runs this
short move by 15% in wall time; ``bench/instructions.py --checkpoints`` gives the cost
per event in instructions, which does not move.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from common import machine

import genstage_nb as gs

EVERY = [None, 5.0, 0.05]


class Sum(gs.Consumer):
    """W1's sink: the total is its state (what a checkpoint saves)."""

    def init(self) -> None:
        self.total = 0

    def handle_events(self, events: list) -> None:
        self.total += sum(events)


def w1(n: int, every: float | None, path: str) -> tuple[Any, gs.Pipeline]:
    durable = {} if every is None else {"checkpoint": path, "checkpoint_every": every}
    p = gs.Pipeline(checkpoint_mode="fresh", **durable)
    src = p.add(gs.from_iterable(range(n)), name="range")
    inc = p.add(gs.producer_consumer(lambda events: [x + 1 for x in events]), name="inc")
    out = p.add(Sum(), name="sum")
    p.link(src, inc, max_demand=1000)
    p.link(inc, out, max_demand=1000)
    p.run_sync()
    return out.total, p


def w5(events: list[dict], every: float | None, path: str) -> tuple[Any, gs.Pipeline]:
    from flow import _add, _key

    flow = gs.Flow.from_iterable(events).partition(key=_key, stages=1)
    flow = flow.reduce(lambda: [0, 0, 0.0], _add).configure(checkpoint_mode="fresh")
    if every is not None:
        flow = flow.configure(checkpoint=path, checkpoint_every=every)
    results = flow.run()
    return len(results), flow.pipeline


def measure(fn: Any, arg: Any, repeat: int, folder: str) -> list[dict]:
    """Seconds (median), checkpoints, mean time one took and its size, per interval."""
    seconds: dict = {every: [] for every in EVERY}
    records: dict = {}
    expected = None
    for i in range(repeat):
        for every in EVERY:
            path = os.path.join(folder, f"run{i}-{every}.db")
            started = time.perf_counter()
            result, p = fn(arg, every, path)
            seconds[every].append(time.perf_counter() - started)
            if expected is None:
                expected = result
            elif result != expected:
                raise AssertionError(f"{fn.__name__} every={every}: {result} != {expected}")
            if every is not None:
                records[every] = p.checkpoints
    rows = []
    for every in EVERY:
        saved = records.get(every)
        rows.append(
            {
                "every": every,
                "seconds": statistics.median(seconds[every]),
                "taken": 0 if saved is None else len(saved),
                "took": None if saved is None or not len(saved) else saved["took"].mean(),
                "size": None if saved is None or not len(saved) else saved["size"].mean(),
            }
        )
    return rows


def table(title: str, n: int, rows: list[dict]) -> None:
    base = rows[0]["seconds"]
    print(f"\n{title}")
    head = f"{'checkpoints':22} {'events/s':>12} {'x without':>10} {'taken':>6}"
    print(head + f" {'took (ms)':>10} {'size (B)':>10}")
    for row in rows:
        every = row["every"]
        label = "off" if every is None else f"every {every:g} s"
        took = "" if row["took"] is None else f"{row['took'] * 1000:.1f}"
        size = "" if row["size"] is None else f"{row['size']:,.0f}"
        print(
            f"{label:22} {n / row['seconds']:>12,.0f} {base / row['seconds']:>10.3f} "
            f"{row['taken']:>6} {took:>10} {size:>10}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3_000_000, help="W1's events")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--flights", type=int, default=None, help="W5's first N flights")
    args = parser.parse_args()
    from flow import flights

    events = flights()[: args.flights]
    with tempfile.TemporaryDirectory() as folder:
        table(
            f"W1 with checkpoints: range({args.events:,}) -> x + 1 -> sum, max_demand 1000",
            args.events,
            measure(w1, args.events, args.repeat, folder),
        )
        table(
            f"W5 with checkpoints: {len(events):,} flights -> per (carrier, day) count, mean",
            len(events),
            measure(w5, events, args.repeat, folder),
        )
    print(f"\n{machine()}")


if __name__ == "__main__":
    main()
