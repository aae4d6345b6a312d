"""on_failure="pause": a stage that fails for good pauses; resume, skip, stop.

The exactly-once property is checked the same way throughout: a chain whose producer
makes 0..N-1 once, a stage that fails on one event (once, or until its code is fixed),
and the sink's output compared with ``list(range(N))`` (every event once, in order) or,
for stages that finish events out of order, with the sorted output and no duplicates;
``gs.check_balance`` holds while the stage is paused and after the run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib

import anyio
import pytest
from helpers import settle

import genstage_nb as gs
from genstage_nb.pipeline import reset_default_pipeline
from genstage_nb.stalls import diagnose

pytestmark = pytest.mark.anyio

N = 200


class Flaky:
    """Raises on events in ``bad`` while ``broken`` (the code a user then fixes)."""

    def __init__(self, bad=(50,)):
        self.bad = set(bad)
        self.broken = True
        self.failures = 0
        self.out = []

    def check(self, events):
        if self.broken and self.bad.intersection(events):
            self.failures += 1
            raise ValueError(f"bad event in {events[:3]}...")

    def sink(self, events):
        """A consumer's handle_events: the events it handled go to ``out``."""
        self.check(events)
        self.out.extend(events)


def chain(p, stage, *, max_demand=10, n=N, pc=None):
    """src (0..n-1) -> [pc] -> stage; returns the stage's name."""
    src = p.add(gs.from_iterable(range(n)), name="src")
    before = src
    if pc is not None:
        before = p.add(pc, name="mid")
        p.link(src, before, max_demand=max_demand)
    p.add(stage, name="stage")
    p.link(before, stage, max_demand=max_demand)
    return "stage"


@contextlib.asynccontextmanager
async def running(p):
    """Run ``p`` in a task of its own meanwhile (on asyncio and trio); a failing test
    does not wait for a paused pipeline."""

    async def run():
        with contextlib.suppress(gs.PipelineError):
            await p.run()

    with anyio.fail_after(60):  # a guard: a hang fails the test instead of CI
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while not p.running:
                await anyio.lowlevel.checkpoint()
            try:
                yield
            except BaseException:
                tg.cancel_scope.cancel()
                raise


async def paused(p, name="stage"):
    failure = await p.wait_paused(name)
    assert failure is not None, "the run ended without a pause"
    await settle(p)  # the rest of the pipeline goes as far as it can
    assert p.status[name] == "paused"
    gs.check_balance(p)
    return failure


@pytest.mark.parametrize("max_demand", [1, 5, 1000])
async def test_resume_after_fix_every_event_once_in_order(max_demand):
    p = gs.Pipeline(on_failure="pause")
    flaky = Flaky()
    out = flaky.out
    chain(p, gs.consumer(flaky.sink), max_demand=max_demand, pc=gs.producer_consumer(list))
    async with running(p):
        failure = await paused(p)
        assert 50 in failure.events and failure.hook == "handle_events" and failure.paused
        assert p.paused == {"stage": failure}
        assert p.failures["stage"] == [failure]
        assert p.metrics.totals().loc["stage", "failed"] == len(failure.events)
        assert out == list(range(len(out)))  # in order, none twice, up to the failure
        # Back-pressure holds the producer: it made no more than the links can hold.
        made = p.stages["src"]._process.counters.made
        assert made <= 50 + 3 * max_demand + len(failure.events)
        assert p.running and (max_demand == 1000 or p.status["src"] == "running")
        flaky.broken = False
        p.resume("stage")
        await p.wait()
        assert out == list(range(N))
        assert p.failures == {} and p.error is None and p.paused == {}
        assert p.status == {"src": "done", "mid": "done", "stage": "done"}
        frame = gs.check_balance(p)
        assert frame.loc["stage", "failed"] == 0 and frame.loc["stage", "handled"] == N


