"""Rate limits, retries and batchers, on asyncio and trio."""

from __future__ import annotations

import itertools
import time

import anyio
import pytest
from helpers import Forwarder

import genstage_nb as gs
from genstage_nb.core.policies import RateLimit

pytestmark = pytest.mark.anyio

# -- rate_limit ------------------------------------------------------------------------


def test_the_window_slides():
    limit = RateLimit(2, 1.0)
    assert limit.allow(0.0, 1) == 1
    assert limit.allow(0.6, 5) == 1
    assert limit.allow(0.99, 1) == 0  # two in (-0.01, 0.99]
    assert limit.next_free(0.99) == 1.0
    assert limit.allow(1.0, 5) == 1  # the first left the window: one more, not two
    assert limit.allow(1.6, 5) == 1


async def test_at_most_n_events_leave_in_any_window_and_none_is_lost():
    stamps = []

    class Stamp(gs.Consumer):
        def handle_events(self, events):
            now = time.perf_counter()
            stamps.extend((now, e) for e in events)

    p = gs.Pipeline(metrics_interval=0.02)
    src = p.add(gs.from_iterable(range(60), rate_limit=(10, 0.05)), name="src")
    p.link(src, p.add(Stamp(name="sink")), max_demand=25)
    await p.run()
    assert [e for _, e in stamps] == list(range(60))  # all, in order
    times = [t for t, _ in stamps]
    for i, t in enumerate(times):  # any window of 0.05 s (less a hair for delivery jitter)
        in_window = sum(1 for u in times[: i + 1] if u > t - 0.049)
        assert in_window <= 10
    gs.check_balance(p)
    frame = p.metrics.frame()
    held_back = frame[(frame.stage == "src") & (frame.metric == "backpressured")].value
    assert held_back.max() > 0  # waiting for the window shows as back-pressured


async def test_a_producer_consumer_is_paced_too():
    got = []
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(range(30)), name="src")
    relay = p.add(gs.producer_consumer(lambda e: e, name="relay", rate_limit=(10, 0.02)))
    p.link(src, relay)
    p.link(relay, p.add(gs.consumer(got.extend, name="sink")))
    await p.run()
    assert got == list(range(30))
    gs.check_balance(p)


async def test_stop_while_events_are_held_accounts_for_them():
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(itertools.count(), rate_limit=(5, 10.0)), name="src")
    sink = p.add(Forwarder(name="sink", until=lambda b: sum(map(len, b)) >= 5))
    p.link(src, sink, max_demand=50)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            await sink.done.wait()  # five went; the window holds the rest for 10 s
        await p.stop(timeout=0)
    assert sink.events == [0, 1, 2, 3, 4]
    gs.check_balance(p)


# -- retry -------------------------------------------------------------------------------


# -- gs.RateLimit: a limiter hooks await ------------------------------------------------


class Logged(gs.RateLimit):
    """A limiter that logs the times it gave places (its own clock reads)."""

    __slots__ = ("given",)

    def __init__(self, n, seconds):
        super().__init__(n, seconds)
        self.given = []

    def allow(self, now, k):
        j = super().allow(now, k)
        self.given.extend([now] * j)
        return j


def within_the_limit(given, n, seconds):
    return all(sum(1 for u in given[: i + 1] if u > t - seconds) <= n for i, t in enumerate(given))


async def test_a_limiter_shared_by_two_stages_bounds_their_calls_together():
    limiter = Logged(3, 0.02)
    calls = []

    def call(service):
        async def one(event):
            async with limiter:
                calls.append((service, event))
            return event

        return one

    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(range(40)), name="src")
    first = p.add(gs.map(call("a"), concurrency=4, name="a"))
    second = p.add(gs.map(call("b"), concurrency=4, name="b"))
    got = []
    p.link(src, first, max_demand=5)
    p.link(first, second, max_demand=5)
    p.link(second, p.add(gs.consumer(got.extend, name="sink")))
    await p.run()
    assert got == list(range(40))
    assert len(calls) == 80 and limiter.taken == 80
    assert len(limiter.given) == 80 and within_the_limit(limiter.given, 3, 0.02)
    gs.check_balance(p)


async def test_waiters_are_served_in_order_and_a_cancelled_one_takes_no_place():
    limiter = gs.RateLimit(1, 0.01)
    order = []

    async def wait(i):
        async with limiter:
            order.append(i)

    async with anyio.create_task_group() as tg:
        await limiter.acquire()  # the window is full now
        with anyio.CancelScope() as gone:
            gone.cancel()
            await limiter.acquire()  # cancelled while waiting
        for i in range(4):
            tg.start_soon(wait, i)
            await anyio.sleep(0)  # (each joins the line before the next)
    assert order == [0, 1, 2, 3]
    assert limiter.taken == 5 and not limiter._queue


