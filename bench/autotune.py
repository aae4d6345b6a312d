"""Autotune: max_demand chosen from measured throughput, against a grid search.

    python bench/autotune.py [--seconds 2] [--quick]

Three workloads, each in one run (ratios within it):

1. per-batch cost: a stage that awaits 20 ms per batch, whatever its size, between a fast
   producer and a fast sink, links at max_demand 10; the tuner's throughput once settled
   (``max_in_flight=1_000_000``) against the best of a grid search over max_demand (10,
   100, ..., 100 000, 300 000, 500 000: the last keeps 1 000 000 in flight on the two
   links, at the bound; the throughput of this workload grows with max_demand as far as
   memory goes, so the grid goes as far as the tuner may); target >= 0.90x, settled
   within 15 s;
2. CPU-bound W1 (range -> x + 1 -> sum) from max_demand 1000, tuned against untuned;
   target no worse than 0.95x;
3. per-event cost (the bound binds): a stage that awaits 1 ms per event, from max_demand
   100, with max_in_flight=400 and target_latency=0.5; the most events in flight seen
   (sampled every 10 ms) and the slowest event's latency (made -> handled); targets
   in flight <= max_in_flight, latency <= 2 x target_latency.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

import anyio

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from common import machine  # noqa: E402

import genstage_nb as gs  # noqa: E402


class PerBatch(gs.ProducerConsumer):
    async def handle_events(self, events):
        await anyio.sleep(0.02)
        return events


def per_batch_pipeline(max_demand: int) -> tuple[gs.Pipeline, list[int]]:
    count = [0]
    p = gs.Pipeline(metrics_interval=0.1)
    src = p.add(gs.from_iterable(itertools.count()), name="src")
    stage = p.add(PerBatch(name="lookup"))
    sink = p.add(gs.consumer(lambda events: count.__setitem__(0, count[0] + len(events))))
    p.link(src, stage, max_demand=max_demand)
    p.link(stage, sink, max_demand=max_demand)
    return p, count


async def rate(p: gs.Pipeline, count: list[int], seconds: float, tune: bool = False):
    """Events/s over ``seconds`` (after the tuner settled, if ``tune``). The tuner may
    keep up to a million events in flight (the grid goes that far too)."""
    tuner = p.autotune(max_in_flight=1_000_000) if tune else None
    settled_after = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        if tuner is not None:
            started = time.perf_counter()
            with anyio.move_on_after(15):
                await tuner.wait_settled()
            settled_after = time.perf_counter() - started if tuner.settled else None
        else:
            await anyio.sleep(seconds / 2)  # warm up as long as a measurement
        before, t0 = count[0], time.perf_counter()
        await anyio.sleep(seconds)
        measured = (count[0] - before) / (time.perf_counter() - t0)
        await p.stop(timeout=0)
    return measured, settled_after, tuner


def per_batch(seconds: float, grid: list[int]) -> bool:
    print("\n1. per-batch cost: 20 ms a batch, links from max_demand 10")
    print(f"{'max_demand':>12} {'events/s':>12}")
    results = {}
    for md in grid:
        p, count = per_batch_pipeline(md)
        results[md], _, _ = anyio.run(rate, p, count, seconds)
        print(f"{md:>12,} {results[md]:>12,.0f}")
    best = max(results, key=results.get)
    p, count = per_batch_pipeline(10)
    tuned, settled_after, tuner = anyio.run(rate, p, count, seconds, True)
    final = max(sub.max_demand for sub in p.subscriptions)
    ratio = tuned / results[best]
    after = "not settled in 15 s" if settled_after is None else f"settled in {settled_after:.1f} s"
    print(f"{'tuned':>12} {tuned:>12,.0f}   (max_demand {final:,}, {after})")
    met = ratio >= 0.90 and settled_after is not None and settled_after <= 15
    print(
        f"tuned / best of the grid (max_demand {best:,}): {ratio:.2f}x (target >= 0.90x, "
        f"within 15 s) -> {'met' if met else 'NOT met'}"
    )
    return met


def w1(n: int, repeat: int) -> bool:
    print(f"\n2. CPU-bound W1: range({n:,}) -> x + 1 -> sum, from max_demand 1000")

    def run(tune: bool) -> float:
        total = []
        p = gs.Pipeline()
        src = p.add(gs.from_iterable(range(n)), name="src")
        inc = p.add(gs.producer_consumer(lambda events: [e + 1 for e in events], name="inc"))
        out = p.add(gs.consumer(lambda events: total.append(sum(events)), name="sum"))
        p.link(src, inc, max_demand=1000)
        p.link(inc, out, max_demand=1000)
        if tune:
            p.autotune()
        started = time.perf_counter()
        p.run_sync()
        elapsed = time.perf_counter() - started
        assert sum(total) == n * (n + 1) // 2
        return n / elapsed

    untuned = statistics.median(run(False) for _ in range(repeat))
    tuned = statistics.median(run(True) for _ in range(repeat))
    ratio = tuned / untuned
    print(
        f"untuned {untuned / 1e6:.2f} M events/s, tuned {tuned / 1e6:.2f} M events/s: "
        f"{ratio:.2f}x (target >= 0.95x) -> {'met' if ratio >= 0.95 else 'NOT met'}"
    )
    return ratio >= 0.95


def per_event(seconds: float) -> bool:
    print(
        "\n3. per-event cost: 1 ms an event, from max_demand 100, max_in_flight=400, "
        "target_latency=0.5"
    )
    latencies: list[float] = []

    class PerEvent(gs.ProducerConsumer):
        async def handle_events(self, events):
            for _ in events:
                await anyio.sleep(0.001)
            return events

    def stamp(demand):
        now = time.perf_counter()
        return [now] * demand

    p = gs.Pipeline(metrics_interval=0.1)
    src = p.add(gs.producer(stamp, name="src"))
    stage = p.add(PerEvent(name="work"))
    sink = p.add(
        gs.consumer(lambda events: latencies.extend(time.perf_counter() - t for t in events))
    )
    p.link(src, stage, max_demand=100)
    p.link(stage, sink, max_demand=100)
    most = [0]

    def in_flight() -> int:
        pending = sum(sub.pending for sub in p.subscriptions)
        return pending + sum(proc.buffered() for proc in p._procs.values())

    async def main():
        tuner = p.autotune(max_in_flight=400, target_latency=0.5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            end = time.perf_counter() + 3 * seconds
            while time.perf_counter() < end:
                await anyio.sleep(0.01)
                most[0] = max(most[0], in_flight())
            await p.stop(timeout=0)
        return tuner

    tuner = anyio.run(main)
    worst = max(latencies)
    final = max(sub.max_demand for sub in p.subscriptions)
    met = most[0] <= 400 and worst <= 1.0
    print(
        f"most in flight {most[0]} (<= 400), slowest event {worst:.3f} s (<= 1.0 s), "
        f"max_demand {final}, settled {tuner.settled} -> {'met' if met else 'NOT met'}"
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    grid = [10, 100, 1000, 10_000, 100_000, 300_000, 500_000]
    if args.quick:
        args.seconds, args.repeat, args.events, grid = 0.5, 1, 1_000_000, [10, 1000]
    print("Autotune: the tuner against a grid search and against untuned W1")
    print(f"machine: {machine()}")
    results = [per_batch(args.seconds, grid), w1(args.events, args.repeat), per_event(args.seconds)]
    print(f"\ntargets met: {sum(results)} of {len(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