async def test_failure_in_a_producer_consumer_keeps_its_queue_in_order():
    p = gs.Pipeline(on_failure="pause")
    flaky, out = Flaky(bad=(33,)), []

    def double(events):
        flaky.check(events)
        return [2 * e for e in events]

    src = p.add(gs.from_iterable(range(N)), name="src")
    mid = p.add(gs.producer_consumer(double), name="mid")
    # A small downstream demand: input queues in the producer-consumer behind the batch.
    sink = p.add(gs.consumer(out.extend), name="sink")
    p.link(src, mid, max_demand=40, min_demand=5)
    p.link(mid, sink, max_demand=3)
    async with running(p):
        await paused(p, "mid")
        flaky.broken = False
        p.resume(p.stages["mid"])  # a stage object works as well as its name
        await p.wait()
        assert out == [2 * e for e in range(N)]
        gs.check_balance(p)


async def test_async_hook_fails_and_resumes():
    p = gs.Pipeline(on_failure="pause")
    flaky, out = Flaky(bad=(120,)), []

    async def sink(events):
        await anyio.lowlevel.checkpoint()
        flaky.check(events)
        out.extend(events)

    chain(p, gs.consumer(sink), max_demand=7)
    async with running(p):
        await paused(p)
        flaky.broken = False
        p.resume("stage")
        await p.wait()
        assert out == list(range(N))


async def test_a_second_failure_pauses_again():
    p = gs.Pipeline(on_failure="pause")
    flaky = Flaky(bad=(50, 150))
    out = flaky.out
    chain(p, gs.consumer(flaky.sink), max_demand=5)
    async with running(p):
        first = await paused(p)
        flaky.bad = {150}  # half a fix: the first batch goes, the next bad one fails
        p.resume("stage")
        second = await p.wait_paused("stage")
        assert second is not first and 150 in second.events
        await settle(p)
        assert p.failures["stage"] == [second]
        gs.check_balance(p)
        flaky.broken = False
        p.resume("stage")
        await p.wait()
        assert out == list(range(N))


async def test_resume_with_the_failure_still_there_pauses_again():
    p = gs.Pipeline(on_failure="pause")
    flaky = Flaky()
    out = flaky.out
    chain(p, gs.consumer(flaky.sink), max_demand=5)
    async with running(p):
        await paused(p)
        p.resume("stage")  # not fixed
        await settle(p)
        failure = await paused(p)
        assert flaky.failures == 2 and len(p.failures["stage"]) == 1
        assert 50 in failure.events
        flaky.broken = False
        p.resume("stage")
        await p.wait()
        assert out == list(range(N))


async def test_skip_drops_the_batch_counts_it_and_asks_for_more():
    p = gs.Pipeline(on_failure="pause")
    flaky = Flaky()
    out = flaky.out
    chain(p, gs.consumer(flaky.sink), max_demand=5)
    async with running(p):
        failure = await paused(p)
        p.skip("stage")
        await p.wait()
        assert out == [e for e in range(N) if e not in failure.events]
        assert p.failures["stage"] == [failure]
        assert p.error is None and p.status["stage"] == "done"
        frame = gs.check_balance(p)
        assert frame.loc["stage", "failed"] == len(failure.events)


async def test_stop_while_paused_accounts_for_every_event():
    p = gs.Pipeline(on_failure="pause")
    flaky = Flaky()
    out = flaky.out
    chain(p, gs.consumer(flaky.sink), max_demand=5, pc=gs.producer_consumer(list))
    async with running(p):
        failure = await paused(p)
        await p.stop()
        assert p.status["stage"] == "failed"
        assert isinstance(p.error, gs.PipelineError)
        (record,) = p.failures["stage"]
        assert record.events == failure.events and not record.paused
        # Every event: handled, in the failure record, or unhandled in some stage.
        frame = gs.check_balance(p)
        assert frame.loc["stage", "failed"] == len(failure.events)
        assert out == list(range(len(out)))
        assert record.unhandled == list(
            range(
                len(out) + len(failure.events),
                len(out) + len(failure.events) + len(record.unhandled),
            )
        )


async def test_run_does_not_return_while_a_stage_is_paused():
    p = gs.Pipeline(on_failure="pause")
    flaky = Flaky()
    out = flaky.out
    chain(p, gs.consumer(flaky.sink), max_demand=5)
    ran = []

    async def run():
        await p.run()
        ran.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await paused(p)  # (wait_paused lets the run just started begin)
        assert not ran
        flaky.broken = False
        p.resume("stage")
    assert ran and out == list(range(N))


