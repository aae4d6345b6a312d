"""Completion, cancel modes, failures, restarts, stop, start and streams (asyncio and trio)."""

from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
from helpers import Counter, Doubler, Forwarder, live_tasks, run_linking_later

import genstage_nb as gs

pytestmark = pytest.mark.anyio


async def run_and_expect_failure(p):
    with pytest.raises(gs.PipelineError):
        await p.run()


# -- completion --------------------------------------------------------------------


async def test_finish_delivers_the_whole_buffer_then_cancels_normally(anyio_backend):
    before = await live_tasks()
    producer = Counter(limit=25)
    p = gs.Pipeline()
    c = Forwarder()
    p.link(p.add(producer), p.add(c), max_demand=10, min_demand=5)
    await p.run()
    assert c.events == list(range(25))
    assert c.cancels == ["normal"]
    assert p.status == {"counter": "done", "forwarder": "done"}
    assert await live_tasks() == before


async def test_completion_cascades_through_producer_consumers():
    p = gs.Pipeline()
    src, dbl, out = p.add(gs.from_iterable(range(7))), p.add(Doubler()), p.add(Forwarder())
    p.link(src, dbl, max_demand=3)
    p.link(dbl, out, max_demand=4)
    await p.run()
    assert out.events == [x for e in range(7) for x in (e, e)]
    assert all(len(b) <= 2 for b in out.batches)  # max 4 - min 2
    assert set(p.status.values()) == {"done"}


async def test_producer_that_finishes_with_buffered_events_waits_for_demand():
    class Burst(gs.Producer):
        def handle_demand(self, demand):
            self.finish()
            return list(range(50))  # far more than asked: the rest is buffered

    p = gs.Pipeline()
    c = Forwarder()
    p.link(p.add(Burst()), p.add(c), max_demand=10)
    await p.run()
    assert c.events == list(range(50))
    assert max(len(b) for b in c.batches) <= 5


async def test_fan_in_completes_when_every_permanent_producer_has_finished():
    p = gs.Pipeline()
    a = p.add(gs.from_iterable(range(0, 5)), name="a")
    b = p.add(gs.from_iterable(range(100, 300)), name="b")
    c = p.add(Forwarder())
    p.link(a, c, max_demand=2)
    p.link(b, c, max_demand=2)
    await p.run()
    assert sorted(c.events) == list(range(0, 5)) + list(range(100, 300))


async def test_fan_out_with_demand_dispatcher_gives_each_event_to_one_consumer():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(1000)))
    consumers = [p.add(Forwarder(name=f"c{i}")) for i in range(4)]
    for c in consumers:
        p.link(src, c, max_demand=10)
    await p.run()
    seen = sorted(e for c in consumers for e in c.events)
    assert seen == list(range(1000))
    for c in consumers:
        assert c.events == sorted(c.events)


async def test_partition_dispatcher_end_to_end():
    p = gs.Pipeline()
    src = p.add(
        gs.from_iterable(
            range(100),
            dispatcher=gs.PartitionDispatcher(
                partitions=["even", "odd"], hash=lambda e: "odd" if e % 2 else "even"
            ),
        )
    )
    even, odd = p.add(Forwarder(name="even")), p.add(Forwarder(name="odd"))
    p.link(src, even, partition="even", max_demand=7)
    p.link(src, odd, partition="odd", max_demand=7)
    await p.run()
    assert even.events == list(range(0, 100, 2))
    assert odd.events == list(range(1, 100, 2))


async def test_consumer_linked_to_a_finished_producer_is_told_at_once():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable([1, 2]))
    first = p.add(Forwarder(name="first"))
    p.link(src, first)
    # Another pair of stages keeps the pipeline running.
    p.link(p.add(Counter(demand="accumulate")), p.add(Forwarder(name="other")))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        while p.status["from_iterable"] != "done":
            await anyio.sleep(0)
        late = p.add(Forwarder(name="late"))
        p.link(src, late)
        while not late.cancels:
            await anyio.sleep(0)
        assert p.status["late"] == "done"
        await p.stop(timeout=0)
    assert first.events == [1, 2]
    assert late.events == [] and late.cancels == ["normal"]


# -- cancel modes ------------------------------------------------------------------


