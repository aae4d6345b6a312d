"""Stopping under load, kernel interrupts and outer cancellation (asyncio and trio)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading

import anyio
import pytest
from helpers import Counter, live_tasks

import genstage_nb as gs

pytestmark = pytest.mark.anyio


def loaded_pipeline(limit=None):
    """A busy pipeline: an endless producer fanned out to four consumers, two through
    producer-consumers, with big demand, sync and async hooks."""
    p = gs.Pipeline()
    src = p.add(Counter(limit=limit), name="source")
    seen: dict[str, list] = {}
    for i in range(4):
        got = seen.setdefault(f"sink{i}", [])

        async def async_sink(events, _seen=got):
            _seen.extend(events)
            await anyio.sleep(0)

        sink = p.add(gs.consumer(async_sink if i % 2 else got.extend), name=f"sink{i}")
        if i < 2:
            mid = p.add(
                gs.producer_consumer(lambda events: [e * 2 for e in events]), name=f"double{i}"
            )
            p.link(src, mid, max_demand=5000)
            p.link(mid, sink, max_demand=2000)
        else:
            p.link(src, sink, max_demand=10000)
    return p, seen


async def test_stop_under_heavy_load_drains_within_a_bound_and_loses_nothing():
    before = await live_tasks()
    p, seen = loaded_pipeline()
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(30):
            while sum(map(len, seen.values())) < 200_000:
                await anyio.sleep(0)
            # No forced cancellation: the graceful stop ends on its own, quickly.
            await p.stop(timeout=None)
    assert not p.running and set(p.status.values()) == {"done"}
    gs.check_balance(p)
    made = p.metrics.totals().loc["source", "events_out"]
    assert sum(map(len, seen.values())) == made
    assert await live_tasks() == before


async def test_stop_then_run_again_is_fresh():
    p, seen = loaded_pipeline(limit=50_000)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await p.stop()
        await p.stop()  # twice: harmless
    for lst in seen.values():
        lst.clear()
    await p.run()
    assert sum(map(len, seen.values())) == 50_000
    gs.check_balance(p)


class Interrupting(gs.Consumer):
    """Raises KeyboardInterrupt from its hook on the ``at``-th batch, as a kernel
    interrupt does when it lands while the hook runs."""

    def __init__(self, at=3, **options):
        super().__init__(**options)
        self.at = at
        self.batches = 0

    def handle_events(self, events):
        self.batches += 1
        if self.batches == self.at:
            raise KeyboardInterrupt


async def test_a_keyboard_interrupt_in_a_hook_stops_every_stage_and_is_raised(caplog):
    before = await live_tasks()
    p = gs.Pipeline("kb")
    src = p.add(Counter(), name="endless")
    mid = p.add(gs.producer_consumer(lambda events: events), name="mid")
    sink = p.add(Interrupting(), name="sink")
    p.link(src, mid, max_demand=10)
    p.link(mid, sink, max_demand=10)
    with caplog.at_level(logging.WARNING, logger="genstage_nb"), pytest.raises(KeyboardInterrupt):
        await p.run()
    assert "pipeline kb: interrupted in stage 'sink'" in caplog.text
    assert not p.running and set(p.status.values()) == {"done"}
    assert p.failures == {} and p.error is None  # an interrupt is not a stage failure
    assert not [t for t in threading.enumerate() if t.name.startswith("genstage_nb")]
    assert await live_tasks() == before
    # The same pipeline runs again from fresh runtime state.
    sink.at = -1
    src.limit = 30
    await p.run()
    assert p.status == {"endless": "done", "mid": "done", "sink": "done"}


async def test_an_async_hook_interrupted_stops_the_pipeline():
    class AsyncInterrupting(gs.Consumer):
        async def handle_events(self, events):
            await anyio.sleep(0)
            raise KeyboardInterrupt

    p = gs.Pipeline()
    p.link(p.add(Counter()), p.add(AsyncInterrupting()))
    with pytest.raises(KeyboardInterrupt):
        await p.run()
    assert not p.running


async def test_outer_cancellation_under_load_leaves_nothing_behind():
    before = await live_tasks()
    p, seen = loaded_pipeline()
    with anyio.move_on_after(30) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            while sum(map(len, seen.values())) < 50_000:
                await anyio.sleep(0)
            scope.cancel()
    assert scope.cancelled_caught
    assert not p.running and "running" not in p.status.values()
    assert await live_tasks() == before


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_interrupt_in_a_background_pipeline_stops_it_and_spares_the_kernel(capsys):
    p = gs.Pipeline("bg")
    p.link(p.add(Counter(), name="endless"), p.add(Interrupting(), name="sink"), max_demand=10)
    p.start()
    await p.wait()  # returns: the interrupt was the pipeline's, not this task's
    assert not p.running and set(p.status.values()) == {"done"}
    assert "genstage_nb: pipeline bg interrupted: every stage stopped" in capsys.readouterr().err


SIGINT_SCRIPT = """
    import itertools, signal, sys, threading
    import genstage_nb as gs

    batches = itertools.count()

    def sink(events):
        if next(batches) == 50:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C or a kernel interrupt sends

    p = gs.Pipeline()
    mid = p.add(gs.producer_consumer(lambda events: events), name="mid")
    p.link(p.add(gs.producer(lambda demand: list(range(demand))), name="endless"), mid, max_demand=10)
    p.link(mid, p.add(gs.consumer(sink), name="sink"), max_demand=10)
    try:
        p.run_sync(backend=sys.argv[1])
    except KeyboardInterrupt:
        print("interrupted")
    print(p.running, sorted(set(p.status.values())), [t.name for t in threading.enumerate()])
    again = []
    q = gs.Pipeline()
    q.link(q.add(gs.from_iterable(range(5))), q.add(gs.consumer(again.extend)))
    q.run_sync(backend=sys.argv[1])
    print(again)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_real_sigint_during_run_sync_stops_the_pipeline_cleanly(backend):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SIGINT_SCRIPT), backend],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "interrupted",
        "False ['done'] ['MainThread']",
        "[0, 1, 2, 3, 4]",
    ]
