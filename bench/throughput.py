"""W1 throughput: range(N) -> x + 1 -> sum, genstage_nb beside its baselines, in one run.

    python bench/throughput.py [--events 2000000] [--max-demand 1000] [--repeat 5]
                               [--peer-events 200000] [--no-curve]

Every figure is the median of ``--repeat`` runs; ratios compare figures measured in this
same run (machines are noisy, absolute numbers are not comparable across runs).
Baselines: a plain Python loop doing the same work (the limit) and an asyncio.Queue(1000)
pipeline passing one item per put (what a hand-written asyncio pipeline does). Peers
(installed by the ``[bench]`` extra; a row is left out when one is missing): streamz
(its synchronous core, one ``emit`` per item) and aiostream (``iterate | map``, one
item at a time). The slow rows run over fewer events (``--peer-events``); a rate is a
rate, so they compare all the same. The genstage_nb rows sample metrics every 0.25 s
(the default) unless they say otherwise. The curve runs genstage_nb over max_demand
1, 10, 100, 1000 and 10000 on asyncio and trio (small max_demand over fewer events).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from common import machine, median_rate  # noqa: E402

import genstage_nb as gs  # noqa: E402


def plain_loop(n: int) -> int:
    total = 0
    for x in range(n):
        total += x + 1
    return total


def asyncio_queue(n: int) -> int:
    async def main() -> int:
        q1: asyncio.Queue = asyncio.Queue(1000)
        q2: asyncio.Queue = asyncio.Queue(1000)
        done = object()

        async def produce() -> None:
            for x in range(n):
                await q1.put(x)
            await q1.put(done)

        async def increment() -> None:
            while (x := await q1.get()) is not done:
                await q2.put(x + 1)
            await q2.put(done)

        async def total() -> int:
            s = 0
            while (x := await q2.get()) is not done:
                s += x
            return s

        results = await asyncio.gather(produce(), increment(), total())
        return results[2]

    return asyncio.run(main())


def streamz_pipeline(n: int) -> int:
    from streamz import Stream

    total = [0]

    def add(x: int) -> None:
        total[0] += x

    source = Stream()
    source.map(lambda x: x + 1).sink(add)
    for x in range(n):
        source.emit(x)
    return total[0]


def aiostream_pipeline(n: int) -> int:
    from aiostream import pipe, stream

    async def main() -> int:
        total = 0
        xs = stream.iterate(range(n)) | pipe.map(lambda x: x + 1)
        async with xs.stream() as items:
            async for x in items:
                total += x
        return total

    return asyncio.run(main())


def peers() -> list[tuple[str, object]]:
    """The peer pipelines that are installed."""
    found = []
    for module, label, fn in (
        ("streamz", "streamz (sync, one emit per item)", streamz_pipeline),
        ("aiostream", "aiostream (iterate | map)", aiostream_pipeline),
    ):
        try:
            version = __import__(module).__version__
        except ImportError:
            print(f"({module} not installed: pip install -e '.[bench]')")
            continue
        found.append((f"{label} {version}", fn))
    return found


def genstage(
    n: int, max_demand: int, backend: str = "asyncio", sampling: float | None = 0.25
) -> int:
    totals = []
    p = gs.Pipeline(metrics_interval=sampling)
    src = p.add(gs.from_iterable(range(n)), name="range")
    inc = p.add(gs.producer_consumer(lambda events: [x + 1 for x in events]), name="inc")
    out = p.add(gs.consumer(lambda events: totals.append(sum(events))), name="sum")
    p.link(src, inc, max_demand=max_demand)
    p.link(inc, out, max_demand=max_demand)
    p.run_sync(backend=backend)
    return sum(totals)


def measure(fn, n: int, repeat: int, *args) -> float:
    """Median events per second of ``fn(n, *args)``, which sums ``x + 1`` over range(n)."""
    return median_rate(fn, n, repeat, n * (n + 1) // 2, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--max-demand", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--queue-events",
        type=int,
        default=None,
        help="events for the slow asyncio.Queue baseline (default: --events)",
    )
    parser.add_argument("--peer-events", type=int, default=200_000)
    parser.add_argument("--no-curve", action="store_true", help="skip the max_demand curve")
    args = parser.parse_args(argv)
    n, md, rep = args.events, args.max_demand, args.repeat
    print(f"W1: range({n:,}) -> x + 1 -> sum, max_demand {md}, median of {rep} runs")
    print(f"machine: {machine()}")
    loop = measure(plain_loop, n, rep)
    queue = measure(asyncio_queue, args.queue_events or n, max(1, rep // 2 + 1))
    rows = [
        ("plain Python loop", loop),
        ("asyncio.Queue(1000), one item per put", queue),
        (f"genstage_nb asyncio, max_demand {md}", measure(genstage, n, rep, md, "asyncio")),
        (f"genstage_nb trio, max_demand {md}", measure(genstage, n, rep, md, "trio")),
        ("genstage_nb asyncio, sampling off", measure(genstage, n, rep, md, "asyncio", None)),
        ("genstage_nb asyncio, sampling 0.01 s", measure(genstage, n, rep, md, "asyncio", 0.01)),
    ]
    peer_rows = [(name, measure(fn, args.peer_events, rep)) for name, fn in peers()]
    rows += peer_rows
    print()
    print(f"{'pipeline':<42} {'M events/s':>11} {'x plain loop':>13} {'x asyncio.Queue':>16}")
    for name, rate in rows:
        print(f"{name:<42} {rate / 1e6:>11.2f} {rate / loop:>13.2f} {rate / queue:>16.1f}")
    gs_rate = rows[2][1]
    ok = gs_rate >= 0.5 * loop and gs_rate >= 20 * queue
    print()
    print(
        f"targets (asyncio): >= 0.5x plain loop: {gs_rate / loop:.2f}x; "
        f">= 20x asyncio.Queue: {gs_rate / queue:.1f}x -> {'met' if ok else 'NOT met'}"
    )
    off = rows[4][1]
    print(
        f"metrics sampling (0.25 s) costs {100 * (1 - gs_rate / off):+.1f}% against sampling "
        f"off (target: at most 5%)"
    )
    for name, rate in peer_rows:
        print(f"vs {name}: {gs_rate / rate:.0f}x (target: >= 30x)")
    if not args.no_curve:
        curve(n, rep, loop, queue)
    return 0


def curve(n: int, rep: int, loop: float, queue: float) -> None:
    """genstage_nb's rate over max_demand, on asyncio and trio."""
    print()
    print(
        f"{'max_demand':>10} {'events':>10} {'asyncio M/s':>12} {'trio M/s':>9} "
        f"{'asyncio x loop':>15} {'asyncio x Queue':>16} {'trio x Queue':>13}"
    )
    for md in (1, 10, 100, 1000, 10_000):
        events = min(n, 100_000 * md)
        a = measure(genstage, events, rep, md, "asyncio")
        t = measure(genstage, events, rep, md, "trio")
        print(
            f"{md:>10} {events:>10,} {a / 1e6:>12.3f} {t / 1e6:>9.3f} {a / loop:>15.3f} "
            f"{a / queue:>16.2f} {t / queue:>13.2f}"
        )
    print("target at max_demand 1: >= 1x asyncio.Queue")


if __name__ == "__main__":
    sys.exit(main())