class Boom(gs.Producer):
    """Emits ``good`` events, then raises on the next demand."""

    def __init__(self, good=3, **options):
        super().__init__(**options)
        self.good = good

    def init(self):
        self.sent = 0

    def handle_demand(self, demand):
        if self.sent >= self.good:
            raise RuntimeError("boom")
        n = min(demand, self.good - self.sent)
        events = list(range(self.sent, self.sent + n))
        self.sent += n
        return events


@pytest.mark.parametrize(
    ("cancel", "status"),
    [("permanent", "done"), ("transient", "done"), ("temporary", "running")],
)
async def test_cancel_modes_when_the_producer_fails(cancel, status):
    p = gs.Pipeline(on_failure="continue")
    boom = p.add(Boom(good=3))
    keep = p.add(Counter(limit=0, demand="accumulate"), name="other")  # keeps c linked
    c = p.add(Forwarder())
    p.link(boom, c, max_demand=1, min_demand=0, cancel=cancel)
    p.link(keep, c, cancel="temporary")
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_and_expect_failure, p)
        while p.status["boom"] != "failed":
            await anyio.sleep(0)
        while not c.cancels:
            await anyio.sleep(0)
        assert p.status["forwarder"] == status
        assert isinstance(c.cancels[0], RuntimeError)
        await p.stop(timeout=0)
    assert c.events == [0, 1, 2]


@pytest.mark.parametrize(
    ("cancel", "status"),
    [("permanent", "done"), ("transient", "running"), ("temporary", "running")],
)
async def test_cancel_modes_when_the_producer_finishes_normally(cancel, status):
    p = gs.Pipeline()
    src = p.add(gs.from_iterable([1, 2, 3]))
    c = p.add(Forwarder())
    p.link(src, c, cancel=cancel)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        while not c.cancels:
            await anyio.sleep(0)
        await anyio.sleep(0)
        assert p.status["forwarder"] == status
        assert c.cancels == ["normal"]
        # A graceful stop ends the stages that are left.
        await p.stop()
    assert p.status == {"from_iterable": "done", "forwarder": "done"}
    assert c.events == [1, 2, 3]


# -- failures and restarts -----------------------------------------------------------


async def test_a_failing_handler_fails_the_run_with_the_stage_and_batch_recorded():
    class Picky(gs.Consumer):
        def handle_events(self, events):
            if 7 in events:
                raise ValueError("no sevens")

    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(20))), p.add(Picky()), max_demand=4, min_demand=2)
    with pytest.raises(gs.PipelineError) as info:
        await p.run()
    err = info.value
    assert set(err.failures) == {"picky"}
    assert isinstance(err.failures["picky"], ValueError)
    assert isinstance(err.__cause__, ValueError)
    assert "stage 'picky' failed: ValueError: no sevens" in str(err)
    [failure] = p.failures["picky"]
    assert failure.events == [6, 7]
    assert failure.hook == "handle_events"
    assert failure.restarted is False
    assert p.status["picky"] == "failed"


async def test_failure_in_init_is_recorded(anyio_backend):
    before = await live_tasks()

    class BadInit(gs.Consumer):
        def init(self):
            raise KeyError("config")

    p = gs.Pipeline()
    p.link(p.add(Counter()), p.add(BadInit()))
    with pytest.raises(gs.PipelineError, match="bad_init"):
        await p.run()
    assert p.failures["bad_init"][0].hook == "init"
    assert await live_tasks() == before


async def test_bad_handler_result_is_a_type_error_naming_the_stage():
    p = gs.Pipeline()
    p.link(p.add(gs.producer(lambda demand: 42, name="answer")), p.add(Forwarder()))
    with pytest.raises(gs.PipelineError) as info:
        await p.run()
    exc = info.value.failures["answer"]
    assert isinstance(exc, TypeError)
    assert "stage 'answer': handle_demand must return an iterable of events" in str(exc)


async def test_bad_producer_consumer_result_is_a_type_error():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable([1]))
    bad = p.add(gs.producer_consumer(lambda events: "oops", name="bad"))
    p.link(src, bad)
    p.link(bad, p.add(Forwarder()))
    with pytest.raises(gs.PipelineError) as info:
        await p.run()
    assert isinstance(info.value.failures["bad"], TypeError)
    assert p.failures["bad"][0].events == [1]


