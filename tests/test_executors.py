"""Handlers on thread pools, process pools and a Dask LocalCluster (executor=, concurrency=)."""

from __future__ import annotations

import concurrent.futures
import sys
import threading

import anyio
import pytest
from helpers import Counter

import genstage_nb as gs

pytestmark = pytest.mark.anyio


# Handlers live at module level: a process pool or a Dask worker imports them.


def square(events):
    return [e * e for e in events]


def total(events):
    return sum(events)


def fail_on_13(events):
    if 13 in events:
        raise ZeroDivisionError("13 is unlucky")
    return [e + 1 for e in events]


def chain(p, handler, *, n=1000, max_demand=50, kind="producer_consumer", **options):
    src = p.add(gs.from_iterable(range(n)), name="numbers")
    wrap = gs.producer_consumer if kind == "producer_consumer" else gs.consumer
    remote = p.add(wrap(handler, **options), name="remote")
    p.link(src, remote, max_demand=max_demand)
    out: list = []
    if kind == "producer_consumer":
        p.link(remote, p.add(gs.consumer(out.extend), name="sink"))
    return out


@pytest.fixture(scope="module")
def threads():
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        yield pool


@pytest.fixture(scope="module")
def processes():
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        yield pool


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_thread_pool_keeps_results_in_order(threads, concurrency):
    p = gs.Pipeline()
    out = chain(p, square, executor=threads, concurrency=concurrency, max_demand=40)
    await p.run()
    assert out == [e * e for e in range(1000)]
    gs.check_balance(p)
    assert p.metrics.totals().loc["remote", "events_in"] == 1000


async def test_a_process_pool_runs_the_handler_in_other_processes(processes):
    p = gs.Pipeline()
    out = chain(p, square, executor=processes, concurrency=2, n=5000, max_demand=500)
    await p.run()
    assert out == [e * e for e in range(5000)]
    gs.check_balance(p)


async def test_a_consumer_on_a_process_pool():
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        p = gs.Pipeline()
        chain(p, total, kind="consumer", executor=pool, concurrency=2)
        await p.run()
    assert p.status["remote"] == "done"
    assert p.metrics.totals().loc["remote", "events_in"] == 1000


class InFlight:
    """Watches a thread-pool handler: events held by the stage at each call, and
    batches running at once."""

    def __init__(self, source):
        self.source = source
        self.lock = threading.Lock()
        self.handled = 0
        self.running = 0
        self.most_running = 0
        self.held: list[int] = []
        self.both_running = threading.Barrier(2, timeout=30)

    def __call__(self, events):
        with self.lock:
            self.held.append(self.source.n - self.handled)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        if len(self.held) <= 2:
            self.both_running.wait()  # the first two batches run at the same time
        with self.lock:
            self.running -= 1
            self.handled += len(events)
        return events


async def test_demand_bounds_the_events_in_flight(threads):
    p = gs.Pipeline()
    source = Counter(limit=2000)
    watch = InFlight(source)
    remote = p.add(gs.producer_consumer(watch, executor=threads, concurrency=2), name="remote")
    out: list = []
    p.link(p.add(source, name="numbers"), remote, max_demand=10, min_demand=5)
    p.link(remote, p.add(gs.consumer(out.extend), name="sink"))
    await p.run()
    assert out == list(range(2000))
    assert watch.most_running == 2
    # max_demand, plus two batches of max_demand - min_demand in flight.
    assert max(watch.held) <= 10 + 2 * 5