class Counter(gs.Producer):
    """Counts up from 0; fails in handle_demand at ``bad`` while broken."""

    def __init__(self, n, bad, **options):
        super().__init__(**options)
        self.n, self.bad, self.broken, self.inits = n, bad, True, 0

    def init(self):
        self.inits += 1
        self.next = 0

    def handle_demand(self, demand):
        if self.next >= self.n:
            self.finish()
            return []
        if self.broken and self.next <= self.bad < self.next + demand:
            raise RuntimeError("cannot make the bad one")
        stop = min(self.next + demand, self.n)
        events = list(range(self.next, stop))
        self.next = stop
        if stop >= self.n:
            self.finish()
        return events


@pytest.mark.parametrize("max_demand", [1, 8])
async def test_handle_demand_failure_resumes_without_init_again(max_demand):
    p = gs.Pipeline(on_failure="pause")
    out = []
    src = p.add(Counter(N, 77), name="src")
    p.link(src, p.add(gs.consumer(out.extend), name="sink"), max_demand=max_demand)
    async with running(p):
        failure = await paused(p, "src")
        assert failure.hook == "handle_demand" and failure.events == []
        src.broken = False
        p.resume("src")
        await p.wait()
        assert out == list(range(N)) and src.inits == 1


async def test_skip_of_handle_demand_serves_the_demand_with_the_next_call():
    p = gs.Pipeline(on_failure="pause")
    out = []
    src = p.add(Counter(N, 77, retry=None), name="src")
    p.link(src, p.add(gs.consumer(out.extend), name="sink"), max_demand=8)
    async with running(p):
        await paused(p, "src")
        src.broken = False
        p.skip("src")
        await p.wait()
        assert out == list(range(N))


class Informed(gs.Producer):
    """Sends what handle_info is told; fails on 'bad' while broken."""

    def __init__(self):
        super().__init__()
        self.broken = True

    def handle_demand(self, demand):
        return []

    def handle_info(self, message):
        if message == "stop":
            self.finish()
            return []
        if message == "bad" and self.broken:
            raise KeyError(message)
        return [message]


class AsyncInformed(Informed):
    async def handle_info(self, message):
        await anyio.lowlevel.checkpoint()
        return Informed.handle_info(self, message)


@pytest.mark.parametrize("cls", [Informed, AsyncInformed])
@pytest.mark.parametrize("decision", ["resume", "skip"])
async def test_handle_info_failure(decision, cls):
    p = gs.Pipeline(on_failure="pause")
    out = []
    src = p.add(cls(), name="src")
    p.link(src, p.add(gs.consumer(out.extend), name="sink"))
    async with running(p):
        for message in ("a", "bad", "c"):
            src.send(message)
        failure = await paused(p, "src")
        assert failure.hook == "handle_info"
        src.broken = False
        getattr(p, decision)("src")
        src.send("stop")
        await p.wait()
        assert out == (["a", "bad", "c"] if decision == "resume" else ["a", "c"])


async def test_init_failure_pauses_and_resume_runs_init_with_the_fixed_code():
    p = gs.Pipeline(on_failure="pause")
    out = []

    class Sink(gs.Consumer):
        broken = True

        def init(self):
            if Sink.broken:
                raise OSError("no database")
            self.seen = out

        def handle_events(self, events):
            self.seen.extend(events)

    chain(p, Sink(), max_demand=9)
    async with running(p):
        failure = await paused(p)
        assert failure.hook == "init"
        with pytest.raises(ValueError, match="failed in init, so there is no batch to skip"):
            p.skip("stage")
        Sink.broken = False
        p.resume("stage")
        await p.wait()
        assert out == list(range(N))


