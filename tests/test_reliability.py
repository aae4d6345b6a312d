"""Nothing lost under faults, load and bad input: event accounting and random pipelines."""

from __future__ import annotations

import contextlib
import os

import anyio
import pytest
from helpers import Counter, Forwarder, live_tasks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genstage_nb as gs

# -- the balance, scenario by scenario ---------------------------------------------------


def run(p):
    with contextlib.suppress(gs.PipelineError):
        p.run_sync()


def test_balance_of_a_finished_chain():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(1000)))
    dbl = p.add(gs.producer_consumer(lambda e: e + e, name="twice"))
    p.link(src, dbl, max_demand=7)
    p.link(dbl, p.add(Forwarder()), max_demand=3)
    run(p)
    b = gs.check_balance(p)
    assert b.loc["twice", "made"] == 2000 and b.loc["forwarder", "handled"] == 2000
    totals = p.metrics.totals()
    assert {"made", "accepted", "handled", "unhandled_in", "unhandled_out", "queued"} <= set(
        totals.columns
    )


def test_balance_with_partition_discards_and_buffer_drops():
    part = gs.PartitionDispatcher(partitions=2, hash=lambda e: None if e % 5 == 0 else e % 2)
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(500), dispatcher=part), name="src")
    a, b = p.add(Forwarder(name="a")), p.add(Forwarder(name="b"))
    p.link(src, a, partition=0)
    p.link(src, b, partition=1)
    run(p)
    bal = gs.check_balance(p)
    assert bal.loc["src", "discarded"] == 100
    assert sorted(a.events + b.events) == [e for e in range(500) if e % 5]


def test_balance_when_a_consumer_fails_and_the_rest_continue():
    class Fragile(gs.Consumer):
        def init(self):
            self.batches = 0

        def handle_events(self, events):
            self.batches += 1
            if self.batches == 2:
                raise ValueError("fragile")

    p = gs.Pipeline(on_failure="continue")
    src = p.add(gs.from_iterable(range(300)))
    p.link(src, p.add(Fragile()), max_demand=10)
    p.link(src, p.add(Forwarder()), max_demand=10)
    run(p)
    bal = gs.check_balance(p)
    assert bal.loc["fragile", "failed"] > 0


def test_balance_when_the_pipeline_is_cancelled_mid_run():
    class Slow(gs.Consumer):
        async def handle_events(self, events):
            await anyio.sleep(0.001)

    p = gs.Pipeline()
    dbl = p.add(gs.producer_consumer(lambda e: e, name="mid"))
    p.link(p.add(Counter()), dbl, max_demand=50)
    p.link(dbl, p.add(Slow()), max_demand=20)

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            while p.metrics.totals().loc["slow", "handled"] < 100:
                await anyio.sleep(0.001)
            await p.stop(timeout=0)

    anyio.run(main)
    bal = gs.check_balance(p)  # what was still queued or buffered is counted
    assert bal.loc["slow", "handled"] >= 100


def test_balance_with_restarts_and_a_failing_dispatch():
    class Flaky(gs.ProducerConsumer):
        def handle_events(self, events):
            if 33 in events:
                raise RuntimeError("flaky")
            return events

    p = gs.Pipeline(on_failure="continue")
    part = gs.PartitionDispatcher(partitions=1, hash=lambda e: 0 if e < 90 else 9)
    src = p.add(gs.from_iterable(range(100), dispatcher=part), name="src")
    fl = p.add(Flaky(restart="transient"))
    p.link(src, fl, partition=0, max_demand=10)
    p.link(fl, p.add(Forwarder()), max_demand=10)
    run(p)
    gs.check_balance(p)
    assert "src" in p.failures  # an unknown partition (9) failed the producer
    assert p.failures["flaky"][0].restarted


