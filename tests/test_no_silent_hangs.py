"""No silent hangs: abandoned streams unsubscribe, run() refuses producers without a
consumer, links refuse cycles, and a %%stage cell's own errors show as cell errors."""

from __future__ import annotations

import gc
import re

import anyio
import pytest
from helpers import Forwarder
from IPython.core.interactiveshell import InteractiveShell

import genstage_nb as gs

pytestmark = pytest.mark.anyio

DISPATCHERS = {"broadcast": gs.BroadcastDispatcher, "demand": gs.DemandDispatcher}


def numbers_and_sink(dispatcher, n=3000):
    p = gs.Pipeline(metrics_interval=None)
    src = p.add(gs.from_iterable(range(n), dispatcher=DISPATCHERS[dispatcher]), name="numbers")
    sink = p.add(Forwarder(name="sink"))
    p.link(src, sink, max_demand=100)
    return p, src, sink


def expected(dispatcher, sink, stream_got, n=3000):
    if dispatcher == "broadcast":
        assert sink.events == list(range(n))  # every event, the stream's copy aside
    else:
        # The demand dispatcher shares the events out; what the stream had asked for
        # and not read is the stream's. The sink gets the rest, in order, once each.
        assert sink.events == sorted(set(sink.events))
        assert not set(sink.events) & set(stream_got)
        assert sink.events[-1] == n - 1


# -- 1. a stream left early unsubscribes ----------------------------------------------


async def take(events, got, n):
    async for event in events:
        got.append(event)
        if len(got) == n:
            break


async def run_beside(p, read):
    """Run ``p`` with ``read`` beside it; fail if the run does not end."""
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            tg.start_soon(read)


def check_taken(dispatcher, got, n):
    if dispatcher == "broadcast":
        assert got == list(range(n))  # the stream saw the first events
    else:
        assert len(got) <= n  # the sink may have taken the rest first


@pytest.mark.parametrize("dispatcher", sorted(DISPATCHERS))
async def test_a_stream_broken_out_of_unsubscribes_while_still_referenced(dispatcher):
    p, src, sink = numbers_and_sink(dispatcher)
    events = p.stream(src, max_demand=10)
    got = []

    async def read():
        await take(events, got, 25)  # `events` stays referenced after the break

    await run_beside(p, read)
    check_taken(dispatcher, got, 25)
    expected(dispatcher, sink, got)
    assert "stream" not in p.stages  # a stream serves one run


@pytest.mark.parametrize("dispatcher", sorted(DISPATCHERS))
async def test_a_stream_broken_out_of_and_dropped_unsubscribes(dispatcher):
    p, src, sink = numbers_and_sink(dispatcher)
    got = []
    streams = [p.stream(src, max_demand=10)]  # opened before the run

    async def read():
        await take(streams.pop(), got, 5)  # the loop holds the only reference

    await run_beside(p, read)
    check_taken(dispatcher, got, 5)
    expected(dispatcher, sink, got)


@pytest.mark.parametrize("dispatcher", sorted(DISPATCHERS))
async def test_a_stream_closed_by_async_with_unsubscribes(dispatcher):
    p, src, sink = numbers_and_sink(dispatcher)
    got = []
    stream = p.stream(src, max_demand=10)  # before the run: it sees the first event

    async def read():
        async with stream as events:
            await take(events, got, 30)

    await run_beside(p, read)
    check_taken(dispatcher, got, 30)
    expected(dispatcher, sink, got)


@pytest.mark.parametrize("dispatcher", sorted(DISPATCHERS))
async def test_a_stream_dropped_while_running_without_iterating_unsubscribes(dispatcher):
    p, src, sink = numbers_and_sink(dispatcher)
    events = p.stream(src, max_demand=10)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            while not sink.batches:  # the run is under way
                await anyio.lowlevel.checkpoint()
            del events
            gc.collect()
    expected(dispatcher, sink, [])


@pytest.mark.parametrize("dispatcher", sorted(DISPATCHERS))
async def test_a_stream_dropped_or_closed_before_the_run_leaves_no_consumer_behind(dispatcher):
    p, src, sink = numbers_and_sink(dispatcher)
    events = p.stream(src, max_demand=10)
    await events.aclose()
    assert list(p.stages) == ["numbers", "sink"]
    dropped = p.stream(src, max_demand=10)
    del dropped
    gc.collect()
    with anyio.fail_after(10):
        await p.run()
    expected(dispatcher, sink, [])


async def test_a_stream_that_ended_does_not_hold_the_next_run():
    p, src, sink = numbers_and_sink("broadcast", n=100)
    events = p.stream(src, max_demand=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        got = [e async for e in events]
    assert got == list(range(100))
    src2 = p.add(gs.from_iterable(range(100, 200), dispatcher=gs.BroadcastDispatcher))
    p.link(src2, sink)
    with anyio.fail_after(10):
        await p.run()  # the old stream's consumer is gone: nothing waits for it


# -- 2. run() refuses producers without a consumer -------------------------------------


async def test_run_refuses_producers_without_consumers_at_once_naming_them():
    inits = []

    class Noted(gs.Producer):
        def init(self):
            inits.append(self.name)

        def handle_demand(self, demand):
            return None

    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(10)), name="numbers")
    p.link(src, p.add(gs.consumer(lambda events: None), name="sink"))
    p.add(Noted(), name="lonely")
    middle = p.add(gs.producer_consumer(lambda events: events), name="middle")
    p.link(src, middle)
    with pytest.raises(ValueError) as info:
        await p.run()
    message = str(info.value)
    assert "'lonely' (producer), 'middle' (producer-consumer) have no consumer" in message
    assert "'numbers'" not in message and "'sink'" not in message
    assert inits == []  # refused before any stage ran
    assert not p.running


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_start_allows_a_producer_without_consumer_and_links_later():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(10)), name="numbers")
    p.start()
    sink = p.add(Forwarder(name="sink"))
    p.link(src, sink)
    with anyio.fail_after(10):
        await p.wait()
    assert sink.events == list(range(10))


