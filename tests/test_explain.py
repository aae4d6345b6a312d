"""Explain a running pipeline: the three times, the bottleneck, the advice, and stall
notices; on asyncio and trio.

The workloads are real work (awaited sleeps, CPU spins) of known cost, so the stage
that limits each pipeline is known; the assertions are about which stage and which
option, never about how long anything took."""

from __future__ import annotations

import time

import anyio
import pytest
from helpers import Forwarder, run_linking_later

import genstage_nb as gs

pytestmark = pytest.mark.anyio


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def fast_sink(name="sink"):
    return gs.consumer(lambda events: None, name=name)


def three(p, middle, n=400, max_demand=10, producer=None):
    src = p.add(producer or gs.from_iterable(range(n)), name="src")
    p.add(middle)
    p.link(src, middle, max_demand=max_demand)
    p.link(middle, p.add(fast_sink()), max_demand=max_demand)


async def test_a_per_batch_async_cost_is_named_with_concurrency_and_max_demand():
    class Lookup(gs.ProducerConsumer):
        async def handle_events(self, events):
            await anyio.sleep(0.005)  # a round trip per batch
            return events

    p = gs.Pipeline(metrics_interval=0.02)
    three(p, Lookup(name="lookup"), n=300)
    await p.run()
    explanation = p.explain()
    assert explanation.bottleneck == p.bottleneck() == "lookup"
    advice = " ".join(explanation.advice)
    assert "raise its `concurrency` (now 1)" in advice
    assert "`max_demand` of the link src -> lookup (now 10)" in advice
    stages = explanation.stages
    assert stages.loc["lookup", "busy"] > stages.loc["src", "busy"]
    assert stages.loc["src", "backpressured"] > stages.loc["src", "idle"]
    assert stages.loc["sink", "idle"] > stages.loc["sink", "busy"]


async def test_a_cpu_bound_sync_stage_is_advised_an_executor():
    def crunch(events):
        spin(0.002)
        return events

    p = gs.Pipeline(metrics_interval=0.02)
    three(p, gs.producer_consumer(crunch, name="crunch"), n=400)
    await p.run()
    explanation = p.explain()
    assert explanation.bottleneck == "crunch"
    assert any("move it to an executor" in a for a in explanation.advice)


async def test_a_slow_producer_is_the_bottleneck():
    class Slow(gs.Producer):
        def init(self):
            self.n = 0

        async def handle_demand(self, demand):
            await anyio.sleep(0.003)  # slow per call, whatever the demand
            events = list(range(self.n, min(self.n + demand, 200)))
            self.n += len(events)
            if self.n >= 200:
                self.finish()
            return events

    p = gs.Pipeline(metrics_interval=0.02)
    three(p, gs.producer_consumer(lambda e: e, name="pass"), producer=Slow(), max_demand=4)
    await p.run()
    explanation = p.explain()
    assert explanation.bottleneck == "src"
    assert any("The producer 'src' is the bottleneck" in a for a in explanation.advice)


async def test_a_slow_sink_is_the_bottleneck():
    p = gs.Pipeline(metrics_interval=0.02)
    src = p.add(gs.from_iterable(range(300)), name="src")
    sink = p.add(gs.consumer(lambda events: spin(0.002), name="slow_sink"))
    p.link(src, sink, max_demand=10)
    await p.run()
    assert p.bottleneck() == "slow_sink"


async def test_the_three_times_add_up_to_at_most_one_per_stage_and_sample():
    class Lookup(gs.ProducerConsumer):
        async def handle_events(self, events):
            await anyio.sleep(0.001)
            return events

    p = gs.Pipeline(metrics_interval=0.01)
    three(p, Lookup(name="lookup", concurrency=2), n=300, max_demand=6)
    await p.run()
    frame = p.metrics.frame()
    times = frame[frame.metric.isin(["busy", "backpressured", "idle"])]
    per_sample = times.groupby(["time", "stage"]).value.agg(["sum", "min", "max"])
    assert len(per_sample) >= 6
    assert (per_sample["sum"] <= 1.0 + 1e-9).all()
    assert (per_sample["min"] >= 0).all() and (per_sample["max"] <= 1).all()


async def test_no_bottleneck_before_two_samples_and_the_text_and_markdown():
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(10)), name="src"), p.add(fast_sink()))
    assert p.bottleneck() is None
    explanation = p.explain()
    assert explanation.bottleneck is None and explanation.advice == []
    assert "No bottleneck yet" in str(explanation)
    assert "No bottleneck yet" in explanation._repr_markdown_()
    await p.run()
    explanation = p.explain()
    assert explanation.bottleneck in ("src", "sink")
    assert f"Bottleneck: `{explanation.bottleneck}`" in explanation._repr_markdown_()
    assert str(explanation).startswith(f"Bottleneck: {explanation.bottleneck}")


# -- stalls ------------------------------------------------------------------------------


