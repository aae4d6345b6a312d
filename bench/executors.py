"""W3 scale-out: a CPU-bound producer-consumer on 1 and 2 workers, as processes and on Dask.

    python bench/executors.py [--events 20000] [--work 2000] [--repeat 3] [--no-dask]

Each event costs ``--work`` multiply-adds in pure Python (about 0.1 ms at 2000). The
pipeline is numbers -> work (executor=..., concurrency=3 x workers, max_demand 1000:
batches of 500) -> sum. Every figure is the median of ``--repeat`` runs; the speed-up
compares the 2-worker run with the 1-worker run of the same executor kind, measured in
this same run. The "on the loop"
row runs the same handler without an executor (one core, no transfer costs).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from common import machine  # noqa: E402

import genstage_nb as gs  # noqa: E402

WORK = 2000
MAX_DEMAND = 1000


def crunch(events: list) -> list:
    out = []
    for e in events:
        acc = e
        for i in range(WORK):
            acc = (acc * 31 + i) % 1_000_003
        out.append(acc)
    return out


def run_once(n: int, executor, workers: int) -> tuple[float, int]:
    p = gs.Pipeline(metrics_interval=None, slow_handler=None)
    options = {} if executor is None else {"executor": executor, "concurrency": 3 * workers}
    work = p.add(gs.producer_consumer(crunch, **options), name="work")
    result = []
    p.link(p.add(gs.from_iterable(range(n)), name="numbers"), work, max_demand=MAX_DEMAND)
    p.link(work, p.add(gs.consumer(lambda events: result.append(sum(events))), name="sum"))
    start = time.perf_counter()
    p.run_sync()
    return time.perf_counter() - start, sum(result)


def median_rate(n: int, repeat: int, executor, workers: int, expected: int | None) -> float:
    times = []
    for _ in range(repeat):
        seconds, total = run_once(n, executor, workers)
        if expected is not None and total != expected:
            raise SystemExit(f"wrong result: {total} != {expected}")
        times.append(seconds)
    return n / statistics.median(times)


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--work", type=int, default=WORK)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-dask", action="store_true")
    args = parser.parse_args()
    WORK = args.work
    n = args.events
    expected = sum(crunch(list(range(n))))
    rows = []
    loop = median_rate(n, args.repeat, None, 1, expected)
    rows.append(("on the loop (no executor)", loop, None))
    for workers in (1, 2):
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            pool.submit(crunch, [0]).result()  # workers up before timing
            rows.append(
                (
                    f"process pool, {workers} worker(s)",
                    median_rate(n, args.repeat, pool, workers, expected),
                    workers,
                )
            )
    if not args.no_dask:
        try:
            from genstage_nb.executors import local_cluster
        except ImportError:
            local_cluster = None
        if local_cluster is not None:
            for workers in (1, 2):
                client = local_cluster(n_workers=workers, threads_per_worker=1)
                try:
                    client.submit(crunch, [0], pure=False).result()
                    rows.append(
                        (
                            f"Dask LocalCluster, {workers} worker(s)",
                            median_rate(n, args.repeat, client, workers, expected),
                            workers,
                        )
                    )
                finally:
                    client.close()
                    client.cluster.close()

    print(f"# W3: {n:,} events x {WORK} multiply-adds, median of {args.repeat}")
    print(f"# {machine()}")
    print(f"{'run':38} {'events/s':>10} {'vs loop':>8} {'vs 1 worker':>12}")
    one = {}
    for label, rate, workers in rows:
        kind = label.split(",")[0]
        if workers == 1:
            one[kind] = rate
        speedup = f"{rate / one[kind]:.2f}x" if workers and kind in one else ""
        print(f"{label:38} {rate:10,.0f} {rate / loop:7.2f}x {speedup:>12}")


if __name__ == "__main__":
    main()
