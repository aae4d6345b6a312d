"""Pipeline.progress (a gs.Progress, its text bar and the notebook's live bar) and
Pipeline.peek (the last events a stage emitted, taking nothing)."""

from __future__ import annotations

import itertools

import anyio
import pytest
from helpers import gated, until

import genstage_nb as gs
from genstage_nb.core import peeking
from genstage_nb.notebook.progressbar import ProgressBar

# -- progress --------------------------------------------------------------------------


def test_a_finished_run_is_done_with_every_event_counted():
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(1000))), p.add(gs.consumer(len, name="sink")))
    before = p.progress()
    assert (before.done, before.total, before.state) == (0, 1000, "stopped")
    p.run_sync()
    progress = p.progress()
    assert (progress.done, progress.total, progress.fraction) == (1000, 1000, 1.0)
    assert progress.state == "done" and progress.eta == 0.0 and progress.elapsed > 0
    assert isinstance(progress, gs.Progress) and progress.rate >= 0
    assert "1,000/1,000 events" in str(progress) and str(progress).endswith("done")


def test_without_a_total_there_is_no_fraction_nor_eta():
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(x for x in range(50))), p.add(gs.consumer(len)))
    p.run_sync()
    progress = p.progress()
    assert (progress.done, progress.total, progress.fraction, progress.eta) == (
        50,
        None,
        None,
        None,
    )
    assert str(progress).startswith("50 events")


def test_the_total_option_and_the_sum_over_producers():
    class Ticks(gs.Producer):
        def init(self):
            self.n = 0

        def handle_demand(self, demand):
            events = list(range(self.n, min(self.n + demand, 30)))
            self.n += len(events)
            if self.n == 30:
                self.finish()
            return events

    p = gs.Pipeline()
    sink = p.add(gs.consumer(len, name="sink"))
    p.link(p.add(Ticks(total=30), name="ticks"), sink)
    p.link(p.add(gs.from_iterable([1, 2, 3]), name="three"), sink)
    assert p.progress().total == 33
    p.add(gs.from_iterable(iter([0])), name="unknown")
    p.link("unknown", sink)
    assert p.progress().total is None  # one producer does not know its total
    with pytest.raises(ValueError, match=r"stage 'Ticks': total must be an int >= 0"):
        Ticks(total=-1)


def test_a_stage_that_drops_events_still_ends_at_one():
    p = gs.Pipeline()
    evens = p.add(gs.producer_consumer(lambda events: [e for e in events if e % 2 == 0]))
    p.link(p.add(gs.from_iterable(range(100))), evens)
    p.link(evens, p.add(gs.consumer(len, name="sink")))
    p.run_sync()
    progress = p.progress()
    assert progress.done == 50 and progress.fraction == 1.0 and progress.state == "done"


def test_the_states_failed_paused_and_stopped():
    def broken(events):
        raise ValueError("no")

    failed = gs.Pipeline()
    failed.link(failed.add(gs.from_iterable(range(5))), failed.add(gs.consumer(broken)))
    with pytest.raises(gs.PipelineError):
        failed.run_sync()
    assert failed.progress().state == "failed"

    async def paused_then_stopped():
        p = gs.Pipeline(on_failure="pause", metrics_interval=None)
        p.link(p.add(gs.from_iterable(range(5))), p.add(gs.consumer(broken, name="sink")))
        p.start()
        await p.wait_paused("sink")
        assert p.progress().state == "paused"
        p.skip("sink")  # (the batch is dropped, as failed)

    anyio.run(paused_then_stopped)

    async def stopped():
        reached = anyio.Event()
        p = gs.Pipeline(metrics_interval=None)
        src = p.add(gs.from_iterable(itertools.count()))
        p.link(src, p.add(gs.consumer(until([], 1, reached))))
        p.start()
        await reached.wait()
        assert p.progress().state == "running"
        await p.stop()
        return p.progress()

    assert anyio.run(stopped).state == "stopped"


@pytest.mark.anyio
async def test_while_it_runs_the_fraction_is_the_sinks_share_and_an_eta_follows():
    gate, reached, seen = anyio.Event(), anyio.Event(), []
    p = gs.Pipeline(metrics_interval=None)
    p.add(gs.from_iterable(gated(40, 100, gate), total=100), name="src")
    p.link("src", p.add(gs.consumer(until(seen, 40, reached), name="sink")), max_demand=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await reached.wait()
        progress = p.progress()
        gate.set()
    assert (progress.done, progress.total, progress.fraction) == (40, 100, 0.4)
    assert progress.state == "running" and progress.rate > 0
    assert progress.eta == pytest.approx(60 / progress.rate)
    assert "ETA" in progress.text() and progress.text().startswith("[############")


def test_the_notebook_bar_shows_the_end_of_the_run():
    p = gs.Pipeline(name="flights")
    p.link(p.add(gs.from_iterable(range(20))), p.add(gs.consumer(len)))
    bar = ProgressBar(p)
    assert bar.bar.value == 0.0 and "stopped" in bar.text.value
    p.run_sync()
    bar.update()
    assert bar.bar.value == 1.0 and bar.bar.bar_style == "success"
    assert "20/20 events" in bar.text.value and "<b>done</b>" in bar.text.value
    assert "flights" in bar.label.value
    bar.close()


# -- peek ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_peek_shows_what_a_running_stage_emitted_and_takes_nothing():
    gate, reached, out = anyio.Event(), anyio.Event(), []
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(gated(10, 30, gate)), name="src")
    double = p.add(gs.map(lambda x: 2 * x, name="double"))
    p.link(src, double, max_demand=5)
    p.link(double, p.add(gs.consumer(until(out, 10, reached), name="sink")), max_demand=5)
    assert p.peek("double") == [] and p.peek(src) == []  # they keep them from now on
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await reached.wait()
        assert p.peek("double", 3) == [14, 16, 18]
        assert p.peek(src, 2) == [8, 9]  # (a stage or its name)
        gate.set()
    assert out == [2 * e for e in range(30)]  # nothing taken from the sink
    assert p.peek("double", 200) == [2 * e for e in range(30)]
    gs.check_balance(p)


def test_a_peeked_chain_gives_the_same_events_and_stops_costing_when_dropped():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(500)), name="src")
    plus = p.add(gs.producer_consumer(lambda events: [e + 1 for e in events]), name="plus")
    out = []
    p.link(src, plus, max_demand=7)
    p.link(plus, p.add(gs.consumer(out.extend)), max_demand=3)
    proc = p._procs["plus"]
    fused = proc.fits_loop
    p.peek("plus")
    assert not proc.fits_loop  # every list goes through what keeps them
    p.run_sync()
    assert out == list(range(1, 501)) and p.peek("plus", 2) == [499, 500]
    peeking.stop_peeking(p._procs["plus"])
    assert p._procs["plus"].fits_loop == fused and "_dispatch" not in vars(p._procs["plus"])


def test_peek_refuses_what_it_cannot_show():
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable([1]), name="src"), p.add(gs.consumer(len, name="sink")))
    with pytest.raises(ValueError, match="peek: stage 'sink' is a consumer: it emits no events"):
        p.peek("sink")
    with pytest.raises(ValueError, match="peek: n must be an int >= 0, got -1"):
        p.peek("src", -1)
    with pytest.raises(ValueError, match="peek: no stage named 'nope'"):
        p.peek("nope")
