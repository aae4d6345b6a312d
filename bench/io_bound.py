"""W4 I/O-bound work: many async calls of fixed latency, a bounded number at once.

    python bench/io_bound.py [--calls 5000] [--latency 0.01] [--concurrency 100]
                             [--repeat 3] [--http-calls 2000] [--no-http]

Each call awaits ``latency`` seconds; at most ``concurrency`` run at once, so no code can
beat ``calls * latency / concurrency`` seconds (the limit). Side by side in one run:
asyncio.gather with a Semaphore, a pool of ``concurrency`` asyncio worker tasks,
aiostream's ``map(task_limit=...)``, and genstage_nb's ``ConcurrentConsumer``,
``gs.map(concurrency=...)`` and an async producer-consumer with ``concurrency=`` (one event
per batch). Figures are the limit over the time taken (1.0 = the limit); medians of
``--repeat`` runs.

The second table makes real HTTP round trips to a server on 127.0.0.1 (aiohttp, in a
subprocess: it answers after ``latency`` seconds), with aiohttp's client at the same
concurrency for every row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from common import machine  # noqa: E402

import genstage_nb as gs  # noqa: E402

# -- plain asyncio -------------------------------------------------------------------


async def gather_semaphore(call, n: int, k: int) -> int:
    semaphore = asyncio.Semaphore(k)

    async def one(i):
        async with semaphore:
            return await call(i)

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return len(results)


async def worker_pool(call, n: int, k: int) -> int:
    items = iter(range(n))
    results = []

    async def worker():
        for i in items:  # shared: each item goes to one worker
            results.append(await call(i))

    await asyncio.gather(*(worker() for _ in range(k)))
    return len(results)


async def aiostream_map(call, n: int, k: int) -> int:
    from aiostream import pipe, stream

    xs = stream.iterate(range(n)) | pipe.map(call, task_limit=k)
    count = 0
    async with xs.stream() as streamer:
        async for _ in streamer:
            count += 1
    return count


# -- genstage_nb -----------------------------------------------------------------------


async def concurrent_consumer(call, n: int, k: int) -> int:
    done = []

    class Call(gs.ConcurrentConsumer):
        async def handle_event(self, event):
            done.append(await call(event))

    p = gs.Pipeline(metrics_interval=None)
    # It asks again once min_demand events are done (ConsumerSupervisor's rule): with
    # min_demand 0 each finished event is replaced at once, k stay in flight.
    p.link(p.add(gs.from_iterable(range(n))), p.add(Call()), max_demand=k, min_demand=0)
    await p.run()
    return len(done)


async def genstage_map(call, n: int, k: int) -> int:
    count = []
    p = gs.Pipeline(metrics_interval=None)
    calls = p.add(gs.map(call, concurrency=k))
    p.link(p.add(gs.from_iterable(range(n))), calls, max_demand=2 * k, min_demand=k)
    p.link(calls, p.add(gs.consumer(lambda events: count.append(len(events)))), max_demand=2 * k)
    await p.run()
    return sum(count)


async def concurrent_producer_consumer(call, n: int, k: int) -> int:
    count = []

    class Calls(gs.ProducerConsumer):
        async def handle_events(self, events):
            return [await call(e) for e in events]

    p = gs.Pipeline(metrics_interval=None)
    calls = p.add(Calls(concurrency=k))
    # One event per batch: max_demand - min_demand = 1.
    p.link(p.add(gs.from_iterable(range(n))), calls, max_demand=k, min_demand=k - 1)
    p.link(calls, p.add(gs.consumer(lambda events: count.append(len(events)))), max_demand=k)
    await p.run()
    return sum(count)


ROWS = [
    ("asyncio.gather + Semaphore", gather_semaphore),
    ("asyncio worker pool", worker_pool),
    ("aiostream map(task_limit)", aiostream_map),
    ("gs.ConcurrentConsumer", concurrent_consumer),
    ("gs.map(concurrency)", genstage_map),
    ("gs producer-consumer, concurrency", concurrent_producer_consumer),
]


def measure(run, calls, n: int, k: int, repeat: int) -> float:
    """Median seconds of ``run(call, n, k)``; ``calls()`` is an async context manager
    that gives ``call`` (and closes what it opened)."""

    async def once():
        async with calls() as call:
            return await run(call, n, k)

    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        count = asyncio.run(once())
        times.append(time.perf_counter() - started)
        if count != n:
            raise AssertionError(f"{run.__name__} made {count} calls, expected {n}")
    return statistics.median(times)


def table(title: str, calls, n: int, k: int, latency: float, repeat: int) -> dict:
    limit = n * latency / k
    print(f"\n{title}")
    print(f"{'code':<36} {'seconds':>8} {'x limit':>8} {'x gather':>9}")
    results = {}
    for name, run in ROWS:
        if run is aiostream_map:
            try:
                import aiostream  # noqa: F401
            except ImportError:
                print(f"{name:<36} (aiostream not installed: the [bench] extra)")
                continue
        results[name] = measure(run, calls, n, k, repeat)
    gather = results["asyncio.gather + Semaphore"]
    for name, seconds in results.items():
        print(f"{name:<36} {seconds:>8.3f} {limit / seconds:>8.2f} {gather / seconds:>9.2f}")
    return {name: limit / seconds for name, seconds in results.items()}


def sleeping(latency: float):
    @contextlib.asynccontextmanager
    async def calls():
        async def call(i):
            await asyncio.sleep(latency)
            return i

        yield call

    return calls


SERVER = """
import asyncio, sys
from aiohttp import web
latency = float(sys.argv[1])
async def handle(request):
    await asyncio.sleep(latency)
    return web.json_response({"id": int(request.match_info["id"])})
async def main():
    app = web.Application()
    app.router.add_get("/items/{id}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def http(port: int, k: int):
    @contextlib.asynccontextmanager
    async def calls():
        import aiohttp

        connector = aiohttp.TCPConnector(limit=k)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def call(i):
                async with session.get(f"http://127.0.0.1:{port}/items/{i}") as response:
                    return (await response.json())["id"]

            yield call

    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--http-calls", type=int, default=2000)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args(argv)
    n, k, latency = args.calls, args.concurrency, args.latency
    print(
        f"W4: {n:,} async calls of {latency * 1000:g} ms, at most {k} at once "
        f"(limit {n * latency / k:.3f} s), median of {args.repeat}"
    )
    print(f"machine: {machine()}")
    ratios = table("sleeping calls", sleeping(latency), n, k, latency, args.repeat)
    gs_map, gather = ratios["gs.map(concurrency)"], ratios["asyncio.gather + Semaphore"]
    met = gs_map >= 0.85 and gs_map >= gather
    print(
        f"\ntargets: gs.map >= 0.85x the limit: {gs_map:.2f}x; >= 1.0x gather + Semaphore: "
        f"{gs_map / gather:.2f}x -> {'met' if met else 'NOT met'}"
    )
    if args.no_http:
        return 0
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print("\nHTTP table skipped: pip install aiohttp (the [bench] extra)")
        return 0
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(latency)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())
        m = args.http_calls
        title = (
            f"HTTP GET on 127.0.0.1:{port} (aiohttp server in a subprocess, "
            f"{latency * 1000:g} ms per answer; aiohttp client), {m:,} calls"
        )
        ratios = table(title, http(port, k), m, k, latency, args.repeat)
    finally:
        server.terminate()
        server.wait()
    best = max(ratios[name] for name in ("asyncio.gather + Semaphore", "asyncio worker pool"))
    print(
        f"\ntarget: gs.map within 10% of the best plain-asyncio client: "
        f"{ratios['gs.map(concurrency)'] / best:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