async def test_executor_stage_resumes_in_order():
    p = gs.Pipeline(on_failure="pause")
    flaky, out = Flaky(bad=(99,)), []

    def square(events):
        flaky.check(events)
        return [e * e for e in events]

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        src = p.add(gs.from_iterable(range(N)), name="src")
        mid = p.add(gs.producer_consumer(square, executor=pool, concurrency=3), name="mid")
        p.link(src, mid, max_demand=4)
        p.link(mid, p.add(gs.consumer(out.extend), name="sink"))
        async with running(p):
            await paused(p, "mid")
            flaky.broken = False
            p.resume("mid")
            await p.wait()
    assert out == [e * e for e in range(N)]
    gs.check_balance(p)


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("decision", ["resume", "skip"])
async def test_gs_map_async_calls(ordered, decision):
    p = gs.Pipeline(on_failure="pause")
    flaky, out = Flaky(bad=(61,)), []

    async def call(event):
        await anyio.lowlevel.checkpoint()
        flaky.check([event])
        return event + 1000

    src = p.add(gs.from_iterable(range(N)), name="src")
    mid = p.add(gs.map(call, concurrency=8, ordered=ordered), name="mid")
    p.link(src, mid, max_demand=10)
    p.link(mid, p.add(gs.consumer(out.extend), name="sink"))
    async with running(p):
        failure = await paused(p, "mid")
        assert failure.events == [61]
        flaky.broken = False
        getattr(p, decision)("mid")
        await p.wait()
        expected = [e + 1000 for e in range(N) if decision == "resume" or e != 61]
        assert (out if ordered else sorted(out)) == expected
        gs.check_balance(p)


@pytest.mark.parametrize("decision", ["resume", "skip"])
async def test_concurrent_consumer_event(decision):
    p = gs.Pipeline(on_failure="pause")
    flaky, out = Flaky(bad=(42,)), []

    class Each(gs.ConcurrentConsumer):
        async def handle_event(self, event):
            await anyio.lowlevel.checkpoint()
            flaky.check([event])
            out.append(event)

    chain(p, Each(), max_demand=10)
    async with running(p):
        failure = await paused(p)
        assert failure.events == [42] and failure.hook == "handle_event"
        flaky.broken = False
        getattr(p, decision)("stage")
        await p.wait()
        assert sorted(out) == [e for e in range(N) if decision == "resume" or e != 42]
        gs.check_balance(p)


async def test_retries_and_restarts_come_first():
    p = gs.Pipeline(on_failure="pause")
    flaky, out = Flaky(bad=range(50, N)), []

    class Sink(gs.Consumer):
        inits = 0

        def init(self):
            Sink.inits += 1

        def handle_events(self, events):
            flaky.check(events)
            out.extend(events)

    stage = Sink(restart="permanent", max_restarts=2, retry=gs.Retry(attempts=2, backoff=0.001))
    chain(p, stage, max_demand=5)
    async with running(p):
        failure = await paused(p)
        # Two restarts (each losing its batch), then the third failure pauses.
        assert Sink.inits == 3 and len(failure.attempts) == 2
        assert [f.restarted for f in p.failures["stage"]] == [True, True, False]
        flaky.broken = False
        p.resume("stage")
        await p.wait()
        lost = [e for f in p.failures["stage"] for e in f.events]
        assert sorted(out + lost) == list(range(N)) and 50 in lost
        gs.check_balance(p)


async def test_stall_notice_names_the_paused_stage():
    p = gs.Pipeline(on_failure="pause", stall_after=None)
    flaky = Flaky()

    def mid(events):
        flaky.check(events)
        return events

    src = p.add(gs.from_iterable(range(N)), name="src")
    p.link(src, p.add(gs.producer_consumer(mid), name="mid"), max_demand=5)
    p.link("mid", p.add(gs.consumer(lambda e: None), name="sink"), max_demand=5)
    async with running(p):
        await paused(p, "mid")
        stall = diagnose(p)
        assert stall.stage == "mid" and "paused after a failure in handle_events" in stall.reason
        (advice,) = p.explain().advice  # what limits it now: the paused stage
        assert advice.startswith("Stage 'mid' is paused after a failure in handle_events")
        flaky.broken = False
        p.resume("mid")
        await p.wait()


