"""Named regressions for the trust defects: each reproduces a case that lost, duplicated
or reordered events, hung, swallowed a failure or accepted bad input, on both backends."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading

import anyio
import pytest

import genstage_nb as gs
from genstage_nb.stalls import diagnose

pytestmark = pytest.mark.anyio


def collector(name, seen):
    return gs.consumer(seen.extend, name=name)


async def run_bounded(p, seconds=5.0):
    with anyio.fail_after(seconds):
        await p.run()


# 1. A dispatcher instance is a template: each run works on a fresh one.


@pytest.mark.parametrize("dispatcher", [gs.DemandDispatcher, gs.BroadcastDispatcher])
async def test_a_dispatcher_instance_serves_two_pipelines_one_after_the_other(dispatcher):
    template = dispatcher()
    for _ in range(2):
        p = gs.Pipeline()
        src = p.add(gs.from_iterable(range(1000), dispatcher=template), name="src")
        a, b = [], []
        p.link(src, p.add(collector("a", a)), max_demand=10)
        p.link(src, p.add(collector("b", b)), max_demand=10)
        await run_bounded(p)
        expected = 1000 if dispatcher is gs.DemandDispatcher else 2000
        assert len(a) + len(b) == expected
        gs.check_balance(p)
    assert template.fresh() is not template


async def test_check_balance_catches_events_sent_outside_the_run():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(10)), name="src")
    p.link(src, p.add(gs.consumer(len), name="sink"))
    await run_bounded(p)
    counters = p._procs["src"].counters  # as if 5 more were sent to a stage of another run
    counters.made += 5
    counters.accepted += 5
    counters.events_out += 5
    with pytest.raises(AssertionError, match="went to stages outside this run"):
        gs.check_balance(p)


# 2. run() while start() runs it.


async def test_run_while_started_is_refused_and_nothing_is_taken_twice():
    p = gs.Pipeline()
    seen = []
    src = p.add(gs.from_iterable(range(20_000)), name="src")
    p.link(src, p.add(collector("sink", seen)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        while not p.running:  # (trio may start the task later)
            await anyio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            await p.run()
    assert seen == list(range(20_000))


def test_run_while_started_in_the_background_is_refused():
    async def cell():
        p = gs.Pipeline()
        seen = []
        p.link(p.add(gs.from_iterable(range(20_000)), name="src"), p.add(collector("sink", seen)))
        p.start()
        with pytest.raises(RuntimeError, match="pipeline: already running"):
            await p.run()
        await p.wait()
        return seen

    assert asyncio.run(cell()) == list(range(20_000))


# 3. and 4. Order behind a buffer.


async def test_order_holds_within_a_partition_with_discards():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(300)), name="src")
    hash_ = lambda e: None if e % 5 == 0 else e % 2  # noqa: E731
    pc = p.add(
        gs.producer_consumer(
            lambda ev: ev, dispatcher=gs.PartitionDispatcher(partitions=2, hash=hash_)
        ),
        name="pc",
    )
    p.link(src, pc, max_demand=100)
    outs = [[], []]
    for i in range(2):
        p.link(pc, p.add(collector(f"c{i}", outs[i])), max_demand=1, min_demand=0, partition=i)
    await run_bounded(p)
    for i in range(2):
        assert outs[i] == [e for e in range(300) if e % 5 and e % 2 == i]
    gs.check_balance(p)


class Triple(gs.Producer):
    """Returns three times the demand (the rest is buffered)."""

    def __init__(self, n, **options):
        super().__init__(**options)
        self.limit = n

    def init(self):
        self.n = 0

    def handle_demand(self, demand):
        events = list(range(self.n, min(self.n + 3 * demand, self.limit)))
        self.n += len(events)
        if self.n >= self.limit:
            self.finish()
        return events


@pytest.mark.parametrize("buffer_size", [None, 10_000, 100_000])
async def test_order_holds_on_a_broadcast_link_beside_a_selector(buffer_size):
    options = {} if buffer_size is None else {"buffer_size": buffer_size}
    p = gs.Pipeline()
    src = p.add(Triple(300, dispatcher=gs.BroadcastDispatcher(), **options), name="src")
    plain, picked = [], []
    p.link(src, p.add(collector("plain", plain)), max_demand=10)
    p.link(src, p.add(collector("picked", picked)), max_demand=3, selector=lambda e: e % 3 == 0)
    await run_bounded(p)
    assert plain == list(range(300))
    assert picked == list(range(0, 300, 3))


async def test_a_small_broadcast_buffer_keeps_order_and_counts_its_drops():
    p = gs.Pipeline()
    src = p.add(Triple(300, dispatcher=gs.BroadcastDispatcher(), buffer_size=5), name="src")
    plain = []
    p.link(src, p.add(collector("plain", plain)), max_demand=10)
    await run_bounded(p)
    assert plain == sorted(plain) and len(set(plain)) == len(plain)
    assert len(plain) + p.metrics.totals().loc["src", "dropped"] == 300
    gs.check_balance(p)


# 5. Restarts that hung.


class FailOnce(gs.ProducerConsumer):
    def __init__(self, **options):
        super().__init__(**options)
        self.failed = False

    async def handle_events(self, events):
        await anyio.sleep(0)
        if not self.failed:
            self.failed = True
            raise RuntimeError("once")
        return events


@pytest.mark.parametrize("concurrency", [2, 4])
async def test_a_concurrent_stage_restarted_on_its_only_batch_ends(concurrency):
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(50)), name="src")
    pc = p.add(FailOnce(concurrency=concurrency, restart="permanent"), name="pc")
    p.link(src, pc, max_demand=100)
    p.link(pc, p.add(gs.consumer(len), name="sink"))
    await run_bounded(p)
    assert p.status == {"src": "done", "pc": "done", "sink": "done"}
    assert len(p.failures["pc"][0].events) == 50
    gs.check_balance(p)


class HookFailsOnce(gs.Consumer):
    def __init__(self, hook, **options):
        super().__init__(**options)
        self.hook = hook
        self.failed = False
        self.seen = []

    def _maybe_fail(self, hook):
        if hook == self.hook and not self.failed:
            self.failed = True
            raise RuntimeError(f"{hook} once")

    def handle_subscribe(self, subscription):
        self._maybe_fail("handle_subscribe")

    def handle_cancel(self, subscription, reason):
        self._maybe_fail("handle_cancel")

    def handle_events(self, events):
        self.seen.extend(events)


@pytest.mark.parametrize("hook", ["handle_subscribe", "handle_cancel"])
async def test_a_consumer_restarted_after_its_subscription_hook_fails_goes_on(hook):
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(50)), name="src")
    sink = p.add(HookFailsOnce(hook, restart="permanent"), name="sink")
    p.link(src, sink)
    await run_bounded(p)
    assert sink.seen == list(range(50))
    assert p.failures["sink"][0].hook == hook
    gs.check_balance(p)


class InitFails(gs.Consumer):
    def init(self):
        raise RuntimeError("init")

    def handle_events(self, events):
        pass


async def test_continue_with_a_consumer_whose_init_fails_ends():
    p = gs.Pipeline(on_failure="continue")
    p.link(p.add(gs.from_iterable(range(50)), name="src"), p.add(InitFails(), name="sink"))
    with anyio.fail_after(5), pytest.raises(gs.PipelineError, match="init"):
        await p.run()
    assert p.status["src"] == "done"


# 6. A second failure while stopping.


class FailAt(gs.Consumer):
    def __init__(self, at, **options):
        super().__init__(**options)
        self.at = at

    def handle_events(self, events):
        if self.at in events:
            raise RuntimeError(f"{self.name} at {self.at}")


async def test_a_second_failure_while_stopping_is_recorded():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(1000), dispatcher=gs.BroadcastDispatcher()), name="src")
    p.link(src, p.add(FailAt(65), name="first"), max_demand=32)
    p.link(src, p.add(FailAt(131), name="second"), max_demand=32)
    with anyio.fail_after(5), pytest.raises(gs.PipelineError) as caught:
        await p.run()
    assert "first" in p.failures
    assert set(caught.value.failures) <= set(p.failures)
    gs.check_balance(p)


async def test_two_stages_failing_on_one_event_raise_a_pipeline_error():
    for _ in range(10):
        p = gs.Pipeline()
        src = p.add(gs.from_iterable(range(100), dispatcher=gs.BroadcastDispatcher()), name="src")
        p.link(src, p.add(FailAt(7), name="a"), max_demand=5)
        p.link(src, p.add(FailAt(7), name="b"), max_demand=5)
        with anyio.fail_after(5), pytest.raises(gs.PipelineError):
            await p.run()
        gs.check_balance(p)


# 7. An async hook that never awaits.


def test_an_async_hook_that_never_awaits_leaves_the_loop_to_others():
    async def double(e):
        return 2 * e

    async def cell():
        p = gs.Pipeline()
        p.link(
            p.add(gs.from_iterable(itertools.count()), name="src"),
            m := p.add(gs.map(double, concurrency=8), name="double"),
        )
        p.link(m, p.add(gs.consumer(len), name="sink"))
        p.start()
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0)  # other tasks get their turn
            ticks += 1
        await p.stop()
        return ticks, p.warnings

    ticks, warnings = asyncio.run(cell())
    assert ticks == 5
    assert not [w for w in warnings if isinstance(w, gs.SlowHandler)]


# 8. stop() from another thread, and a nan timeout.


async def test_stop_from_another_thread_stops_the_run():
    p = gs.Pipeline()
    p.link(
        p.add(gs.from_iterable(itertools.count()), name="src"), p.add(gs.consumer(len), name="sink")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.sleep(0.01)
        thread = threading.Thread(target=p.stop, kwargs={"timeout": 1})
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
        with anyio.fail_after(5):
            await p.stop(timeout=1)
    assert p.status == {"src": "done", "sink": "done"}
    assert not p.stopping


def test_stop_with_a_nan_timeout_is_refused():
    with pytest.raises(ValueError, match="got nan"):
        gs.Pipeline().stop(timeout=float("nan"))


# 9. and 10. Streams during a run.


async def test_a_stream_opened_during_a_run_gets_events_and_leaves_at_once():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(itertools.count()), name="src")
    double = p.add(gs.producer_consumer(lambda evs: [2 * e for e in evs]), name="double")
    p.link(src, double)
    p.link(double, p.add(gs.consumer(len), name="sink"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.sleep(0.01)
        for _ in range(50):
            got = []
            with anyio.fail_after(5):
                async with p.stream("double", max_demand=5) as events:
                    async for e in events:
                        got.append(e)
                        if len(got) == 3:
                            break
            assert len(got) == 3 and got == sorted(got)
        for _ in range(20):
            if len(p.stages) == 3:
                break
            await anyio.sleep(0.01)
        assert len(p.stages) == 3  # every closed stream has left the graph
        p.stop()
    gs.check_balance(p)


# 11. Silent hangs.


async def test_run_refuses_a_consumer_without_producer():
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable([1]), name="src"), p.add(gs.consumer(len), name="sink"))
    p.add(gs.consumer(len), name="orphan")
    with pytest.raises(ValueError, match="'orphan' \\(consumer\\) has no producer"):
        await p.run()


class AsksThree(gs.Consumer):
    def handle_subscribe(self, subscription):
        subscription.ask(3)
        return "manual"

    def handle_events(self, events):
        pass


async def test_a_manual_consumer_that_stops_asking_gets_a_stall_notice_that_clears():
    p = gs.Pipeline(stall_after=0.05)
    p.link(p.add(gs.from_iterable(range(100)), name="src"), p.add(AsksThree(), name="m"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(5):
            while p._stall_watch is None:
                await anyio.sleep(0)
            await p._stall_watch.seen.wait()
        stall = p.warnings[-1]
        assert stall.stage == "m" and "manual demand" in str(stall) and stall.active
        p.stop()
    assert not stall.active and "cleared" in str(stall)


async def test_a_consumer_left_without_producer_is_named():
    p = gs.Pipeline(stall_after=0.05)
    sub = p.link(
        p.add(gs.from_iterable(itertools.count()), name="src"), p.add(gs.consumer(len), name="c")
    )
    p.link(
        p.add(gs.from_iterable(itertools.count()), name="src2"), p.add(gs.consumer(len), name="c2")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.sleep(0.01)
        p.unlink(sub)
        with anyio.fail_after(5):
            await anyio.sleep(0.02)
            stall = None
            while stall is None:
                await anyio.sleep(0.01)
                stall = diagnose(p)
        p.stop()
    assert "no consumer" in stall.reason or "no producer" in stall.reason


# 12. A buffer that keeps growing.


async def test_a_growing_buffer_is_logged_once_and_explained(caplog):
    async def slow(events):
        await anyio.sleep(0.001)

    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(1000)), name="src")
    fan = p.add(gs.producer_consumer(lambda evs: [e for e in evs for _ in range(1000)]), name="fan")
    p.link(src, fan)
    p.link(fan, p.add(gs.consumer(slow), name="sink"), max_demand=100)
    with caplog.at_level(logging.WARNING, logger="genstage_nb"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            with anyio.fail_after(5):
                while not fan._process.buffer_warned:
                    await anyio.sleep(0.01)
            advice = " ".join(p.explain().advice)
            p.stop(timeout=0)
    grew = [r for r in caplog.records if "holds" in r.getMessage() and "'fan'" in r.getMessage()]
    assert len(grew) == 1
    assert "buffer_size=" in advice and "'fan'" in advice


# 13. Resume repeats a batch hook's batch, and says so; per-event hooks go on.


async def test_resume_of_gs_map_goes_on_from_the_failed_event():
    calls, failing = [], [True]

    async def f(e):
        calls.append(e)
        if e == 3 and failing[0]:
            raise ValueError("bad")
        return e

    p = gs.Pipeline(on_failure="pause")
    out = []
    m = p.add(gs.map(f), name="m")
    p.link(p.add(gs.from_iterable(range(8)), name="src"), m, max_demand=4)
    p.link(m, p.add(collector("sink", out)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(5):
            failure = await p.wait_paused()
        assert failure.events == [3]
        failing[0] = False
        p.resume("m")
    assert calls == [0, 1, 2, 3, 3, 4, 5, 6, 7]
    assert out == list(range(8))


def test_the_pause_notice_says_a_batch_hook_runs_its_whole_batch_again():
    from genstage_nb.notebook.notices import describe

    p = gs.Pipeline()
    p.add(gs.consumer(len), name="count")
    failure = gs.Failure("count", ValueError("bad"), [1, 2, 3, 4], hook="handle_events")
    text = describe(p, "count", failure, traceback=False)
    assert "whole batch of 4 events" in text and "done again" in text


# 14. Warnings that lied.


async def test_the_watchdog_does_not_blame_a_paused_stage_for_what_a_pause_listener_does():
    import sys

    from genstage_nb.watchdog import blocking_stage

    found = []
    p = gs.Pipeline(on_failure="pause")
    # A listener (the dashboard draws here) runs in the paused stage's task.
    p._pause_listeners.append(lambda *_: found.append(blocking_stage(sys._getframe())))
    p.link(p.add(gs.from_iterable([1]), name="src"), p.add(FailAt(1), name="sink"))

    async def run():
        with pytest.raises(gs.PipelineError):
            await p.run()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(5):
            await p.wait_paused()
        p.stop()
    assert found == [None]


def test_a_pause_notice_shows_once_however_often_it_is_told():
    from genstage_nb.notebook.notices import PauseNotices

    class Shell:
        class events:
            @staticmethod
            def register(*_):
                pass

    notices = PauseNotices(Shell())
    shown = []
    notices._show = shown.append
    p = gs.Pipeline()
    p.add(gs.consumer(len), name="count")
    failure = gs.Failure("count", ValueError("bad"), [1], hook="handle_events")
    notices.cell_running, notices.cell_context = True, __import__("contextvars").copy_context()
    notices.on_pause(p, "count", failure)
    notices.on_pause(p, "count", failure)
    assert len(shown) == 1


# 15. Bad input (the errors.md rows test the messages).


def test_retry_refuses_nan_and_interrupts():
    with pytest.raises(ValueError):
        gs.Retry(backoff=float("nan"))
    with pytest.raises(ValueError):
        gs.Retry(max_backoff=float("nan"))
    with pytest.raises(TypeError):
        gs.Retry(on=KeyboardInterrupt)


# Found by the generated pipelines.


async def test_buffered_events_go_when_a_broadcast_s_slowest_consumer_leaves():
    p = gs.Pipeline()
    src = p.add(Triple(300, dispatcher=gs.BroadcastDispatcher(), demand="accumulate"), name="src")
    seen = []
    p.link(src, p.add(collector("sink", seen)), max_demand=50)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(5):
            async with p.stream(src, max_demand=1) as events:
                src.demand_mode = "forward"
                async for _ in events:
                    break  # the slowest consumer leaves, with events buffered for it
    assert seen == list(range(300))
    gs.check_balance(p)


class FailsFirstDemand(gs.Producer):
    def init(self):
        self.n = getattr(self, "n", 0)
        self.failed = getattr(self, "failed", False)

    def handle_demand(self, demand):
        if not self.failed:
            self.failed = True
            raise RuntimeError("first demand")
        events = list(range(self.n, min(self.n + demand, 40)))
        self.n += len(events)
        if self.n >= 40:
            self.finish()
        return events


async def test_accumulated_demand_survives_a_failure_while_it_is_released():
    p = gs.Pipeline()
    src = p.add(FailsFirstDemand(demand="accumulate", restart="permanent"), name="src")
    a, b = [], []
    p.link(src, p.add(collector("a", a)), max_demand=3)
    p.link(src, p.add(collector("b", b)), max_demand=3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.sleep(0.01)
        src.demand_mode = "forward"
    assert sorted(a + b) == list(range(40))
    gs.check_balance(p)


class StopsAndFailsOnCancel(gs.ProducerConsumer):
    """A stage with work on an executor whose handle_cancel stops the pipeline at once
    (timeout 0) and then raises: the failure meets the stop's cancellation."""

    def __init__(self, pipeline, **options):
        super().__init__(**options)
        self.pipeline = pipeline

    def handle_events(self, events):
        return events

    def handle_cancel(self, subscription, reason):
        self.pipeline.stop(timeout=0)
        raise RuntimeError("cancel hook")


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_a_failure_as_the_stop_cancels_a_stage_with_workers_is_its_own(concurrency):
    """Found by the generated pipelines: a hook of a stage with workers (an executor)
    failed just as a stop's timeout cancelled it; the failure and the cancellation came
    out of the stage's task group together and run() blamed '<pipeline runtime>'."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        for _ in range(5):
            p = gs.Pipeline()
            src = p.add(gs.from_iterable(range(50)), name="src")
            mid = StopsAndFailsOnCancel(
                p, executor=pool, concurrency=concurrency, restart="permanent", name="mid"
            )
            p.link(src, p.add(mid), max_demand=5)
            p.link(mid, p.add(gs.consumer(len), name="sink"), max_demand=5)
            try:
                await run_bounded(p)
            except gs.PipelineError as error:  # (failed for good when cancelled with it)
                assert set(error.failures) == {"mid"}
            assert [type(r.exception) for r in p.failures["mid"]] == [RuntimeError]
            gs.check_balance(p)


class FailsTwoBatchesAtOnce(gs.ProducerConsumer):
    """On an executor with concurrency 2: the first two batches are in flight together
    (a barrier); the first raises, the second raises once the stage has restarted (its
    init ran again); every later call succeeds. Counts calls per batch."""

    def __init__(self, **options):
        super().__init__(**options)
        self.calls: dict = {}
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(2, timeout=5)
        self.restarted = threading.Event()
        self.inits = 0

    def init(self):
        self.inits += 1
        if self.inits > 1:
            self.restarted.set()

    def handle_events(self, events):
        with self.lock:
            n = self.calls[events[0]] = self.calls.get(events[0], 0) + 1
            which = len(self.calls) if n == 1 else 0
        if which in (1, 2):
            self.barrier.wait()
            if which == 2:
                self.restarted.wait(5)
            raise RuntimeError(f"batch {events[0]}")
        return events


async def test_a_restart_waits_for_the_calls_in_flight_on_its_executor():
    """Found by the generated pipelines: a stage on an executor restarted while another
    call was in flight sent that batch again: its function ran twice on it, and the
    first call's failure was never recorded."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        p = gs.Pipeline()
        src = p.add(gs.from_iterable(range(40)), name="src")
        mid = p.add(
            FailsTwoBatchesAtOnce(executor=pool, concurrency=2, restart="permanent"), name="mid"
        )
        seen = []
        p.link(src, mid, max_demand=4, min_demand=0)
        p.link(mid, p.add(collector("sink", seen)), max_demand=4)
        await run_bounded(p)
    failed = [r.events for r in p.failures["mid"]]
    assert sorted(failed) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert set(mid.calls.values()) == {1}  # every batch handled once
    assert seen == list(range(8, 40))
    gs.check_balance(p)
