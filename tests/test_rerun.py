"""Cells that run again: ``p.add`` of a name the pipeline has replaces the stage (not
running) or swaps its code in place (running); ``reset`` empties the same object."""

from __future__ import annotations

import anyio
import pytest
from helpers import gated, until

import genstage_nb as gs

pytestmark = pytest.mark.anyio


def test_added_again_while_idle_the_new_stage_takes_the_old_ones_place_and_links(capsys):
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(range(10)), name="src")
    p.add(gs.producer_consumer(lambda events: events), name="double")
    out = []
    p.link(src, "double", max_demand=3, min_demand=1)
    p.link("double", p.add(gs.consumer(out.extend), name="sink"))
    again = p.add(gs.producer_consumer(lambda events: [2 * e for e in events]), name="double")
    assert "stage 'double' replaced (the pipeline is not running); its links kept" in (
        capsys.readouterr().out
    )
    assert p.stages["double"] is again and list(p.stages) == ["src", "sink", "double"]
    sub = p.graph.edges["src", "double"]["subscription"]
    assert (sub.max_demand, sub.min_demand) == (3, 1) and p.graph.has_edge("double", "sink")
    p.run_sync()
    assert out == [2 * e for e in range(10)]


async def test_added_again_while_running_the_stage_takes_the_new_code_in_place(capsys):
    gate, reached = anyio.Event(), anyio.Event()
    first, second = [], []
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(gated(10, 25, gate)), name="src")
    sink = p.add(gs.consumer(until(first, 10, reached)), name="sink")
    sink.note = "kept"  # the stage's own state
    p.link(src, sink, max_demand=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await reached.wait()
        held = p.add(gs.consumer(second.extend), name="sink")
        gate.set()
    assert held is sink and sink.note == "kept" and p.stages["sink"] is sink
    assert "stage 'sink': its code swapped in place (the pipeline runs)" in capsys.readouterr().out
    assert first == list(range(10)) and second == list(range(10, 25))  # none lost, none twice
    gs.check_balance(p)


async def test_a_running_gs_map_takes_its_new_function():
    gate, reached = anyio.Event(), anyio.Event()
    out = []
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(gated(6, 12, gate)), name="src")
    p.add(gs.map(lambda e: e, name="f"))
    p.link(src, "f", max_demand=2)
    p.link("f", p.add(gs.consumer(until(out, 6, reached), name="sink")), max_demand=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await reached.wait()
        p.add(gs.map(lambda e: -e), name="f")
        gate.set()
    assert out == [*range(6), *(-e for e in range(6, 12))]


async def test_a_paused_stage_added_again_is_resumed_with_its_failed_batch(capsys):
    out = []

    def broken(events):
        if 3 in events:
            raise ValueError("no 3")
        out.extend(events)

    p = gs.Pipeline(on_failure="pause", metrics_interval=None)
    src = p.add(gs.from_iterable(range(8)), name="src")
    p.link(src, p.add(gs.consumer(broken), name="sink"), max_demand=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await p.wait_paused("sink")
        p.add(gs.consumer(out.extend), name="sink")
    assert "resumed: handle_events runs again" in capsys.readouterr().out
    assert out == list(range(8)) and p.failures == {}
    gs.check_balance(p)


async def test_a_running_stage_cannot_change_kind_or_options_in_place():
    gate, reached = anyio.Event(), anyio.Event()
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(gated(1, 3, gate)), name="src")
    sink = p.add(gs.consumer(until([], 1, reached)), name="sink")
    p.link(src, sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await reached.wait()
        with pytest.raises(ValueError, match="its option concurrency would change"):
            p.add(gs.consumer(print, concurrency=2, executor=None), name="sink")
        with pytest.raises(ValueError, match="between sync and async"):

            async def later(events):
                return None

            p.add(gs.consumer(later), name="sink")
        with pytest.raises(ValueError, match="a producer cannot take its place"):
            p.add(gs.from_iterable([]), name="sink")
        assert p.stages["sink"] is sink
        gate.set()


def test_reset_empties_the_same_object():
    p = gs.Pipeline(on_failure="pause")
    p.link(p.add(gs.from_iterable(range(3))), p.add(gs.consumer(print)))
    p.run_sync()
    p.reset()
    assert (p.stages, p.subscriptions, p.failures, p.warnings) == ({}, [], {}, [])
    assert p.metrics.frame().empty and p.on_failure == "pause"
    out = []
    p.link(p.add(gs.from_iterable(range(3))), p.add(gs.consumer(out.extend)))
    p.run_sync()
    assert out == [0, 1, 2]


async def test_reset_while_running_stops_then_empties_and_refuses_adds_meanwhile():
    import itertools

    p = gs.Pipeline(metrics_interval=None)
    reached = anyio.Event()
    p.link(p.add(gs.from_iterable(itertools.count())), p.add(gs.consumer(until([], 1, reached))))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await reached.wait()
        p.reset()
        with pytest.raises(RuntimeError, match="it is being reset"):
            p.add(gs.consumer(print))
    assert p.stages == {} and not p.running
    p.add(gs.consumer(print))  # and it takes stages again
