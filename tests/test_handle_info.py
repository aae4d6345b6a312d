"""handle_info of a producer or producer-consumer returns events (GenStage's
``{:noreply, events, state}``), sent exactly like handle_demand's; on asyncio and trio."""

from __future__ import annotations

import anyio
import pytest
from helpers import Forwarder

import genstage_nb as gs

pytestmark = pytest.mark.anyio


class MaybeLater:
    """handle_info answers at once, or (``asynchronous=True``) from an async hook."""

    def handle_info(self, message):
        if self.asynchronous:
            return self._later(message)
        return (m for m in message)  # any iterable of events

    async def _later(self, message):
        await anyio.lowlevel.checkpoint()
        return message


class Inbox(MaybeLater, gs.Producer):
    """Makes nothing on demand; each message sent to it becomes events."""

    def __init__(self, asynchronous=False, **options):
        super().__init__(**options)
        self.asynchronous = asynchronous

    def handle_demand(self, demand):
        return None


class Relay(MaybeLater, gs.ProducerConsumer):
    """Forwards its input, and sends what a message carries too."""

    def __init__(self, asynchronous=False, **options):
        super().__init__(**options)
        self.asynchronous = asynchronous

    def handle_events(self, events):
        return events


async def run_with(p, until, act, timeout=10):
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.lowlevel.checkpoint()
        await act()
        with anyio.fail_after(timeout):
            await until.done.wait()
        await p.stop(timeout=1)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_producer_sends_what_handle_info_returns_within_demand(asynchronous):
    p = gs.Pipeline(metrics_interval=None)
    inbox = p.add(Inbox(asynchronous), name="inbox")
    sink = Forwarder(until=lambda b: sum(map(len, b)) >= 7, name="sink")
    sink.done = anyio.Event()
    p.add(sink)
    p.link(inbox, sink, max_demand=4, min_demand=2)

    async def act():
        inbox.send([0, 1, 2, 3, 4, 5])  # 6 events, 4 asked: 2 wait in the buffer
        inbox.send([6])

    await run_with(p, sink, act)
    assert sink.events == [0, 1, 2, 3, 4, 5, 6]
    assert all(len(b) <= 2 for b in sink.batches)  # batches of max - min
    totals = p.metrics.totals()
    assert totals.loc["inbox", "made"] == 7
    assert totals.loc["inbox", "events_out"] == 7
    gs.check_balance(p)


async def test_events_beyond_demand_wait_in_the_producer_buffer():
    p = gs.Pipeline(metrics_interval=None)
    inbox = p.add(Inbox(), name="inbox")
    sub_manual = []

    class Manual(gs.Consumer):
        def handle_subscribe(self, subscription):
            sub_manual.append(subscription)
            return "manual"

        def handle_events(self, events):
            pass

    manual = p.add(Manual(name="manual"))
    p.link(inbox, manual, max_demand=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            while not sub_manual:
                await anyio.lowlevel.checkpoint()
            inbox.send(list(range(5)))
            while inbox.buffered < 5:
                await anyio.lowlevel.checkpoint()
        assert inbox.buffered == 5  # no demand yet: all five wait, none is lost
        sub_manual[0].ask(3)
        with anyio.fail_after(10):
            while inbox.buffered > 2:
                await anyio.lowlevel.checkpoint()
        assert inbox.buffered == 2
        await p.stop(timeout=0)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_producer_consumer_sends_what_handle_info_returns(asynchronous):
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable([1, 2, 3]), name="numbers")
    relay = p.add(Relay(asynchronous), name="relay")
    sink = Forwarder(until=lambda b: sum(map(len, b)) >= 5, name="sink")
    p.add(sink)
    p.link(src, relay, cancel="temporary")
    p.link(relay, sink)
    sink.done = anyio.Event()

    async def act():
        relay.send(["a", "b"])

    await run_with(p, sink, act)
    assert sorted(map(str, sink.events)) == ["1", "2", "3", "a", "b"]
    totals = p.metrics.totals()
    assert totals.loc["relay", "made"] == 5


async def test_a_consumers_handle_info_return_value_is_ignored():
    seen = []

    class Sink(gs.Consumer):
        def handle_events(self, events):
            pass

        def handle_info(self, message):
            seen.append(message)
            return [message]  # ignored: a consumer has no one to send to

    p = gs.Pipeline(metrics_interval=None)
    sink = p.add(Sink(), name="sink")
    p.link(p.add(Inbox(), name="inbox"), sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.lowlevel.checkpoint()
        sink.send("hello")
        with anyio.fail_after(10):
            while not seen:
                await anyio.lowlevel.checkpoint()
        await p.stop(timeout=0)
    assert seen == ["hello"]
    assert p.failures == {}


async def test_handle_info_returning_a_non_iterable_fails_the_stage_naming_the_hook():
    class Bad(gs.Producer):
        def init(self):
            self.send("x")

        def handle_demand(self, demand):
            return None

        def handle_info(self, message):
            return 42

    p = gs.Pipeline(metrics_interval=None)
    bad = p.add(Bad(), name="bad")
    p.link(bad, p.add(gs.consumer(lambda events: None), name="sink"))
    with pytest.raises(gs.PipelineError):
        await p.run()
    (failure,) = p.failures["bad"]
    assert failure.hook == "handle_info"
    assert "stage 'bad': handle_info must return an iterable of events" in str(failure.exception)


async def test_a_failing_handle_info_fails_the_producer_like_handle_demand():
    class Fails(gs.Producer):
        def init(self):
            self.send("x")

        def handle_demand(self, demand):
            return None

        def handle_info(self, message):
            raise ValueError(f"bad message {message!r}")

    p = gs.Pipeline(metrics_interval=None)
    fails = p.add(Fails(), name="fails")
    p.link(fails, p.add(gs.consumer(lambda events: None), name="sink"))
    with pytest.raises(gs.PipelineError, match="bad message 'x'"):
        await p.run()
    assert p.failures["fails"][0].hook == "handle_info"