def test_check_balance_names_the_stage_out_of_balance():
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(10))), p.add(Forwarder()))
    run(p)
    p.stages["forwarder"]._process.counters.handled -= 1
    with pytest.raises(AssertionError, match="unaccounted for in stage\\(s\\) 'forwarder'"):
        gs.check_balance(p)


# -- random pipelines ------------------------------------------------------------------


class Source(gs.Producer):
    """Emits (name, 0..n-1), optionally failing once at ``fail_at``."""

    def __init__(self, n, fail_at=None, asynchronous=False, **options):
        super().__init__(**options)
        self.n, self.fail_at, self.asynchronous = n, fail_at, asynchronous
        self.i = 0

    def handle_demand(self, demand):
        if self.asynchronous:
            return self._later(demand)
        return self._make(demand)

    async def _later(self, demand):
        await anyio.sleep(0)
        return self._make(demand)

    def _make(self, demand):
        if self.fail_at is not None and self.i >= self.fail_at:
            self.fail_at = None
            raise RuntimeError(f"{self.name} fails")
        stop = min(self.i + demand, self.n)
        events = [(self.name, i) for i in range(self.i, stop)]
        self.i = stop
        if self.i >= self.n:
            self.finish()
        return events


class Pass(gs.ProducerConsumer):
    def __init__(self, fail_on=None, asynchronous=False, **options):
        super().__init__(**options)
        self.fail_on, self.asynchronous = fail_on, asynchronous

    def handle_events(self, events):
        if self.fail_on is not None and self.fail_on in events:
            self.fail_on = None
            raise RuntimeError(f"{self.name} fails")
        tagged = [(self.name, *e) for e in events]  # the path each event took
        if self.asynchronous:
            return self._later(tagged)
        return tagged

    async def _later(self, events):
        await anyio.sleep(0)
        return events


class Sink(gs.Consumer):
    def __init__(self, fail_on=None, asynchronous=False, **options):
        super().__init__(**options)
        self.fail_on, self.asynchronous = fail_on, asynchronous
        self.seen = []

    def handle_events(self, events):
        if self.fail_on is not None and self.fail_on in events:
            self.fail_on = None
            raise RuntimeError(f"{self.name} fails")
        self.seen.extend(events)
        if self.asynchronous:
            return anyio.sleep(0)
        return None


demands = st.integers(1, 40).flatmap(lambda mx: st.tuples(st.just(mx), st.integers(0, mx - 1)))
policies = st.sampled_from(["temporary", "transient", "permanent"])


@st.composite
def pipelines(draw):
    """A random pipeline: sources -> optional middle layer -> sinks, with faults."""
    n_src = draw(st.integers(1, 2))
    n_mid = draw(st.integers(0, 2))
    n_sink = draw(st.integers(1, 3))
    broadcast = draw(st.booleans())
    spec = {
        "on_failure": draw(st.sampled_from(["stop", "continue"])),
        "sources": [
            {
                "n": draw(st.integers(0, 150)),
                "fail_at": draw(st.none() | st.integers(0, 150)),
                "asynchronous": draw(st.booleans()),
                "restart": draw(policies),
                "broadcast": broadcast and i == 0,
            }
            for i in range(n_src)
        ],
        "mids": [
            {
                "fail": draw(st.booleans()),
                "asynchronous": draw(st.booleans()),
                "restart": draw(policies),
            }
            for _ in range(n_mid)
        ],
        "sinks": [
            {
                "fail": draw(st.booleans()),
                "asynchronous": draw(st.booleans()),
                "restart": draw(policies),
            }
            for _ in range(n_sink)
        ],
        "stop_after": draw(st.none() | st.integers(0, 100)),
        "unlink_after": draw(st.none() | st.integers(0, 100)),
    }
    n_links = n_src * n_mid + n_mid * n_sink if n_mid else n_src * n_sink
    spec["links"] = [draw(demands) for _ in range(n_links)]
    return spec


