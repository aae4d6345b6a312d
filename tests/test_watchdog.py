"""The watchdog names a stage hook that holds the event loop (issue: slow handlers)."""

from __future__ import annotations

import gc
import logging
import sys
import threading

import anyio
import pytest

import genstage_nb as gs
from genstage_nb.watchdog import MAX_WARNINGS, SlowHandler, latest_per_stage

pytestmark = pytest.mark.anyio


class Caught(logging.Handler):
    """Sets ``event`` when the watchdog logs a slow-handler warning."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "the event loop for" in message:
            self.messages.append(message)
            self.event.set()


@pytest.fixture
def caught():
    handler = Caught()
    logger = logging.getLogger("genstage_nb")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("genstage_nb watchdog")]


class BlockingSink(gs.Consumer):
    """Blocks the loop (a sync wait, as a long computation would) until the watchdog
    has reported it: no timing involved."""

    def __init__(self, caught: Caught, **options) -> None:
        super().__init__(**options)
        self.caught = caught
        self.seen: list = []

    def handle_events(self, events):
        if not self.seen:
            assert self.caught.event.wait(60), "the watchdog never reported the blocked loop"
        self.seen.extend(events)


async def test_a_blocking_sync_hook_is_named_with_its_stage_hook_and_line(caught):
    p = gs.Pipeline(slow_handler=0.05)
    src = p.add(gs.from_iterable(range(100)), name="numbers")
    mid = p.add(gs.producer_consumer(lambda events: events), name="pass")
    sink = p.add(BlockingSink(caught), name="slow")
    p.link(src, mid, max_demand=10)
    p.link(mid, sink, max_demand=10)
    await p.run()
    assert sink.seen == list(range(100))  # nothing lost meanwhile
    assert len(p.warnings) == 1
    (record,) = p.warnings
    assert isinstance(record, SlowHandler)
    assert (record.stage, record.hook) == ("slow", "handle_events")
    assert record.where.startswith(__file__ + ":")
    assert not record.ongoing and record.seconds > 0.05
    assert "stage 'slow' is blocking the event loop" in caught.messages[0]
    assert "stage 'slow' blocked the event loop" in str(record)
    assert not watchdog_threads()


async def test_a_plain_function_handler_is_named_by_its_function(caught):
    def crunch(events):
        assert caught.event.wait(60)

    p = gs.Pipeline(slow_handler=0.05)
    p.link(
        p.add(gs.from_iterable([1, 2, 3]), name="src"), p.add(gs.consumer(crunch), name="crunch")
    )
    await p.run()
    (record,) = p.warnings
    assert (record.stage, record.hook) == ("crunch", "crunch")
    assert record.where.startswith(__file__ + ":")


async def test_a_blocking_producer_is_named(caught):
    class SlowSource(gs.Producer):
        def init(self):
            self.calls = 0
            self.made = 0

        def handle_demand(self, demand):
            self.calls += 1
            if self.calls == 2:
                assert caught.event.wait(60)
            if self.calls > 3:
                self.finish()
                return []
            self.made += demand
            return list(range(demand))

    p = gs.Pipeline(slow_handler=0.05)
    out: list = []
    source = p.add(SlowSource(), name="source")
    p.link(source, p.add(gs.consumer(out.extend), name="sink"), max_demand=5)
    await p.run()
    assert [(r.stage, r.hook) for r in p.warnings] == [("source", "handle_demand")]
    assert len(out) == source.made > 0


async def test_a_hook_blocking_inside_the_fused_loop_is_named(caught):
    """At max_demand 1 the fused loop calls the hooks (core/pump.py): the watchdog finds
    the stage by the line of the loop that is calling."""
    from genstage_nb.core import pump

    fused = []

    def crunch(events):
        if events == [20]:
            frame = sys._getframe(1)
            fused.append(frame.f_code in pump.HOOK_LINES)
            assert caught.event.wait(60)
        return events

    out: list = []
    p = gs.Pipeline(slow_handler=0.05)
    src = p.add(gs.from_iterable(range(40)), name="numbers")
    mid = p.add(gs.producer_consumer(crunch), name="crunch")
    p.link(src, mid, max_demand=1)
    p.link(mid, p.add(gs.consumer(out.extend), name="sink"), max_demand=1)
    await p.run()
    assert fused == [True]  # it blocked inside the loop
    assert out == list(range(40))
    assert [(r.stage, r.hook) for r in p.warnings] == [("crunch", "crunch")]


async def test_an_async_hook_that_awaits_is_not_reported():
    async def patient(events):
        await anyio.sleep(0.2)

    p = gs.Pipeline(slow_handler=0.05)
    p.link(
        p.add(gs.from_iterable(range(4)), name="src"),
        p.add(gs.consumer(patient), name="patient"),
        max_demand=1,
    )
    # A full collection of a large heap (late in a long test session) can hold the loop
    # for longer than 0.05 s by itself: not what this test is about.
    gc.collect()
    gc.disable()
    try:
        await p.run()
    finally:
        gc.enable()
    assert p.warnings == []


async def test_the_watchdog_can_be_turned_off():
    threads: list = []
    p = gs.Pipeline(slow_handler=None)
    p.link(
        p.add(gs.from_iterable(range(3)), name="src"),
        p.add(gs.consumer(lambda events: threads.extend(watchdog_threads())), name="sink"),
    )
    await p.run()
    assert threads == [] and p.warnings == []


async def test_the_watchdog_thread_runs_only_while_the_pipeline_runs():
    during: list = []
    p = gs.Pipeline()
    p.link(
        p.add(gs.from_iterable(range(3)), name="src"),
        p.add(gs.consumer(lambda events: during.extend(watchdog_threads())), name="sink"),
    )
    await p.run()
    assert len(during) == 1 and not watchdog_threads()


async def test_the_watchdog_thread_ends_when_the_run_is_cancelled():
    async with anyio.create_task_group() as tg:
        p = gs.Pipeline()
        p.link(
            p.add(gs.producer(lambda demand: list(range(demand))), name="endless"),
            p.add(gs.consumer(lambda e: None), name="sink"),
        )
        tg.start_soon(p.run)
        while not watchdog_threads():
            await anyio.sleep(0)
        tg.cancel_scope.cancel()
    assert not watchdog_threads()


@pytest.mark.parametrize("bad", [0, -1, "1", True, float("nan")])
def test_a_bad_threshold_names_the_option(bad):
    with pytest.raises(ValueError, match="Pipeline: slow_handler must be a number of seconds > 0"):
        gs.Pipeline(slow_handler=bad)


def test_latest_per_stage_keeps_the_newest_record_of_each_stage():
    records = [
        SlowHandler("a", "h", "f:1", 0.0, 1.0, False),
        SlowHandler("b", "h", "f:2", 1.0, 1.0, False),
        SlowHandler("a", "h", "f:3", 2.0, 3.0, True),
    ]
    assert latest_per_stage(records) == [records[2], records[1]]


async def test_the_records_are_bounded(caught):
    calls = []

    def blocks_every_time(events):
        calls.append(1)
        caught.event.clear()
        assert caught.event.wait(60)

    class Yielding(gs.Consumer):
        """Lets the loop beat between two blocking batches (the heartbeat is overdue,
        so its timer fires before this one)."""

        async def handle_events(self, events):
            await anyio.sleep(0.02)
            blocks_every_time(events)

    p = gs.Pipeline(slow_handler=0.01)
    p.warnings.extend(SlowHandler("old", "h", "f:1", 0.0, 1.0, False) for _ in range(MAX_WARNINGS))
    p.link(
        p.add(gs.from_iterable(range(3)), name="src"), p.add(Yielding(), name="sink"), max_demand=1
    )
    await p.run()
    assert len(p.warnings) == MAX_WARNINGS
    assert [r.stage for r in p.warnings[-3:]] == ["sink"] * 3