async def test_transient_restart_runs_init_again_and_loses_only_the_failed_batch():
    class Flaky(gs.Consumer):
        def __init__(self, **options):
            super().__init__(**options)
            self.inits = 0
            self.seen = []

        def init(self):
            self.inits += 1

        def handle_events(self, events):
            if 5 in events and self.inits == 1:
                raise RuntimeError("flake")
            self.seen.extend(events)

    flaky = Flaky(restart="transient")
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(20))), p.add(flaky), max_demand=4, min_demand=2)
    await p.run()
    assert flaky.inits == 2
    [failure] = p.failures["flaky"]
    assert failure.events == [4, 5] and failure.restarted
    assert flaky.seen == [e for e in range(20) if e not in (4, 5)]
    assert p.status["flaky"] == "done"


async def test_restarted_producer_serves_the_demand_it_failed_on():
    class Shaky(gs.Producer):
        def __init__(self, **options):
            super().__init__(**options)
            self.failed = False
            self.n = 0

        def handle_demand(self, demand):
            if self.n == 6 and not self.failed:
                self.failed = True
                raise OSError("disk hiccup")
            events = list(range(self.n, min(self.n + demand, 20)))
            self.n += len(events)
            if self.n == 20:
                self.finish()
            return events

    p = gs.Pipeline()
    c = Forwarder()
    p.link(p.add(Shaky(restart="transient")), p.add(c), max_demand=3, min_demand=0)
    await p.run()
    assert c.events == list(range(20))
    [failure] = p.failures["shaky"]
    assert failure.hook == "handle_demand" and failure.events == [] and failure.restarted


async def test_restart_intensity_exceeded_fails_for_good():
    class Always(gs.Consumer):
        def handle_events(self, events):
            raise RuntimeError("always")

    p = gs.Pipeline()
    c = Always(restart="permanent", max_restarts=2, max_seconds=60)
    p.link(p.add(gs.from_iterable(range(100))), p.add(c), max_demand=2, min_demand=0)
    with pytest.raises(gs.PipelineError):
        await p.run()
    records = p.failures["always"]
    assert [f.restarted for f in records] == [True, True, False]
    assert [f.events for f in records] == [[0, 1], [2, 3], [4, 5]]
    assert p.status["always"] == "failed"


async def test_temporary_stage_is_not_restarted():
    class Once(gs.Consumer):
        def handle_events(self, events):
            raise RuntimeError("once")

    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(10))), p.add(Once()))
    with pytest.raises(gs.PipelineError):
        await p.run()
    assert [f.restarted for f in p.failures["once"]] == [False]


async def test_on_failure_continue_lets_the_rest_finish_then_raises():
    class Picky(gs.Consumer):
        def handle_events(self, events):
            raise ValueError("picky")

    p = gs.Pipeline(on_failure="continue")
    src = p.add(gs.from_iterable(range(100), demand="accumulate"))
    good = p.add(Forwarder(name="good"))
    s1 = p.link(src, good, max_demand=5)
    s2 = p.link(src, p.add(Picky()), max_demand=5)
    errors = []

    async def run():
        try:
            await p.run()
        except gs.PipelineError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        while not (s1.active and s2.active):  # both subscribed before events flow
            await anyio.sleep(0)
        src.demand_mode = "forward"
    [err] = errors
    assert set(err.failures) == {"picky"}
    # What the failed consumer held is in its failure record; the rest of its demand
    # moved to the other consumer: nothing was lost.
    [failure] = p.failures["picky"]
    assert sorted(good.events + failure.events + failure.unhandled) == list(range(100))
    assert p.status == {"from_iterable": "done", "good": "done", "picky": "failed"}


async def test_on_failure_stop_cancels_everything_promptly(anyio_backend):
    before = await live_tasks()

    class Slow(gs.Consumer):
        async def handle_events(self, events):
            await anyio.sleep_forever()

    p = gs.Pipeline()
    p.link(p.add(Counter()), p.add(Slow()))
    p.link(p.add(Boom(good=0, name="boom")), p.add(Forwarder()))
    with pytest.raises(gs.PipelineError, match="boom"):
        with anyio.fail_after(10):
            await p.run()
    assert p.status["boom"] == "failed"
    assert await live_tasks() == before


