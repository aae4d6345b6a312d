"""Async work at once on the event loop: concurrency= without an executor, and gs.map.

Latencies are simulated with a seeded number of checkpoints (no clock), so calls finish
out of order deterministically; on asyncio and trio."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
from helpers import Forwarder

import genstage_nb as gs

pytestmark = pytest.mark.anyio


class InFlight:
    """Counts the calls in flight and the most seen at once."""

    def __init__(self, seed=0):
        self.now = self.most = self.calls = 0
        self.rng = random.Random(seed)

    async def work(self):
        self.now += 1
        self.calls += 1
        self.most = max(self.most, self.now)
        for _ in range(self.rng.randrange(0, 30)):  # a random latency, in loop turns
            await anyio.lowlevel.checkpoint()
        self.now -= 1


def chain(p, stage, n, max_demand=10, sink=None):
    p.add(stage)
    p.link(p.add(gs.from_iterable(range(n)), name="numbers"), stage, max_demand=max_demand)
    if stage.kind == "producer_consumer":
        sink = sink or Forwarder(name="sink")
        p.add(sink)
        p.link(stage, sink, max_demand=max_demand)
    return sink


# -- concurrency= on an async handle_events --------------------------------------------


class Fetch(gs.ProducerConsumer):
    def __init__(self, flight, **options):
        super().__init__(**options)
        self.flight = flight

    async def handle_events(self, events):
        await self.flight.work()
        return [e * 10 for e in events]


async def test_an_async_producer_consumer_runs_batches_at_once_and_keeps_their_order():
    flight = InFlight()
    p = gs.Pipeline(metrics_interval=None)
    sink = chain(p, Fetch(flight, concurrency=4, name="fetch"), 400, max_demand=10)
    await p.run()
    assert sink.events == [e * 10 for e in range(400)]
    assert flight.most == 4  # the bound is reached, never passed
    gs.check_balance(p)


async def test_an_async_consumer_runs_batches_at_once():
    flight = InFlight(1)
    seen = []

    class Store(gs.Consumer):
        async def handle_events(self, events):
            await flight.work()
            seen.extend(events)

    p = gs.Pipeline(metrics_interval=None)
    chain(p, Store(concurrency=3, name="store"), 300, max_demand=6)
    await p.run()
    assert sorted(seen) == list(range(300))
    assert flight.most == 3
    gs.check_balance(p)


async def test_events_held_stay_within_max_demand_plus_the_batches_in_flight():
    flight = InFlight(2)
    held = []
    p = gs.Pipeline(metrics_interval=None)
    fetch = Fetch(flight, concurrency=2, name="fetch")
    sink = chain(p, fetch, 300, max_demand=10)

    original = flight.work

    async def work():
        proc = fetch._process
        held.append(proc.counters.events_in - proc.counters.handled)
        await original()

    flight.work = work
    await p.run()
    assert sink.events == [e * 10 for e in range(300)]
    # max_demand (10), plus two batches of max_demand - min_demand (5) in flight.
    assert max(held) <= 10 + 2 * 5


# -- gs.map ------------------------------------------------------------------------------


async def test_map_calls_an_async_function_per_event_in_order():
    flight = InFlight(3)

    async def fetch(n):
        await flight.work()
        return n * 10

    p = gs.Pipeline(metrics_interval=None)
    sink = chain(p, gs.map(fetch, concurrency=8), 500, max_demand=20)
    await p.run()
    assert sink.events == [e * 10 for e in range(500)]
    assert flight.most == 8 and flight.calls == 500
    totals = p.metrics.totals()
    assert totals.loc["fetch", "handled"] == 500 and totals.loc["fetch", "made"] == 500
    gs.check_balance(p)


async def test_map_unordered_sends_results_as_they_complete_and_loses_nothing():
    gate = anyio.Event()
    done = set()

    async def fetch(n):
        if n == 0:
            await gate.wait()  # the first call is the last to finish
        else:
            done.add(n)
            if len(done) == 5:
                gate.set()
        return n

    p = gs.Pipeline(metrics_interval=None)
    sink = chain(p, gs.map(fetch, concurrency=6, ordered=False), 6, max_demand=10)
    await p.run()
    assert sorted(sink.events) == list(range(6))
    assert sink.events[-1] == 0  # sent when it completed, after the others
    gs.check_balance(p)


async def test_map_of_a_sync_function_at_concurrency_1():
    p = gs.Pipeline(metrics_interval=None)
    sink = chain(p, gs.map(lambda n: -n, name="negate"), 50, max_demand=7)
    await p.run()
    assert sink.events == [-e for e in range(50)]


async def test_map_of_a_sync_function_on_a_thread_pool():
    with ThreadPoolExecutor(4) as pool:
        p = gs.Pipeline(metrics_interval=None)
        sink = chain(p, gs.map(abs, concurrency=4, executor=pool), 60, max_demand=8)
        await p.run()
    assert sink.events == list(range(60))


def test_map_of_a_sync_function_with_concurrency_needs_an_executor():
    with pytest.raises(ValueError, match="concurrency=4 needs an executor for a sync function"):
        gs.Pipeline().add(gs.map(abs, concurrency=4))


def test_map_checks_its_arguments():
    with pytest.raises(TypeError, match="map: expected a function, got 5"):
        gs.map(5)
    with pytest.raises(TypeError, match="map: ordered must be True or False"):
        gs.map(abs, ordered="yes")
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        gs.map(abs, concurrency=0)


# -- failures, restarts, stop --------------------------------------------------------------


@pytest.mark.parametrize("ordered", [True, False])
async def test_a_failing_call_names_its_event_and_the_books_balance(ordered):
    async def fragile(n):
        await anyio.lowlevel.checkpoint()
        if n == 13:
            raise ValueError("13 is unlucky")
        return n

    p = gs.Pipeline(metrics_interval=None)
    sink = chain(p, gs.map(fragile, concurrency=4, ordered=ordered), 40, max_demand=10)
    with pytest.raises(gs.PipelineError, match="13 is unlucky"):
        await p.run()
    (failure,) = p.failures["fragile"]
    assert failure.events == [13]
    if ordered:
        assert sink.events == list(range(13))  # everything before it, in order
    assert 13 not in sink.events
    gs.check_balance(p)


async def test_a_restarted_map_goes_on_and_delivers_every_other_event_once():
    failed = []

    async def once(n):
        await anyio.lowlevel.checkpoint()
        if n == 7 and not failed:
            failed.append(n)
            raise ValueError("once")
        return n

    p = gs.Pipeline(metrics_interval=None)
    stage = gs.map(once, concurrency=3, restart="transient")
    sink = chain(p, stage, 50, max_demand=10)
    await p.run()
    assert sink.events == [e for e in range(50) if e != 7]
    assert p.failures["once"][0].events == [7]
    gs.check_balance(p)


async def test_stop_while_calls_are_in_flight_accounts_for_every_event():
    release = anyio.Event()
    started = []

    async def blocked(n):
        started.append(n)
        await release.wait()
        return n

    p = gs.Pipeline(metrics_interval=None)
    import itertools

    stage = gs.map(blocked, concurrency=5)
    p.add(stage)
    p.link(p.add(gs.from_iterable(itertools.count()), name="numbers"), stage, max_demand=10)
    sink = p.add(Forwarder(name="sink"))
    p.link(stage, sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        while len(started) < 5:
            await anyio.lowlevel.checkpoint()
        await p.stop(timeout=0)  # cancelled with five calls in flight
    assert len(started) == 5
    balance = gs.check_balance(p)
    assert balance.loc["blocked", "unhandled_in"] >= 5
