"""The fused path (core/pump.py) against the message path.

Every scenario runs twice, with ``pump.enabled`` on and off. Where a producer answers an
ask, and so where one list ends and the next begins, depends on which stage's task
drives the chain (on either path: GenStage's stages answer asks whenever they get to
them), so the runs are compared on what does not: every stage sees the same events in
the same order, every event counter agrees, the same events reach the end; and on each
run every rule of the demand protocol holds: no batch larger than ``max_demand -
min_demand``, no event beyond the demand asked (``excess`` 0), every event accounted
for (``check_balance``).
"""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import genstage_nb as gs
from genstage_nb.core import pump

pytestmark = pytest.mark.anyio


class Source(gs.Producer):
    """Makes ``limit`` numbers; ``extra[i]`` more than asked at the i-th call (the
    dispatcher buffers them), and finishes at ``limit``."""

    def __init__(self, limit, extra, log, **options):
        super().__init__(**options)
        self.limit, self.extra, self.log = limit, extra, log

    def init(self):
        self.n = 0
        self.calls = 0

    def handle_demand(self, demand):
        self.log.append((self.name, "handle_demand", demand))
        more = self.extra[self.calls % len(self.extra)] if self.extra else 0
        self.calls += 1
        stop = min(self.n + demand + more, self.limit)
        events = list(range(self.n, stop))
        self.n = stop
        if stop == self.limit:
            self.finish()
        return events


def behaviour(kind, log, name):
    calls = [0]

    def record(events):
        log.append((name, "handle_events", tuple(events)))

    if kind == "same":

        def fn(events):
            record(events)
            return events

    elif kind == "plus":

        def fn(events):
            record(events)
            return [e + 1 for e in events]

    elif kind == "evens":

        def fn(events):
            record(events)
            return [e for e in events if e % 2 == 0]

    elif kind == "twice":

        def fn(events):
            record(events)
            return [e for e in events for _ in (0, 1)]

    elif kind == "tuple-or-none":

        def fn(events):
            record(events)
            kept = tuple(e for e in events if e % 3)
            return kept or None

    elif kind == "async-sometimes":

        def fn(events):
            record(events)
            if events[0] % 3 == 0:

                async def later():
                    await anyio.lowlevel.checkpoint()
                    return list(events)

                return later()
            return events

    elif kind == "fails-once":

        def fn(events):
            record(events)
            if 7 in events and calls[0] < 100:
                calls[0] = 100  # once
                raise ValueError("event 7")
            return events

    else:  # pragma: no cover
        raise AssertionError(kind)
    return fn


def run(scenario, fused, backend="asyncio"):
    limit, extra, links, kinds = scenario
    log: list = []
    seen: list = []
    previous = pump.enabled
    pump.enabled = fused
    try:
        p = gs.Pipeline()
        stages = [p.add(Source(limit, extra, log), name="src")]
        for i, kind in enumerate(kinds):
            fn = behaviour(kind, log, f"pc{i}")
            stages.append(p.add(gs.producer_consumer(fn, restart="permanent"), name=f"pc{i}"))

        def sink(events):
            log.append(("sink", "handle_events", tuple(events)))
            seen.extend(events)

        stages.append(p.add(gs.consumer(sink), name="sink"))
        subs = [
            p.link(a, b, max_demand=max_demand, min_demand=min_demand)
            for (max_demand, min_demand), a, b in zip(links, stages, stages[1:], strict=False)
        ]
        try:
            p.run_sync(backend=backend)
            error = None
        except gs.PipelineError as exc:
            error = str(exc)
    finally:
        pump.enabled = previous
    # The protocol's rules, on this run.
    gs.check_balance(p)
    for sub in subs:
        assert sub._demand.excess == 0, sub
        step = sub.max_demand - sub.min_demand
        name = sub.consumer.name
        assert all(len(b) <= step for n, h, b in log if n == name and h == "handle_events")
    events = {
        s.name: [e for n, h, batch in log if n == s.name and h == "handle_events" for e in batch]
        for s in stages
    }
    # Demand and batch counts depend on where lists were cut (see above).
    counters = {
        s.name: {
            k: v
            for k, v in s._process.counters.snapshot().items()
            if not k.startswith("demand") and k != "batches"
        }
        for s in stages
    }
    failures = [
        (f.stage, f.hook, f.restarted, 7 in f.events)
        for records in p.failures.values()
        for f in records
    ]
    return events, counters, failures, seen, error


def demand_options(max_demand):
    return st.one_of(st.none(), st.integers(0, max_demand - 1))


link = st.sampled_from([1, 2, 3, 5, 10, 100]).flatmap(
    lambda m: st.tuples(st.just(m), demand_options(m))
)
scenarios = st.integers(0, 3).flatmap(
    lambda k: st.tuples(
        st.integers(0, 60),
        st.lists(st.sampled_from([0, 0, 0, 1, 3]), max_size=4),
        st.lists(link, min_size=k + 1, max_size=k + 1),
        st.lists(
            st.sampled_from(["same", "plus", "evens", "twice", "tuple-or-none", "async-sometimes"]),
            min_size=k,
            max_size=k,
        ),
    )
)


@hsettings(max_examples=150)
@given(scenarios)
def test_fused_and_message_paths_agree(scenario):
    assert run(scenario, fused=True) == run(scenario, fused=False)


@hsettings(max_examples=50)
@given(scenarios, st.integers(0, 3))
def test_a_failure_in_the_chain_keeps_the_books(scenario, where):
    """A stage that fails once, on the batch with event 7, is restarted with that batch
    in its failure record (``check_balance`` in ``run``), and the stream goes on: input
    queued behind the failed batch is handled after the restart."""
    limit, extra, links, kinds = scenario
    kinds = list(kinds)
    if kinds:
        kinds[where % len(kinds)] = "fails-once"
    for fused in (True, False):
        events, counters, failures, seen, error = run((limit, extra, links, kinds), fused)
        assert error is None
        assert all(failure[1:] == ("handle_events", True, True) for failure in failures)
        assert len(failures) <= 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("max_demand", [1, 2, 7, 1000])
def test_w1_agrees_on_both_backends(backend, max_demand):
    scenario = (5000, [], [(max_demand, None)] * 2, ["plus"])
    fused = run(scenario, True, backend)
    assert fused == run(scenario, False, backend)
    assert fused[3] == list(range(1, 5001))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_chain_at_max_demand_1_runs_without_a_message_per_event(backend, monkeypatch):
    """The fused path is taken: the messages of 5000 events at max_demand 1 through
    three links (an ask and a list per link and event on the message path) shrink to
    a few per 256-round loop."""
    from genstage_nb.core.process import Process

    posts = []
    post = Process.post

    def counting_post(self, handler, a=None, b=None):
        posts.append(getattr(handler, "__name__", handler))
        return post(self, handler, a, b)

    monkeypatch.setattr(Process, "post", counting_post)
    events, *_ = run((5000, [], [(1, None)] * 3, ["plus", "same"]), True, backend)
    assert events["sink"] == list(range(1, 5001))
    assert len(posts) < 200, len(posts)
    posts.clear()
    run((5000, [], [(1, None)] * 3, ["plus", "same"]), False, backend)
    assert len(posts) > 6 * 5000