def test_pipeline_options_are_checked():
    with pytest.raises(ValueError, match="on_failure must be 'stop', 'continue' or 'pause'"):
        gs.Pipeline(on_failure="ignore")
    with pytest.raises(ValueError, match="metrics_interval must be a number of seconds > 0"):
        gs.Pipeline(metrics_interval=0)


# -- info and call -----------------------------------------------------------------


async def test_send_and_call_reach_the_stage_in_order():
    class Store(gs.Consumer):
        def init(self):
            self.infos = []

        def handle_info(self, message):
            self.infos.append(message)

        async def handle_call(self, request):
            await anyio.sleep(0)
            return (request, list(self.infos))

        def handle_events(self, events):
            pass

    s = Store()
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable([], demand="accumulate")), p.add(s))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        s.send("a")
        s.send("b")
        assert await s.call("q") == ("q", ["a", "b"])
        await p.stop(timeout=0)


async def test_call_without_handle_call_raises_to_the_caller_only():
    p = gs.Pipeline()
    c = p.add(Forwarder())
    p.link(p.add(gs.from_iterable([], demand="accumulate")), c)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with pytest.raises(NotImplementedError, match="does not define handle_call"):
            await c.call("x")
        assert p.status["forwarder"] == "running"
        await p.stop(timeout=0)


async def test_call_to_a_stopped_stage_raises():
    p = gs.Pipeline()
    c = p.add(Forwarder())
    p.link(p.add(gs.from_iterable([])), c)
    await p.run()
    with pytest.raises(RuntimeError, match="is not running"):
        await c.call("x")


async def test_send_before_the_pipeline_runs_is_delivered_when_it_runs():
    class Inbox(gs.Producer):
        def handle_info(self, message):
            self.emit([message])
            self.finish()

    p = gs.Pipeline()
    src = p.add(Inbox())
    out = p.add(Forwarder())
    p.link(src, out)
    src.send("hello")
    await p.run()
    assert out.events == ["hello"]


# -- stop and start ------------------------------------------------------------------


async def test_stop_is_graceful_and_stopping_twice_is_harmless(anyio_backend):
    before = await live_tasks()
    counter = Counter()
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: len(b) >= 3)
    dbl = p.add(Doubler())
    p.link(p.add(counter), dbl, max_demand=10)
    p.link(dbl, p.add(c), max_demand=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            await c.done.wait()
        p.stop()
        await p.stop()
        await p.stop()
    assert set(p.status.values()) == {"done"}
    # Everything the producer made was delivered: the events form one unbroken run.
    made = counter.n
    assert c.events == [x for e in range(made) for x in (e, e)]
    assert await live_tasks() == before


async def test_stop_cancels_after_the_timeout_when_stages_hang():
    class Hang(gs.Consumer):
        async def handle_events(self, events):
            await anyio.sleep_forever()

    p = gs.Pipeline()
    p.link(p.add(Counter()), p.add(Hang()))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        while p.status["hang"] != "running":
            await anyio.sleep(0)
        with anyio.fail_after(10):
            await p.stop(timeout=0.05)
    assert not p.running


async def test_stop_of_an_idle_pipeline_does_nothing():
    p = gs.Pipeline()
    await p.stop()
    assert not p.running


async def test_outer_cancellation_stops_the_pipeline_cleanly(anyio_backend):
    before = await live_tasks()
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: len(b) >= 2)
    p.link(p.add(Counter()), p.add(c))
    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            await c.done.wait()
            scope.cancel()
    assert not p.running
    assert await live_tasks() == before


async def test_run_twice_starts_fresh_runtime_state():
    p = gs.Pipeline()
    src = p.add(Counter(limit=10))
    c = p.add(Forwarder())
    p.link(src, c)
    await p.run()
    await p.run()
    assert c.events == list(range(10)) * 2