async def test_bad_calls_say_what_is_wrong():
    p = gs.Pipeline(on_failure="pause")
    chain(p, gs.consumer(lambda e: None))
    with pytest.raises(ValueError, match="no stage named 'nope'"):
        p.resume("nope")
    with pytest.raises(RuntimeError, match="stage 'stage' is not paused"):
        p.skip("stage")
    await p.run()
    assert await p.wait_paused() is None  # not running: no pause to wait for


async def test_on_failure_stop_does_not_pause():
    p = gs.Pipeline(on_failure="stop")
    flaky = Flaky()
    chain(p, gs.consumer(flaky.check), max_demand=5)
    with pytest.raises(gs.PipelineError):
        await p.run()
    assert p.status["stage"] == "failed" and p.paused == {}


def test_the_default_pipeline_pauses():
    assert gs.default_pipeline().on_failure == "pause"
    assert reset_default_pipeline().on_failure == "pause"


class AsyncHooks(gs.Producer):
    """Async init, handle_demand and handle_info; each fails once while broken."""

    def __init__(self, n, fail_in):
        super().__init__()
        self.n, self.fail_in, self.inits = n, fail_in, 0

    async def init(self):
        await anyio.lowlevel.checkpoint()
        self.inits += 1
        if self.fail_in == "init":
            raise OSError("not yet")
        self.next = 0

    async def handle_demand(self, demand):
        await anyio.lowlevel.checkpoint()
        if self.fail_in == "handle_demand" and self.next >= 40:
            raise OSError("not yet")
        events = list(range(self.next, min(self.next + demand, self.n)))
        self.next += len(events)
        if self.next >= self.n:
            self.finish()
        return events


@pytest.mark.parametrize("hook", ["init", "handle_demand"])
async def test_async_producer_hooks_pause_and_resume(hook):
    p = gs.Pipeline(on_failure="pause")
    out = []
    src = p.add(AsyncHooks(N, hook), name="src")
    p.link(src, p.add(gs.consumer(out.extend), name="sink"), max_demand=6)
    async with running(p):
        failure = await paused(p, "src")
        assert failure.hook == hook
        src.fail_in = None
        p.resume("src")
        await p.wait()
    assert out == list(range(N))
    assert src.inits == (2 if hook == "init" else 1)


async def test_a_failure_while_stopping_does_not_pause():
    p = gs.Pipeline(on_failure="pause")

    def sink(events):
        p.stop()  # the stop has begun when it fails: nobody would resume it
        raise ValueError("failing while stopping")

    chain(p, gs.consumer(sink), max_demand=5)
    async with running(p):
        with pytest.raises(gs.PipelineError):
            await p.wait()
    assert p.status["stage"] == "failed" and p.paused == {}
    gs.check_balance(p)


class Picky(gs.Consumer):
    """handle_subscribe and handle_cancel fail while ``broken`` names them."""

    def __init__(self, broken):
        super().__init__()
        self.broken, self.out, self.cancelled = broken, [], []

    def handle_subscribe(self, subscription):
        if self.broken == "handle_subscribe":
            raise ConnectionError("not yet")
        return "automatic"

    def handle_cancel(self, subscription, reason):
        if self.broken == "handle_cancel":
            raise ConnectionError("not yet")
        self.cancelled.append(reason)

    def handle_events(self, events):
        self.out.extend(events)


@pytest.mark.parametrize("hook", ["handle_subscribe", "handle_cancel"])
@pytest.mark.parametrize("decision", ["resume", "skip"])
async def test_subscribe_and_cancel_hooks_pause_too(hook, decision):
    p = gs.Pipeline(on_failure="pause")
    sink = Picky(hook)
    chain(p, sink, max_demand=7)
    async with running(p):
        failure = await paused(p)
        assert failure.hook == hook
        sink.broken = None
        getattr(p, decision)("stage")
        await p.wait()
    assert sink.out == list(range(N))  # subscribed either way: the ask is made
    assert p.status == {"src": "done", "stage": "done"}
    # Resumed, handle_cancel ran again and saw the end; skipped, it did not.
    if hook == "handle_cancel":
        assert sink.cancelled == (["normal"] if decision == "resume" else [])