# -- 3. links refuse cycles ------------------------------------------------------------


def relay(name):
    return gs.producer_consumer(lambda events: events, name=name)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_link_that_closes_a_cycle_is_refused_and_changes_nothing():
    p = gs.Pipeline()
    a, b, c = (p.add(relay(n)) for n in "abc")
    p.link(a, b)
    p.link(b, c)
    before = (list(p.graph.edges), list(p.subscriptions))
    with pytest.raises(ValueError, match=re.escape("would close the cycle a -> b -> c -> a")):
        p.link(c, a)
    with pytest.raises(ValueError, match=re.escape("would close the cycle b -> c -> b")):
        p.link(c, b)
    assert (list(p.graph.edges), list(p.subscriptions)) == before
    p.link(a, c)  # a second path is no cycle
    assert ("a", "c") in p.graph.edges


# -- 4. a %%stage cell's own errors, shown as cell errors ----------------------------------


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def shell(capsys):
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "genstage_nb")
    sh.user_ns["p"] = gs.Pipeline()
    capsys.readouterr()
    yield sh
    sh.user_ns.pop("p", None)


def run_cell(shell, capsys, text):
    result = shell.run_cell(text, store_history=True)
    out = capsys.readouterr()
    return result, ANSI.sub("", out.out + out.err)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_syntax_error_in_a_stage_cell_shows_the_cells_line_and_a_caret(shell, capsys):
    cell = "%%stage bad --pipeline p\ndef handle_events(events):\n    return [e for e in events\n"
    result, shown = run_cell(shell, capsys, cell)
    assert type(result.error_in_exec).__name__ == "SyntaxError"
    assert re.search(r"Cell In\[\d+\], line 3", shown)  # the line of the notebook cell
    assert "return [e for e in events" in shown
    assert re.search(r"\n\s+\^", shown)  # the caret
    assert "SyntaxError: '[' was never closed" in shown
    for ours in ("genstage_nb", "magics.py", "cells.py", "ast.py", "<unknown>", "Traceback"):
        assert ours not in shown
    assert "bad" not in shell.user_ns["p"].stages


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_name_error_at_a_stage_cells_top_level_shows_the_cells_frame_only(shell, capsys):
    cell = "%%stage bad --pipeline p\ndef handle_events(events):\n    pass\nprint(undefined_name)\n"
    result, shown = run_cell(shell, capsys, cell)
    assert type(result.error_in_exec).__name__ == "NameError"
    assert re.search(r"Cell In\[\d+\], line 4", shown)
    assert "----> 4 print(undefined_name)" in shown
    assert "NameError: name 'undefined_name' is not defined" in shown
    for ours in ("genstage_nb", "magics.py", "cells.py", "run_cell_magic"):
        assert ours not in shown


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_hook_failing_later_shows_the_cells_lines(shell, capsys):
    cell = "%%stage boom --kind producer_consumer --pipeline p\ndef handle_events(events):\n    return [1 / e for e in events]\n"
    run_cell(shell, capsys, cell)
    p = shell.user_ns["p"]
    p.link(p.add(gs.from_iterable([0]), name="zero"), p.stages["boom"])
    p.link(p.stages["boom"], p.add(gs.consumer(lambda events: None), name="sink"))
    with pytest.raises(gs.PipelineError):
        await p.run()
    (failure,) = p.failures["boom"]
    frames = [f for f in __import__("traceback").extract_tb(failure.exception.__traceback__)]
    assert frames[-1].line == "return [1 / e for e in events]"  # the cell's text, from linecache
    assert frames[-1].lineno == 3


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_message_says_a_returning_consumer_cell_becomes_a_producer_consumer(
    shell, capsys
):
    _, shown = run_cell(
        shell,
        capsys,
        "%%stage double --pipeline p\ndef handle_events(events):\n    return [2 * e for e in events]\n",
    )
    assert shown.strip() == (
        "stage 'double' (consumer) added; its handle_events returns events: it becomes a "
        "producer-consumer when a stage subscribes to it (or give --kind producer_consumer)"
    )
    _, shown = run_cell(
        shell, capsys, "%%stage sink --pipeline p\ndef handle_events(events):\n    print(events)\n"
    )
    assert shown.strip() == "stage 'sink' (consumer) added"
    _, shown = run_cell(
        shell,
        capsys,
        "%%stage twice --kind consumer --pipeline p\ndef handle_events(events):\n    return events\n",
    )
    assert shown.strip() == "stage 'twice' (consumer) added"