async def test_link_and_unlink_while_running():
    p = gs.Pipeline()
    counter = p.add(Counter())
    first = Forwarder(name="first", until=lambda b: len(b) >= 2)
    second = Forwarder(name="second", until=lambda b: len(b) >= 2)
    sub1 = p.link(counter, p.add(first), max_demand=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            await first.done.wait()
            p.unlink(sub1)
            p.link(counter, p.add(second), max_demand=5)
            await second.done.wait()
        assert "unlinked" in first.cancels
        assert p.status["first"] == "running"  # unlinking does not stop the consumer
        assert not p.graph.has_edge("counter", "first")
        await p.stop(timeout=0)
    seen = first.events + second.events
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_start_runs_in_the_background_of_the_running_loop():
    p = gs.Pipeline()
    c = Forwarder()
    p.link(p.add(gs.from_iterable(range(100))), p.add(c))
    assert p.start() is p
    assert p.running
    await p.wait()
    assert c.events == list(range(100))
    assert not p.running


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_start_then_stop_at_once():
    p = gs.Pipeline()
    c = Forwarder()
    p.link(p.add(Counter()), p.add(c))
    p.start()
    await p.stop()
    assert not p.running
    assert set(p.status.values()) == {"done"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_background_failure_is_kept_and_raised_by_wait(caplog, capsys):
    p = gs.Pipeline("bg")
    p.link(p.add(Boom(good=0)), p.add(Forwarder()))
    p.start()
    with pytest.raises(gs.PipelineError, match="boom"):
        await p.wait()
    assert isinstance(p.error, gs.PipelineError)
    # Said where a notebook shows it, with the stage and the traceback.
    assert "pipeline bg stopped: stage 'boom' failed: RuntimeError: boom" in capsys.readouterr().err
    assert "stage 'boom' failed in handle_demand" in caplog.text
    assert "Traceback" in caplog.text


def test_start_without_a_running_loop_says_what_to_do():
    p = gs.Pipeline()
    with pytest.raises(RuntimeError, match="needs a running asyncio event loop"):
        p.start()


def test_run_sync_on_trio():
    p = gs.Pipeline()
    c = Forwarder()
    p.link(p.add(gs.from_iterable(range(5))), p.add(c))
    p.run_sync(backend="trio")
    assert c.events == [0, 1, 2, 3, 4]


# -- streams -----------------------------------------------------------------------


async def test_stream_may_consume_10_events_out_of_demand_of_1000():
    p = gs.Pipeline()
    counter = p.add(Counter())
    events = p.stream(counter)
    got = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        async for e in events:
            got.append(e)
            if len(got) == 10:
                break
        await events.aclose()
        await p.stop(timeout=0)
    assert got == list(range(10))


async def test_stream_may_consume_300_events_out_of_demand_of_100():
    p = gs.Pipeline()
    counter = p.add(Counter())
    events = p.stream(counter, max_demand=100)
    got = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        async for e in events:
            got.append(e)
            if len(got) == 300:
                break
        await p.stop(timeout=0)
    assert got == list(range(300))
    assert max(counter.demands) <= 100


async def test_stream_ends_when_the_stage_finishes():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(5)))
    dbl = p.add(Doubler())
    p.link(src, dbl)
    async with anyio.create_task_group() as tg:
        events = p.stream(dbl, max_demand=3)
        tg.start_soon(p.run)
        got = [e async for e in events]
    assert got == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


async def test_stream_opened_while_running():
    p = gs.Pipeline()
    counter = p.add(Counter(limit=50))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_linking_later, p)
        while p.status["counter"] != "running":
            await anyio.sleep(0)
        got = [e async for e in p.stream(counter, max_demand=10)]
    assert got == list(range(50))


async def test_stream_of_a_consumer_is_an_error():
    p = gs.Pipeline()
    c = p.add(Forwarder())
    with pytest.raises(TypeError, match="'forwarder' is a consumer and emits no events"):
        p.stream(c)


async def test_stream_iterated_without_running_pipeline_says_so():
    p = gs.Pipeline()
    events = p.stream(p.add(Counter()))
    with pytest.raises(RuntimeError, match="the pipeline is not running"):
        await events.__anext__()


# -- from_iterable and wrappers --------------------------------------------------------