def test_threads_share_a_limiter_with_with():
    import concurrent.futures

    limiter = Logged(2, 0.01)

    def call(i):
        with limiter:
            return i

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(call, range(12))) == list(range(12))
    assert limiter.taken == 12 and within_the_limit(limiter.given, 2, 0.01)


async def test_rate_limit_takes_a_shared_limiter_for_the_events_of_several_stages():
    limiter = Logged(10, 0.02)
    p = gs.Pipeline(metrics_interval=None)
    got = []
    sink = p.add(gs.consumer(got.extend, name="sink"))
    for name in ("left", "right"):
        p.link(p.add(gs.from_iterable(range(30), rate_limit=limiter, name=name)), sink)
    await p.run()
    assert sorted(got) == sorted([*range(30), *range(30)])
    assert within_the_limit(limiter.given, 10, 0.02) and len(limiter.given) == 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1.0), "RateLimit: n must be an int >= 1"),
        ((1.5, 1.0), "RateLimit: n must be an int >= 1"),
        ((2, 0), "RateLimit: seconds must be a number > 0"),
        ((2, "1"), "RateLimit: seconds must be a number > 0"),
    ],
)
def test_a_bad_limiter_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        gs.RateLimit(*args)


def test_the_backoff_doubles_up_to_its_cap_with_jitter_within_one_backoff():
    retry = gs.Retry(attempts=6, backoff=0.5, max_backoff=3.0, jitter=False)
    assert [retry.wait(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = gs.Retry(attempts=6, backoff=0.5, max_backoff=100.0)
    for n in range(1, 5):
        base = 0.5 * 2 ** (n - 1)
        assert base <= jittered.wait(n) <= base + 0.5


class Flaky(gs.ProducerConsumer):
    def __init__(self, fails, error=ConnectionError, **options):
        super().__init__(**options)
        self.fails = fails
        self.error = error
        self.calls = 0

    def handle_events(self, events):
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error(f"call {self.calls}")
        return events


def chain(p, stage, n=10, max_demand=10):
    sink = Forwarder(name="sink")
    p.link(p.add(gs.from_iterable(range(n)), name="src"), p.add(stage), max_demand=max_demand)
    p.link(stage, p.add(sink), max_demand=max_demand)
    return sink


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_failing_call_is_made_again_with_the_same_events(asynchronous):
    class AsyncFlaky(Flaky):
        async def handle_events(self, events):
            await anyio.lowlevel.checkpoint()
            return Flaky.handle_events(self, events)

    kind = AsyncFlaky if asynchronous else Flaky
    stage = kind(2, name="flaky", retry=gs.Retry(attempts=3, backoff=0))
    p = gs.Pipeline(metrics_interval=None)
    sink = chain(p, stage, n=5, max_demand=10)
    await p.run()
    assert sink.events == list(range(5))
    assert p.failures == {}
    assert p.metrics.totals().loc["flaky", "retried"] == 2
    gs.check_balance(p)


async def test_after_the_last_attempt_the_failure_keeps_every_attempt():
    stage = Flaky(10, name="flaky", retry=gs.Retry(attempts=3, backoff=0))
    p = gs.Pipeline(metrics_interval=None)
    chain(p, stage, n=4)
    with pytest.raises(gs.PipelineError, match="call 3"):
        await p.run()
    (failure,) = p.failures["flaky"]
    assert [str(e) for e in failure.attempts] == ["call 1", "call 2", "call 3"]
    assert failure.events == [0, 1, 2, 3]
    assert p.metrics.totals().loc["flaky", "retried"] == 2
    gs.check_balance(p)


async def test_an_exception_not_in_on_fails_at_once():
    stage = Flaky(1, error=ValueError, name="flaky", retry=gs.Retry(on=(ConnectionError,)))
    p = gs.Pipeline(metrics_interval=None)
    chain(p, stage, n=4)
    with pytest.raises(gs.PipelineError, match="call 1"):
        await p.run()
    assert stage.calls == 1
    assert p.metrics.totals().loc["flaky", "retried"] == 0


async def test_a_producer_and_gs_map_retry_too():
    calls = {"demand": 0}

    def flaky_demand(demand):
        calls["demand"] += 1
        if calls["demand"] == 1:
            raise ConnectionError("first")
        return list(range(3)) if calls["demand"] == 2 else None

    seen = {}

    async def fetch(n):
        seen[n] = seen.get(n, 0) + 1
        if n == 1 and seen[n] == 1:
            raise ConnectionError("once")
        return n * 10

    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.producer(flaky_demand, name="src", retry=gs.Retry(backoff=0)))
    fetched = p.add(gs.map(fetch, concurrency=2, retry=gs.Retry(backoff=0)))
    sink = p.add(Forwarder(name="sink", until=lambda b: sum(map(len, b)) >= 3))
    p.link(src, fetched)
    p.link(fetched, sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            await sink.done.wait()
        await p.stop(timeout=0)
    assert sink.events == [0, 10, 20]
    assert seen == {0: 1, 1: 2, 2: 1}  # per event: only the failed call again
    totals = p.metrics.totals()
    assert totals.loc["src", "retried"] == 1 and totals.loc["fetch", "retried"] == 1


# -- batcher ------------------------------------------------------------------------------


async def test_the_batcher_sends_lists_of_size_and_the_rest_at_the_end():
    p = gs.Pipeline(metrics_interval=None)
    sink = chain(p, gs.batcher(4, name="lists"), n=10, max_demand=3)
    await p.run()
    assert sink.events == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    gs.check_balance(p)


async def test_a_partial_list_goes_after_the_timeout():
    class Trickle(gs.Producer):
        def handle_demand(self, demand):
            return None

        def handle_info(self, message):
            return message

    p = gs.Pipeline(metrics_interval=None)
    src = p.add(Trickle(name="src"))
    lists = p.add(gs.batcher(10, timeout=0.02, name="lists"))
    sink = p.add(Forwarder(name="sink", until=lambda b: len(b) >= 1))
    p.link(src, lists)
    p.link(lists, sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_linked, p)
        await anyio.lowlevel.checkpoint()
        src.send([1, 2, 3])  # three of ten: only the timeout sends them
        with anyio.fail_after(10):
            await sink.done.wait()
        await p.stop(timeout=1)
    assert sink.batches[0] == [[1, 2, 3]]


async def run_linked(p):
    await p.run()


async def test_stop_flushes_the_partial_list():
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(itertools.count()), name="src")
    lists = p.add(gs.batcher(7, name="lists"))
    sink = p.add(Forwarder(name="sink", until=lambda b: len(b) >= 2))
    p.link(src, lists, max_demand=5)
    p.link(lists, sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            await sink.done.wait()
        await p.stop(timeout=5)
    got = [e for batch in sink.events for e in batch]
    assert got == list(range(len(got)))  # nothing lost or doubled
    assert all(len(batch) == 7 for batch in sink.events[:-1])
    gs.check_balance(p)


def test_options_are_checked():
    with pytest.raises(ValueError, match="rate_limit must be \\(n, seconds\\)"):
        gs.from_iterable([], rate_limit=(0, 1.0), name="src")
    with pytest.raises(ValueError, match="Retry: attempts must be an int >= 1"):
        gs.Retry(attempts=0)
    with pytest.raises(TypeError, match="Retry: on must be an exception class"):
        gs.Retry(on=(ValueError, "x"))
    with pytest.raises(TypeError, match="retry must be a gs.Retry"):
        gs.consumer(print, retry=3)
    with pytest.raises(ValueError, match="batcher: size must be an int >= 1"):
        gs.batcher(0)


async def test_init_handle_info_and_a_concurrent_consumers_handle_event_are_retried():
    tries = {"init": 0, "info": 0, "event": 0}

    class Src(gs.Producer):
        def init(self):
            tries["init"] += 1
            if tries["init"] == 1:
                raise ConnectionError("not yet")

        def handle_demand(self, demand):
            return None

        def handle_info(self, message):
            tries["info"] += 1
            if tries["info"] == 1:
                raise ConnectionError("busy")
            return message

    got = []

    class Each(gs.ConcurrentConsumer):
        async def handle_event(self, event):
            tries["event"] += 1
            if tries["event"] == 1:
                raise ConnectionError("first event, first call")
            got.append(event)

    retry = gs.Retry(backoff=0)
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(Src(name="src", retry=retry))
    p.link(src, p.add(Each(name="each", retry=retry)), max_demand=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        while src._process is None or src._process.status != "running":
            await anyio.lowlevel.checkpoint()
        src.send([1, 2, 3])
        with anyio.fail_after(10):
            while len(got) < 3:
                await anyio.lowlevel.checkpoint()
        await p.stop(timeout=1)
    assert sorted(got) == [1, 2, 3]
    assert (tries["init"], tries["info"]) == (2, 2)
    totals = p.metrics.totals()
    assert totals.loc["src", "retried"] == 2 and totals.loc["each", "retried"] == 1
    assert p.failures == {}
