"""The runtime's demand protocol, with GenStage's scenarios and numbers, on asyncio and trio."""

from __future__ import annotations

import contextlib

import anyio
import pytest
from helpers import Counter, Doubler, Forwarder, NothingProducer, run_linking_later, run_until

import genstage_nb as gs

pytestmark = pytest.mark.anyio


def spans(batches):
    return [(b[0], b[-1]) for b in batches]


# -- producer -> consumer ----------------------------------------------------------


async def test_with_default_max_and_min_demand():
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: len(b) >= 2)
    p.link(p.add(Counter()), p.add(c))
    await run_until(p, c)
    assert c.batches[0] == list(range(0, 500))
    assert c.batches[1] == list(range(500, 1000))


async def test_with_80_percent_min_demand():
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: any(x[0] == 1000 for x in b))
    p.link(p.add(Counter()), p.add(c), max_demand=100, min_demand=80)
    await run_until(p, c)
    assert spans(c.batches)[:2] == [(0, 19), (20, 39)]
    assert list(range(1000, 1020)) in c.batches
    assert all(len(b) == 20 for b in c.batches)


async def test_with_20_percent_min_demand():
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: len(b) >= 5)
    p.link(p.add(Counter()), p.add(c), max_demand=100, min_demand=20)
    await run_until(p, c)
    assert spans(c.batches)[:5] == [(0, 79), (80, 99), (100, 179), (180, 259), (260, 279)]


async def test_with_1_max_and_0_min_demand():
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: len(b) >= 3)
    p.link(p.add(Counter()), p.add(c), max_demand=1, min_demand=0)
    await run_until(p, c)
    assert c.batches[:3] == [[0], [1], [2]]


async def test_producer_only_makes_what_was_asked():
    counter = Counter()
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: len(b) >= 6)
    p.link(p.add(counter), p.add(c), max_demand=10, min_demand=5)
    await run_until(p, c)
    # First ask is max_demand, then max - min each time the consumer drains to min.
    assert counter.demands[:3] == [10, 5, 5]


# -- broadcast ---------------------------------------------------------------------