async def test_the_stage_answers_calls_while_a_batch_runs(threads):
    release = threading.Event()
    started = threading.Event()

    def slow(events):
        started.set()
        assert release.wait(30)
        return events

    class Remote(gs.ProducerConsumer):
        def handle_call(self, request):
            return f"pong {request}"

    p = gs.Pipeline()
    remote = p.add(Remote(executor=threads), name="remote")
    remote.handle_events = slow
    p.link(p.add(gs.from_iterable(range(10)), name="numbers"), remote)
    out: list = []
    p.link(remote, p.add(gs.consumer(out.extend), name="sink"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.to_thread.run_sync(started.wait, 30)
        assert await remote.call("ping") == "pong ping"
        release.set()
    assert out == list(range(10))


async def test_a_remote_failure_fails_the_stage_with_the_remote_traceback(processes):
    p = gs.Pipeline()
    chain(p, fail_on_13, executor=processes, concurrency=2, n=100, max_demand=10)
    with pytest.raises(
        gs.PipelineError, match="stage 'remote' failed: ZeroDivisionError: 13 is unlucky"
    ):
        await p.run()
    (failure,) = p.failures["remote"]
    assert 13 in failure.events and failure.hook == "handle_events"
    assert "fail_on_13" in str(failure.exception.__cause__)  # the worker's traceback
    gs.check_balance(p)


async def test_a_restarted_stage_loses_only_the_failed_batch(threads):
    p = gs.Pipeline()
    out = chain(
        p, fail_on_13, executor=threads, concurrency=3, n=100, max_demand=10, restart="transient"
    )
    await p.run()
    (failure,) = p.failures["remote"]
    assert failure.restarted
    lost = set(failure.events)
    assert out == [e + 1 for e in range(100) if e not in lost]
    gs.check_balance(p)


async def test_stop_while_batches_are_in_flight_accounts_for_them(threads):
    release = threading.Event()

    def stuck(events):
        release.wait(30)
        return events

    p = gs.Pipeline()
    remote = p.add(gs.producer_consumer(stuck, executor=threads, concurrency=2), name="remote")
    p.link(p.add(Counter(), name="numbers"), remote, max_demand=10)
    p.link(remote, p.add(gs.consumer(lambda events: None), name="sink"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        while not remote._process._sent:  # a batch is at the executor
            await anyio.sleep(0)
        await p.stop(timeout=0)
    release.set()
    assert not p.running
    gs.check_balance(p)


def test_an_unpicklable_handler_for_a_process_pool_is_refused_before_the_run(processes):
    p = gs.Pipeline()
    stage = gs.producer_consumer(lambda events: events, name="lambda", executor=processes)
    with pytest.raises(
        TypeError, match="stage 'lambda': handle_events cannot be sent to a process pool"
    ):
        p.add(stage)
    assert "lambda" not in p.stages


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "pool"}, "executor must be a concurrent.futures.Executor"),
        ({"executor": None, "concurrency": 0}, "concurrency must be an int >= 1"),
        ({"concurrency": True}, "concurrency must be an int >= 1"),
    ],
)
def test_bad_executor_options_name_the_stage(options, message):
    with pytest.raises((TypeError, ValueError), match=f"stage 'square': {message}"):
        gs.producer_consumer(square, **options)


def test_producers_take_no_executor(threads):
    with pytest.raises(TypeError, match="unknown option 'executor' for a producer"):
        gs.from_iterable(range(3), executor=threads)


# -- Dask -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    import cloudpickle

    # The workers cannot import this test module: send its functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from genstage_nb.executors import local_cluster

    client = local_cluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB")
    assert len(client.scheduler_info()["workers"]) == 2
    assert isinstance(client, distributed.Client)
    yield client
    client.close()
    client.cluster.close()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_dask_results_in_order_and_bounded(dask_client):
    p = gs.Pipeline()
    out = chain(p, square, executor=dask_client, concurrency=4, n=3000, max_demand=100)
    await p.run()
    assert out == [e * e for e in range(3000)]
    gs.check_balance(p)
    from genstage_nb.executors import dask_dashboards

    assert dask_dashboards(p) == {"remote": dask_client.dashboard_link}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dask_failure_names_the_stage(dask_client):
    p = gs.Pipeline()
    chain(p, fail_on_13, executor=dask_client, concurrency=2, n=50, max_demand=10)
    with pytest.raises(
        gs.PipelineError, match="stage 'remote' failed: ZeroDivisionError: 13 is unlucky"
    ):
        await p.run()
    assert 13 in p.failures["remote"][0].events
    gs.check_balance(p)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dask_dashboard_link_is_shown_beside_ours(dask_client):
    p = gs.Pipeline()
    chain(p, square, executor=dask_client, n=10)
    d = p.dashboard()
    assert dask_client.dashboard_link in d.warnings.value
    d.close()


def test_local_cluster_listens_on_this_machine_only(dask_client):
    scheduler = dask_client.cluster.scheduler
    assert scheduler.address.startswith("tcp://127.0.0.1:")
    bound = [sock.getsockname()[0] for sock in scheduler.http_server._sockets.values()]
    assert bound and set(bound) == {"127.0.0.1"}  # the dashboard, not every interface
    assert dask_client.dashboard_link.startswith("http://127.0.0.1:")
    workers = dask_client.scheduler_info()["workers"]
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)


def test_local_cluster_keywords_override_the_loopback_defaults(monkeypatch):
    distributed = pytest.importorskip("distributed")
    seen = {}

    class Cluster:
        def __init__(self, **options):
            seen.update(options)

    monkeypatch.setattr(distributed, "LocalCluster", Cluster)
    monkeypatch.setattr(distributed, "Client", lambda cluster: cluster)
    from genstage_nb.executors import local_cluster

    local_cluster(host="0.0.0.0", dashboard_address=":8787")
    assert (seen["host"], seen["dashboard_address"]) == ("0.0.0.0", ":8787")
    local_cluster()
    assert (seen["host"], seen["dashboard_address"]) == ("127.0.0.1", "127.0.0.1:0")