def build(spec):
    p = gs.Pipeline(on_failure=spec["on_failure"], metrics_interval=None)
    sources = [
        p.add(
            Source(
                s["n"],
                s["fail_at"],
                s["asynchronous"],
                restart=s["restart"],
                dispatcher=gs.BroadcastDispatcher if s["broadcast"] else None,
            ),
            name=f"src{i}",
        )
        for i, s in enumerate(spec["sources"])
    ]
    mids = [
        p.add(
            Pass(("src0", 7) if m["fail"] else None, m["asynchronous"], restart=m["restart"]),
            name=f"mid{i}",
        )
        for i, m in enumerate(spec["mids"])
    ]
    sinks = [
        p.add(
            Sink(("src0", 11) if k["fail"] else None, k["asynchronous"], restart=k["restart"]),
            name=f"sink{i}",
        )
        for i, k in enumerate(spec["sinks"])
    ]
    links = iter(spec["links"])
    subs = []
    first, second = (sources, mids) if mids else (sources, sinks)
    for a in first:
        for b in second:
            mx, mn = next(links)
            subs.append(p.link(a, b, max_demand=mx, min_demand=mn))
    if mids:
        for a in mids:
            for b in sinks:
                mx, mn = next(links)
                subs.append(p.link(a, b, max_demand=mx, min_demand=mn))
    return p, sinks, subs


async def exercise(spec):
    before = await live_tasks()
    p, sinks, subs = build(spec)

    ended = anyio.Event()

    async def run_quietly():
        try:
            await p.run()
        except gs.PipelineError:
            pass
        finally:
            ended.set()

    with anyio.fail_after(20):  # every run ends (no deadlock) within a bound
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_quietly)
            while not p.running and not ended.is_set():
                await anyio.sleep(0)
            await scripted(p, spec, sinks, subs)
            # A run may rightly go on (e.g. a producer whose consumers all stopped waits
            # for new ones): once nothing moves any more, a graceful stop must end it.
            while p.running and not await quiescent(p):
                await anyio.sleep(0)
            await p.stop(timeout=1)
    assert not p.running
    gs.check_balance(p)
    broadcast = any(s["broadcast"] for s in spec["sources"])
    everything = []
    for sink in sinks:
        by_path: dict = {}
        for event in sink.seen:
            by_path.setdefault(event[:-1], []).append(event[-1])
        for path, seq in by_path.items():
            assert seq == sorted(seq), f"{sink.name} got {path} out of order"
        everything.extend(event[-2:] for event in sink.seen)
    if not broadcast:
        assert len(everything) == len(set(everything)), "an event was delivered twice"
    for sub in subs:
        assert sub._demand.excess == 0, f"{sub} received more than it asked"
    assert await live_tasks() == before, "a task was left behind"


def _idle(p):
    return all(
        proc.stopped or (proc._parked and not proc.mailbox and proc._resume is None)
        for proc in p._procs.values()
    )


async def quiescent(p):
    """True when no stage has anything left to do, checked over a few scheduling rounds."""
    for _ in range(5):
        if not _idle(p):
            return False
        await anyio.sleep(0)
    return _idle(p)


async def scripted(p, spec, sinks, subs):
    """Unlink a subscription and/or stop, once the sinks have seen so many events."""
    for key in ("unlink_after", "stop_after"):
        target = spec[key]
        if target is None:
            continue
        while p.running and sum(len(s.seen) for s in sinks) < target:
            if await quiescent(p):  # the sinks may all have stopped before that
                break
            await anyio.sleep(0)
        if not p.running:
            return
        if key == "unlink_after":
            sub = subs[0]
            if p.graph.has_edge(sub.producer.name, sub.consumer.name):
                p.unlink(sub)
        else:
            await p.stop(timeout=0.5)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=int(os.environ.get("GENSTAGE_NB_PIPELINE_EXAMPLES", "1000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=pipelines())
def test_property_random_pipelines_balance_keep_order_and_end(backend, spec):
    anyio.run(exercise, spec, backend=backend)