async def test_with_shared_broadcast_demand():
    producer = Counter(dispatcher=gs.BroadcastDispatcher, demand="accumulate")
    p = gs.Pipeline()
    p.add(producer)
    c1 = Forwarder(until=lambda b: len(b) >= 3)
    c2 = Forwarder(until=lambda b: len(b) >= 3)
    s1 = p.link(producer, p.add(c1), max_demand=10, min_demand=0)
    s2 = p.link(producer, p.add(c2), max_demand=20, min_demand=0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        # Everyone has subscribed before events flow.
        await subscribed(producer, s1, s2)
        producer.demand_mode = "forward"
        with anyio.fail_after(10):
            await c1.done.wait()
            await c2.done.wait()
        await p.stop(timeout=0)
    # Paced by the slowest (10): both see the same events, in batches of 10.
    assert c1.batches[:3] == [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    assert c2.events[:30] == list(range(30))


async def test_with_shared_broadcast_demand_does_not_result_in_duplicate_upstream_demand():
    producer = NothingProducer(dispatcher=gs.BroadcastDispatcher)
    p = gs.Pipeline()
    p.add(producer)

    class Sleeper(gs.Consumer):
        def handle_subscribe(self, subscription):
            return None

    s1 = p.link(producer, p.add(Sleeper(name="s1")), max_demand=10, min_demand=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await subscribed(producer, s1)
        s2 = p.link(producer, p.add(Sleeper(name="s2")), max_demand=20, min_demand=0)
        await subscribed(producer, s2)
        # The common demand (10) went upstream once; s2's extra demand did not.
        await gs_checkpoint_via_call(producer)
        await p.stop(timeout=0)
    assert producer.demands == [10]


async def subscribed(producer, *subs):
    """Wait until ``producer`` has registered every subscription in ``subs``."""
    while not all(s.active for s in subs):
        await anyio.sleep(0)
    await gs_checkpoint_via_call(producer)


async def gs_checkpoint_via_call(stage):
    """Wait until ``stage`` has served every message posted to it so far."""
    with contextlib.suppress(NotImplementedError):
        await stage.call("sync")


async def test_broadcast_selector_filters_per_subscription():
    producer = gs.from_iterable(range(20), dispatcher=gs.BroadcastDispatcher, demand="accumulate")
    p = gs.Pipeline()
    p.add(producer)
    evens, alls = Forwarder(), Forwarder()
    s1 = p.link(producer, p.add(evens, name="evens"), max_demand=4, selector=lambda e: e % 2 == 0)
    s2 = p.link(producer, p.add(alls, name="all"), max_demand=4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await subscribed(producer, s1, s2)
        producer.demand_mode = "forward"
    assert evens.events == list(range(0, 20, 2))
    assert alls.events == list(range(20))
    assert all(len(b) <= 4 for b in evens.batches + alls.batches)


@pytest.mark.parametrize("order", [("all", "evens", "late"), ("late", "evens", "all")])
async def test_every_broadcast_subscriber_of_a_new_run_gets_the_first_event(order):
    # The start gate: the first asks wait until every stage has run init and announced
    # its subscriptions, so no subscriber misses the first events, whatever the order
    # (here one consumer's async init takes a few turns of the loop).
    class LateInit(Forwarder):
        async def init(self):
            super().init()
            for _ in range(5):
                await anyio.sleep(0)

    p = gs.Pipeline()
    producer = p.add(gs.from_iterable(range(20), dispatcher=gs.BroadcastDispatcher), name="src")
    made = {"all": Forwarder, "evens": Forwarder, "late": LateInit}
    consumers = {}
    for name in order:
        consumers[name] = p.add(made[name](), name=name)
        selector = (lambda e: e % 2 == 0) if name == "evens" else None
        p.link(producer, consumers[name], max_demand=5, selector=selector)
    with anyio.fail_after(10):
        await p.run()
    assert consumers["all"].events == list(range(20))
    assert consumers["late"].events == list(range(20))
    assert consumers["evens"].events == list(range(0, 20, 2))


async def test_a_stage_that_fails_in_init_does_not_hold_the_start_gate():
    class BrokenInit(gs.Consumer):
        def init(self):
            raise RuntimeError("no database")

        def handle_events(self, events):
            pass

    p = gs.Pipeline(on_failure="continue")
    src = p.add(gs.from_iterable(range(10)), name="src")
    ok = p.add(Forwarder(), name="ok")
    p.link(src, p.add(BrokenInit(), name="broken"))
    p.link(src, ok)
    with anyio.fail_after(10), pytest.raises(gs.PipelineError):
        await p.run()
    assert ok.events == list(range(10))


# -- producer -> producer_consumer -> consumer --------------------------------------


@pytest.mark.parametrize("late", [False, True])
async def test_producer_consumer_with_80_percent_min_demand(late):
    p = gs.Pipeline()
    counter, doubler = p.add(Counter()), p.add(Doubler())
    c = p.add(Forwarder(until=lambda b: len(b) >= 3))
    if late:  # subscribe the consumer first, as GenStage's late-subscription test does
        p.link(doubler, c, max_demand=100, min_demand=50)
        p.link(counter, doubler, max_demand=100, min_demand=80)
    else:
        p.link(counter, doubler, max_demand=100, min_demand=80)
        p.link(doubler, c, max_demand=100, min_demand=50)
    await run_until(p, c)
    assert doubler.batches[0] == list(range(0, 20))
    assert c.batches[0] == [x for e in range(0, 20) for x in (e, e)]
    assert c.batches[1] == [x for e in range(20, 40) for x in (e, e)]


async def test_producer_consumer_with_20_percent_min_demand():
    p = gs.Pipeline()
    counter, doubler = p.add(Counter()), p.add(Doubler())
    c = p.add(Forwarder(until=lambda b: len(b) >= 3))
    p.link(counter, doubler, max_demand=100, min_demand=20)
    p.link(doubler, c, max_demand=100, min_demand=50)
    await run_until(p, c)
    assert doubler.batches[0] == list(range(0, 80))
    doubled = [x for e in range(0, 80) for x in (e, e)]
    # The consumer's batches are at most 50 (100 - 50) events.
    assert c.events[:150] == doubled[:150]
    assert spans(c.batches[:3]) == [(0, 24), (25, 49), (50, 74)]


async def test_producer_consumer_stops_asking_when_consumer_stops_asking():
    class Postponer(gs.ProducerConsumer):
        def init(self):
            self.seen = []

        def handle_events(self, events):
            self.seen.append(list(events))
            return events

    class Stuck(gs.Consumer):
        def init(self):
            self.seen = []

        def handle_subscribe(self, subscription):
            return "manual"  # asks once, by hand, and never again

        def handle_events(self, events):
            self.seen.append(list(events))

    counter = Counter()
    post, stuck = Postponer(), Stuck()
    p = gs.Pipeline()
    p.add(counter), p.add(post), p.add(stuck)
    p.link(counter, post, max_demand=10, min_demand=8)
    sub = p.link(post, stuck, max_demand=10, min_demand=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await gs_checkpoint_via_call(stuck)
        sub.ask(2)
        for _ in range(5):
            await gs_checkpoint_via_call(counter)
            await gs_checkpoint_via_call(post)
        await p.stop(timeout=0)
    # The producer-consumer handled the first list (2 events at a time, asking 2 more
    # after each batch, as GenStage does) and then stopped handling input: its
    # downstream demand (2) was used up. What arrived since waits unhandled.
    assert post.seen == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert stuck.seen == [[0, 1]]
    assert counter.demands == [10, 2, 2, 2, 2, 2]
    assert post.buffered == 8
    assert [e for kind, _, evs in post._process.pc_queue if kind == 0 for e in evs] == list(
        range(10, 20)
    )


async def test_producer_consumer_discarding_everything_keeps_asking():
    class Discarder(gs.ProducerConsumer):
        def init(self):
            self.seen = []

        def handle_events(self, events):
            self.seen.append(list(events))
            return []

    p = gs.Pipeline()
    d = Discarder()
    counter = Counter(limit=1100)
    p.link(p.add(counter), p.add(d), max_demand=100, min_demand=80)
    sink = p.add(Forwarder())
    p.link(d, sink, max_demand=100, min_demand=50)
    await p.run()
    assert d.seen[0] == list(range(0, 20))
    assert list(range(100, 120)) in d.seen
    assert list(range(1000, 1020)) in d.seen
    assert sink.batches == []


# -- demand modes ------------------------------------------------------------------


async def test_demand_can_be_set_to_accumulate_on_init_then_forward():
    counter = Counter(demand="accumulate")
    assert counter.demand_mode == "accumulate"
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: len(b) >= 1)
    p.link(p.add(counter), p.add(c), max_demand=4, min_demand=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await gs_checkpoint_via_call(counter)
        assert c.batches == []
        assert counter.demands == []
        counter.demand_mode = "forward"
        with anyio.fail_after(10):
            await c.done.wait()
        assert counter.demand_mode == "forward"
        await p.stop(timeout=0)
    assert c.batches[0] == [0, 1, 2, 3]


async def test_demand_can_be_set_to_accumulate_while_running():
    counter = Counter()
    p = gs.Pipeline()
    c = Forwarder()
    p.link(p.add(counter), p.add(c), max_demand=4, min_demand=0)
    counter.demand_mode = "accumulate"
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await gs_checkpoint_via_call(counter)
        assert counter.demand_mode == "accumulate"
        assert c.batches == []
        counter.demand_mode = "forward"
        await gs_checkpoint_via_call(counter)
        await gs_checkpoint_via_call(c)
        assert c.batches[0] == [0, 1, 2, 3]
        await p.stop(timeout=0)


async def test_demand_does_not_combine_demands_when_accumulating():
    class DemandProducer(gs.Producer):
        def handle_demand(self, demand):
            return [demand]

    producer = DemandProducer(demand="accumulate")
    p = gs.Pipeline()
    p.add(producer)
    c1, c2 = Forwarder(), Forwarder()
    p.link(producer, p.add(c1), max_demand=2)
    p.link(producer, p.add(c2), max_demand=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await gs_checkpoint_via_call(producer)
        producer.demand_mode = "forward"
        await gs_checkpoint_via_call(producer)
        await gs_checkpoint_via_call(c1)
        await gs_checkpoint_via_call(c2)
        await p.stop(timeout=0)
    # Two separate demands of 2 (not one of 4); then each consumer asks 1 more.
    assert sorted(c1.events[:1] + c2.events[:1]) == [2, 2]
    assert 4 not in c1.events + c2.events


def test_demand_mode_rejects_unknown_values():
    with pytest.raises(
        ValueError, match="stage 'Counter': demand must be 'forward' or 'accumulate'"
    ):
        Counter(demand="sometimes")
    c = Counter()
    with pytest.raises(ValueError, match="demand_mode must be 'forward' or 'accumulate'"):
        c.demand_mode = "later"


# -- buffer ------------------------------------------------------------------------


async def test_buffer_stores_events_when_there_is_no_demand():
    counter = Counter()
    p = gs.Pipeline()
    p.add(counter)
    c = Forwarder(until=lambda b: len(b) >= 4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_linking_later, p)
        counter.send(("queue", ["a", "b", "c"]))
        assert await counter.call(("queue", ["d", "e"])) == "queued"
        assert await counter.call("buffered") == 5
        p.link(counter, p.add(c), max_demand=4, min_demand=0)
        with anyio.fail_after(10):
            await c.done.wait()
        await p.stop(timeout=0)
    assert c.batches[:4] == [["a", "b", "c", "d"], ["e"], [0, 1, 2], [3, 4, 5, 6]]


@pytest.mark.parametrize(
    ("keep", "first_batches"),
    [("first", [["a", "b", "c", "d"], ["e"]]), ("last", [["d", "e", "f", "g"], ["h"]])],
)
async def test_buffer_keeps_first_or_last_and_logs_the_drop_once(keep, first_batches, caplog):
    producer = gs.from_iterable([], buffer_size=5, buffer_keep=keep)
    p = gs.Pipeline()
    p.add(producer, name="queue")
    c = Forwarder()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_linking_later, p)
        await gs_checkpoint_via_call(producer)
        producer.emit(["a", "b", "c", "d", "e"])
        producer.emit(["f", "g", "h"])
        assert producer.buffered == 5
        p.link(producer, p.add(c), max_demand=4, min_demand=0)
    warnings = [r for r in caplog.records if "discarded" in r.message]
    assert len(warnings) == 1
    assert "stage 'queue' discarded 3 events from its buffer" in warnings[0].message
    assert c.batches == first_batches
    assert producer._process.counters.dropped == 3


async def test_buffer_may_be_unbounded():
    producer = gs.from_iterable([], buffer_size=None)
    p = gs.Pipeline()
    p.add(producer)
    c = Forwarder()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_linking_later, p)
        await gs_checkpoint_via_call(producer)
        producer.emit(list("abcde"))
        producer.emit(list("fgh"))
        assert producer.buffered == 8
        p.link(producer, p.add(c), max_demand=4, min_demand=0)
    assert c.batches == [list("abcd"), list("efgh")]
    assert producer.buffered == 0


# -- manual demand -----------------------------------------------------------------


async def test_manual_demand_can_be_set_on_subscribe():
    class Manual(gs.Consumer):
        def init(self):
            self.batches = []
            self.sub = None

        def handle_subscribe(self, subscription):
            self.sub = subscription
            subscription.ask(2)
            return "manual"

        def handle_events(self, events):
            self.batches.append(list(events))

    counter = Counter(limit=10)
    m = Manual()
    p = gs.Pipeline()
    p.link(p.add(counter), p.add(m), max_demand=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await gs_checkpoint_via_call(counter)
        await gs_checkpoint_via_call(m)
        assert m.batches == [[0, 1]]
        assert m.sub.manual
        m.sub.ask(3)
        await gs_checkpoint_via_call(counter)
        await gs_checkpoint_via_call(m)
        assert m.batches == [[0, 1], [2, 3, 4]]
        m.sub.ask(100)
    assert m.batches[-1] == [5, 6, 7, 8, 9]
    assert p.status == {"counter": "done", "manual": "done"}


def test_subscription_ask_validates_n():
    p = gs.Pipeline()
    sub = p.link(p.add(Counter()), p.add(Forwarder()))
    with pytest.raises(ValueError, match=r"ask counter -> forwarder: n \(0\) must be at least 1"):
        sub.ask(0)
    with pytest.raises(TypeError, match="n must be an int"):
        sub.ask("3")


# -- tune --------------------------------------------------------------------------


async def test_tune_takes_effect_at_the_next_ask():
    counter = Counter()
    p = gs.Pipeline()
    c = Forwarder(until=lambda b: len(b) >= 8)
    sub = p.link(p.add(counter), p.add(c), max_demand=10, min_demand=0)

    original = c.handle_events

    def handle_events(events):
        original(events)
        if len(c.batches) == 2:
            sub.tune(max_demand=3, min_demand=0)

    c.handle_events = handle_events
    await run_until(p, c)
    # The ask after the second batch was worked out with the old max_demand (10) when
    # its list arrived; the next list is cut into batches of the new max - min (3) and
    # the next ask uses the new max_demand.
    assert counter.demands[:4] == [10, 10, 10, 3]
    assert [len(b) for b in c.batches[:8]] == [10, 10, 3, 3, 3, 1, 3, 3]


def test_tune_validates_and_keeps_min_below_max():
    p = gs.Pipeline()
    sub = p.link(p.add(Counter()), p.add(Forwarder()), max_demand=100, min_demand=10)
    sub.tune(max_demand=50)
    assert (sub.max_demand, sub.min_demand) == (50, 10)
    sub.tune(max_demand=8)  # explicit min 10 no longer fits: back to half
    assert (sub.max_demand, sub.min_demand) == (8, 4)
    with pytest.raises(
        ValueError, match=r"tune counter -> forwarder: min_demand \(8\) must be below"
    ):
        sub.tune(min_demand=8)
    with pytest.raises(ValueError, match="max_demand \\(0\\) must be at least 1"):
        sub.tune(max_demand=0)
    assert (sub.max_demand, sub.min_demand) == (8, 4)