async def test_from_iterable_over_an_async_iterable():
    async def numbers():
        for i in range(25):
            await anyio.sleep(0)
            yield i

    p = gs.Pipeline()
    c = Forwarder()
    p.link(p.add(gs.from_iterable(numbers())), p.add(c), max_demand=10)
    await p.run()
    assert c.events == list(range(25))


async def test_an_async_source_sends_what_it_has_before_it_waits():
    gate, reached, out = anyio.Event(), anyio.Event(), []

    async def numbers():
        yield 0
        yield 1
        await gate.wait()  # (a quiet socket, say)
        yield 2

    def take(events):
        out.extend(events)
        if out == [0, 1]:
            reached.set()  # 0 and 1 came although the demand of 10 is not met

    p = gs.Pipeline(metrics_interval=None)
    p.link(p.add(gs.from_iterable(numbers())), p.add(gs.consumer(take)), max_demand=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await reached.wait()
        gate.set()
    assert out == [0, 1, 2]


async def test_a_pipeline_stopped_while_an_async_source_waits_ends():
    async def quiet():
        yield 0
        await anyio.sleep_forever()
        yield 1

    out = []
    p = gs.Pipeline(metrics_interval=None)
    p.link(p.add(gs.from_iterable(quiet())), p.add(gs.consumer(out.extend)), max_demand=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        while not out:
            await anyio.sleep(0)
        await p.stop(timeout=0)  # (its hook waits for good: the stop cancels it)
    assert out == [0] and not p.running


async def test_async_hooks_everywhere():
    class AsyncSource(gs.Producer):
        async def init(self):
            await anyio.sleep(0)
            self.n = 0

        async def handle_demand(self, demand):
            await anyio.sleep(0)
            events = list(range(self.n, min(self.n + demand, 30)))
            self.n += len(events)
            if self.n == 30:
                self.finish()
            return events

    async def double(events):
        await anyio.sleep(0)
        return [2 * e for e in events]

    seen = []

    async def collect(events):
        await anyio.sleep(0)
        seen.extend(events)

    p = gs.Pipeline()
    src = p.add(AsyncSource())
    dbl = p.add(gs.producer_consumer(double))
    p.link(src, dbl, max_demand=4)
    p.link(dbl, p.add(gs.consumer(collect)), max_demand=4)
    await p.run()
    assert seen == [2 * e for e in range(30)]


async def test_concurrent_consumer_runs_at_most_max_demand_at_once():
    class Workers(gs.ConcurrentConsumer):
        def init(self):
            self.running = 0
            self.peak = 0
            self.done = []

        async def handle_event(self, event):
            self.running += 1
            self.peak = max(self.peak, self.running)
            await anyio.sleep(0)
            await anyio.sleep(0)
            self.running -= 1
            self.done.append(event)

    w = Workers()
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(50))), p.add(w), max_demand=5, min_demand=2)
    await p.run()
    assert sorted(w.done) == list(range(50))
    assert 1 < w.peak <= 5


async def test_concurrent_consumer_failure_records_the_event():
    class Fails(gs.ConcurrentConsumer):
        async def handle_event(self, event):
            if event == 3:
                raise ValueError("three")

    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(10))), p.add(Fails()), max_demand=2)
    with pytest.raises(gs.PipelineError, match="three"):
        await p.run()
    assert p.failures["fails"][0].events == [3]


@pytest.mark.parametrize("executor", [None, "threads"])
async def test_a_failure_log_shows_the_traceback_from_the_users_hook_on(caplog, executor):
    def refuse_thirteen(events):
        if 13 in events:
            raise ValueError("13 is unlucky")

    pool = ThreadPoolExecutor(1) if executor else None
    p = gs.Pipeline()
    sink = p.add(gs.consumer(refuse_thirteen, executor=pool), name="strict")
    p.link(p.add(gs.from_iterable(range(20)), name="numbers"), sink)
    with pytest.raises(gs.PipelineError):
        await p.run()
    if pool:
        pool.shutdown()
    logged = caplog.text
    trace = logged[logged.index("Traceback") :]
    first_frame = trace.splitlines()[1]
    assert "in refuse_thirteen" in first_frame, trace
    assert "ValueError: 13 is unlucky" in trace
    # The exception itself keeps the whole traceback.
    assert "process.py" in "".join(traceback.format_exception(p.failures["strict"][0].exception))