async def wait_for_stall(p, run=None):
    """Run ``p`` until its first Stall notice, then stop it; return the notice."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(run or p.run)
        with anyio.fail_after(10):
            while p._stall_watch is None:
                await anyio.lowlevel.checkpoint()
            await p._stall_watch.seen.wait()
        await p.stop(timeout=0)
    (stall,) = [w for w in p.warnings if isinstance(w, gs.Stall)]
    return stall


async def test_a_producer_that_returns_nothing_is_named():
    p = gs.Pipeline(stall_after=0.05, metrics_interval=None)
    src = p.add(gs.producer(lambda demand: None, name="silent"))
    p.link(src, p.add(Forwarder(name="sink")), max_demand=10)
    stall = await wait_for_stall(p)
    assert stall.stage == "silent"
    assert stall.subscriptions == ["silent -> sink"]
    assert "asked for 10 events and sends none" in stall.reason
    assert "'silent' sends no events while silent -> sink waits" in str(stall)


async def test_a_manual_consumer_that_stopped_asking_is_named():
    class Once(gs.Consumer):
        def handle_subscribe(self, subscription):
            subscription.ask(5)
            return "manual"

        def handle_events(self, events):
            pass

    p = gs.Pipeline(stall_after=0.05, metrics_interval=None)
    src = p.add(gs.from_iterable(range(100), dispatcher=gs.BroadcastDispatcher), name="src")
    p.link(src, p.add(Once(name="once")))
    p.link(src, p.add(Forwarder(name="sink")), max_demand=10)
    stall = await wait_for_stall(p)
    assert stall.stage == "src"
    assert "'once' has manual demand and asks for no more" in stall.reason


async def test_a_partition_without_consumer_is_named():
    p = gs.Pipeline(stall_after=0.05, metrics_interval=None)
    dispatcher = gs.PartitionDispatcher(partitions=2, hash=lambda e: e % 2)
    src = p.add(gs.from_iterable(range(100), dispatcher=dispatcher), name="src")
    p.link(src, p.add(Forwarder(name="evens")), partition=0, max_demand=10)
    stall = await wait_for_stall(p)
    assert stall.stage == "src"
    assert "partition 1 has" in stall.reason and "no consumer" in stall.reason


async def test_demand_held_in_accumulate_mode_is_named():
    p = gs.Pipeline(stall_after=0.05, metrics_interval=None)
    src = p.add(gs.from_iterable(range(100), demand="accumulate"), name="src")
    p.link(src, p.add(Forwarder(name="sink")), max_demand=10)
    stall = await wait_for_stall(p)
    assert "demand='accumulate'" in stall.reason


async def test_a_producer_without_consumer_is_named_when_started_anyway():
    p = gs.Pipeline(stall_after=0.05, metrics_interval=None)
    p.add(gs.producer(lambda demand: None, name="lonely"))
    stall = await wait_for_stall(p, lambda: run_linking_later(p))
    assert stall.stage == "lonely"
    assert "'lonely' has no consumer" in stall.reason


async def test_no_stall_is_reported_while_events_flow():
    class Paced(gs.ProducerConsumer):
        async def handle_events(self, events):
            await anyio.sleep(0.002)  # slower than stall_after / 10, never stalled
            return events

    p = gs.Pipeline(stall_after=0.05, metrics_interval=None)
    three(p, Paced(name="paced"), n=200, max_demand=4)
    await p.run()
    assert not [w for w in p.warnings if isinstance(w, gs.Stall)]


async def test_a_slow_hook_is_no_stall():
    class Slow(gs.ProducerConsumer):
        async def handle_events(self, events):
            await anyio.sleep(0.2)  # four times stall_after in one hook: it is at work
            return events

    p = gs.Pipeline(stall_after=0.05, metrics_interval=None)
    three(p, Slow(name="slow"), n=4, max_demand=2)
    await p.run()
    assert not [w for w in p.warnings if isinstance(w, gs.Stall)]


def test_stall_after_is_checked():
    with pytest.raises(ValueError, match="Pipeline: stall_after must be a number of seconds > 0"):
        gs.Pipeline(stall_after=0)


def test_pipeline_explain_magic_shows_the_explanation(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "genstage_nb")
    p = shell.user_ns["p"] = gs.Pipeline(metrics_interval=0.01)
    src = p.add(gs.from_iterable(range(200)), name="src")
    p.link(src, p.add(gs.consumer(lambda events: spin(0.001), name="sink")), max_demand=10)
    p.run_sync()
    capsys.readouterr()
    assert shell.run_line_magic("pipeline", "explain --pipeline p") is None
    shown = capsys.readouterr().out
    assert shown.startswith("Bottleneck: sink")  # (a notebook shows it as Markdown)
    assert p.explain().bottleneck == "sink"
    shell.user_ns.pop("p")


async def test_the_live_graph_outlines_the_bottleneck():
    p = gs.Pipeline(metrics_interval=0.01)
    src = p.add(gs.from_iterable(range(200)), name="src")
    p.link(src, p.add(gs.consumer(lambda events: spin(0.001), name="sink")), max_demand=10)
    await p.run()
    fig = p.draw(busy=True)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["idle", "busy", "bottleneck: sink"]
    edge_labels = [t.get_text() for t in fig.axes[0].texts if "max_demand" in t.get_text()]
    (label,) = edge_labels
    assert label.startswith("max_demand=10\npending=")
