"""Every row of docs/errors.md, run: the error type and message a user sees.

The table is the source: each row's id names a case here; the case does what the row's
second column says; the test checks the exception's type against the third column and
that the fourth column's message is in what the user reads. A row without a case, or a
case without a row, fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import anyio
import pytest
from IPython.core.interactiveshell import InteractiveShell

import genstage_nb as gs

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def table_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(
            r"\|\s*`([a-z0-9-]+)`\s*\|.*\|\s*(\w[\w ()]*?)\s*\|\s*`(.+)`\s*\|\s*$", line
        )
        if match:
            case, error, message = match.groups()
            assert case not in rows, f"row {case} twice in {DOC.name}"
            rows[case] = (error, message.replace("\\|", "|"))
    return rows


def three_stages():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(10)), name="numbers")
    mid = p.add(gs.producer_consumer(lambda events: events), name="double")
    sink = p.add(gs.consumer(lambda events: None), name="sink")
    return p, src, mid, sink


def link(**options):
    p, src, _, sink = three_stages()
    return p.link(src, sink, **options)


def partitioned(**link_options):
    p = gs.Pipeline()
    src = p.add(
        gs.from_iterable(
            range(10),
            dispatcher=gs.PartitionDispatcher(
                partitions=["even", "odd"], hash=lambda e: (e, "even")
            ),
        ),
        name="numbers",
    )
    sink = p.add(gs.consumer(lambda events: None), name="sink")
    return p, src, sink


def run_and_unwrap(p):
    """Run; return what the user reads: the PipelineError and its cause."""
    try:
        p.run_sync()
    except gs.PipelineError as error:
        return error
    raise AssertionError("the run did not fail")


# -- runtime cases -------------------------------------------------------------------


def hook_returns_a_number():
    p = gs.Pipeline()
    p.link(
        p.add(gs.from_iterable(range(10)), name="numbers"),
        p.add(gs.producer_consumer(lambda events: 5, name="count")),
    )
    p.link(p.stages["count"], p.add(gs.consumer(lambda events: None, name="sink")))
    error = run_and_unwrap(p)
    (failure,) = p.failures["count"]
    assert sorted(failure.events) == list(range(10))  # the batch is kept with the failure
    return error


def hash_returns_an_unknown_partition():
    p = gs.Pipeline()
    src = p.add(
        gs.from_iterable(
            range(4), dispatcher=gs.PartitionDispatcher(partitions=2, hash=lambda e: (e, 7))
        ),
        name="numbers",
    )
    p.link(src, p.add(gs.consumer(lambda events: None, name="sink")), partition=0)
    error = run_and_unwrap(p)
    gs.check_balance(p)  # the events it could not place are accounted for
    return error


def handler_raises():
    def divide(events):
        return [1 / e for e in events]

    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable([1, 0]), name="numbers"), p.add(gs.consumer(divide)))
    error = run_and_unwrap(p)
    assert p.failures["divide"][0].events == [1, 0]
    return error


def emit_outside_a_pipeline():
    gs.Producer(name="loose").emit([1])


def call_a_stopped_stage():
    p, src, _, sink = three_stages()
    p.link(src, sink)
    p.unlink(p.link(src, p.stages["double"]))  # idle stages do not end a run: remove it
    p._remove("double")
    p.run_sync()
    anyio.run(p.stages["sink"].call, "hello")


def stream_of_a_consumer():
    p, *_ = three_stages()
    p.stream("sink")


def iterate_a_stream_of_an_idle_pipeline():
    p, *_ = three_stages()

    async def first():
        async for event in p.stream("double"):
            return event

    anyio.run(first)


def run_sync_in_a_running_loop():
    p = gs.Pipeline()
    p.add(gs.from_iterable([1]), name="numbers")

    async def cell():
        p.run_sync()

    anyio.run(cell)


def start_without_a_loop():
    p, *_ = three_stages()
    p.start()


def a_cycle():
    p = gs.Pipeline()
    a = p.add(gs.producer_consumer(lambda events: events), name="a")
    b = p.add(gs.producer_consumer(lambda events: events), name="b")
    p.link(a, b)
    p.link(b, a)


def run_without_consumers():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(10)), name="numbers")
    p.link(src, p.add(gs.consumer(lambda events: None), name="sink"))
    p.add(gs.from_iterable(range(10)), name="lonely")
    p.link(src, p.add(gs.producer_consumer(lambda events: events), name="middle"))
    p.run_sync()


def run_without_producers():
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable(range(10)), name="numbers"), p.add(gs.consumer(len), name="s"))
    p.add(gs.consumer(lambda events: None), name="orphan")
    p.run_sync()


def run_while_started():
    p, src, mid, sink = three_stages()
    p.link(src, mid)
    p.link(mid, sink)

    async def cell():
        p.start()
        try:
            await p.run()
        except RuntimeError as error:
            return error
        finally:
            await p.stop(timeout=0)

    return asyncio.run(cell())


def consumer_generator():
    class Count(gs.Consumer):
        def handle_events(self, events):
            yield len(events)

    gs.Pipeline().add(Count(), name="count")


def run_while_running():
    p, src, mid, sink = three_stages()
    p.link(src, mid)
    p.link(mid, sink)

    async def twice():
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            await anyio.sleep(0)
            try:
                await p.run()
            except RuntimeError as error:
                return error
            finally:
                await p.stop(timeout=0)

    return anyio.run(twice)


def add_again_while_running(new):
    """``p.add`` of a running stage's name with ``new(name=...)``: the error."""
    p, src, mid, sink = three_stages()
    p.link(src, mid)
    p.link(mid, sink)

    async def cell():
        p.start()
        try:
            p.add(new(), name="double")
        except ValueError as error:
            return error
        finally:
            await p.stop(timeout=0)

    return anyio.run(cell)


def add_again_without_room_for_links():
    p, src, mid, sink = three_stages()
    p.link(src, mid)
    return p.add(gs.consumer(print), name="numbers")


def demand_mode_unknown():
    p, src, *_ = three_stages()
    src.demand_mode = "later"


def square(events):
    return [e * e for e in events]


def unpicklable_for_a_process_pool():
    import concurrent.futures

    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        gs.Pipeline().add(gs.producer_consumer(lambda events: events, name="lambda", executor=pool))


# -- notebook cases ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "genstage_nb")
    return sh


def magic(line, cell=None, before=()):
    def run(shell):
        shell.user_ns["p"] = gs.Pipeline()
        shell.user_ns["not_a_pipeline"] = 42
        shell.user_ns["gs"] = gs
        shell.run_cell_magic(
            "stage", "numbers --pipeline p", "def handle_demand(demand):\n    return []"
        )
        for earlier, body in before:
            shell.run_cell_magic("stage", earlier, body)
        if cell is None:
            shell.run_line_magic("pipeline", line)
        else:
            shell.run_cell_magic("stage", line, cell)

    return run


SINK = "def handle_events(events):\n    pass"


def pause_call(verb, name):
    def call():
        p = gs.Pipeline(on_failure="pause")
        p.add(gs.consumer(print, name="sink"))
        return getattr(p, verb)(name)

    return call


def skip_a_stage_paused_in_init():
    class Sink(gs.Consumer):
        def init(self):
            raise OSError("no database")

        def handle_events(self, events):
            pass

    p = gs.Pipeline(on_failure="pause")
    p.link(p.add(gs.from_iterable(range(3)), name="src"), p.add(Sink(name="sink")))
    seen = []

    async def run():
        with contextlib.suppress(gs.PipelineError):  # stopped while paused: it failed
            await p.run()

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while not p.running:
                await anyio.lowlevel.checkpoint()
            await p.wait_paused("sink")
            try:
                p.skip("sink")
            except ValueError as exc:
                seen.append(exc)
            p.stop()

    anyio.run(main)
    return seen[0]


def _flow_run_in_loop():
    async def cell():
        gs.Flow.from_iterable([1]).run()

    anyio.run(cell)


CASES = {
    "flow-not-iterable": lambda: gs.Flow.from_iterable(5),
    "flow-step-not-callable": lambda: gs.Flow.from_iterable([1]).map(3),
    "flow-step-option": lambda: gs.Flow.from_iterable([1]).map(str, buffer_size=-1).run(),
    "flow-stages": lambda: gs.Flow.from_iterable([1]).partition(stages=0),
    "flow-window": lambda: gs.Flow.from_iterable([1]).partition(window=60),
    "flow-on-trigger": lambda: gs.Flow.from_iterable([1]).on_trigger(print),
    "flow-window-size": lambda: gs.Window.fixed(0, time=str),
    "flow-window-time-kind": lambda: (
        gs.Flow.from_iterable([1])
        .partition(
            window=gs.Window.fixed(__import__("datetime").timedelta(hours=1), time=lambda e: e)
        )
        .count()
        .run()
    ),
    "flow-join-how": lambda: gs.Flow.window_join(
        gs.Flow.from_iterable([1]),
        gs.Flow.from_iterable([1]),
        left_key=str,
        right_key=str,
        how="cross",
    ),
    "flow-run-in-loop": lambda: _flow_run_in_loop(),
    # Pipeline(...)
    "pipeline-on-failure": lambda: gs.Pipeline(on_failure="ignore"),
    "pipeline-metrics-interval": lambda: gs.Pipeline(metrics_interval=0),
    "pipeline-slow-handler": lambda: gs.Pipeline(slow_handler=-1),
    "pipeline-name": lambda: gs.Pipeline(name=5),
    # stage options
    "stage-unknown-option": lambda: gs.consumer(print, bufer_size=10),
    "stage-name": lambda: gs.Producer(name=""),
    "stage-restart": lambda: gs.Consumer(name="sink", restart="always"),
    "stage-max-restarts": lambda: gs.Consumer(name="sink", max_restarts=-1),
    "stage-max-seconds": lambda: gs.Consumer(name="sink", max_seconds=0),
    "stage-buffer-size": lambda: gs.Producer(name="numbers", buffer_size=-5),
    "stage-buffer-keep": lambda: gs.Producer(name="numbers", buffer_keep="middle"),
    "stage-demand": lambda: gs.Producer(name="numbers", demand="later"),
    "stage-total": lambda: gs.Producer(name="numbers", total=-3),
    "peek-consumer": lambda: _one_link().peek("sink"),
    "peek-n": lambda: _one_link().peek("src", n=-1),
    "stage-dispatcher-class": lambda: gs.Producer(
        name="numbers", dispatcher=gs.PartitionDispatcher
    ),
    "stage-dispatcher": lambda: gs.Producer(name="numbers", dispatcher="broadcast"),
    "stage-executor": lambda: gs.producer_consumer(square, executor="pool"),
    "stage-concurrency": lambda: gs.producer_consumer(square, concurrency=0),
    "stage-concurrency-sync": lambda: gs.Pipeline().add(
        gs.producer_consumer(square, concurrency=4)
    ),
    "map-concurrency-sync": lambda: gs.Pipeline().add(gs.map(abs, concurrency=4)),
    "stage-rate-limit": lambda: gs.Producer(name="numbers", rate_limit=(0, 1.0)),
    "stage-retry": lambda: gs.Consumer(name="sink", retry=3),
    "retry-attempts": lambda: gs.Retry(attempts=0),
    "retry-on": lambda: gs.Retry(on=(ValueError, "timeout")),
    "retry-backoff": lambda: gs.Retry(backoff=-1),
    "retry-backoff-nan": lambda: gs.Retry(backoff=float("nan")),
    "retry-on-interrupt": lambda: gs.Retry(on=KeyboardInterrupt),
    "dispatcher-max-demand": lambda: gs.DemandDispatcher(max_demand="x"),
    "consumer-generator": consumer_generator,
    "retry-max-backoff": lambda: gs.Retry(backoff=5, max_backoff=1),
    "batcher-size": lambda: gs.batcher(0),
    "batcher-timeout": lambda: gs.batcher(10, timeout=0),
    "executor-pickle": unpicklable_for_a_process_pool,
    "partition-count": lambda: gs.PartitionDispatcher(partitions=0),
    "partition-names": lambda: gs.PartitionDispatcher(partitions=["a", "a"]),
    "partition-names-hash": lambda: gs.PartitionDispatcher(partitions=["even", "odd"]),
    "partition-hash": lambda: gs.PartitionDispatcher(partitions=2, hash=5),
    "wrap-not-a-function": lambda: gs.consumer(5),
    "from-iterable": lambda: gs.from_iterable(5),
    # building the graph
    "add-not-a-stage": lambda: gs.Pipeline().add(print),
    "add-again-links": add_again_without_room_for_links,
    "add-again-kind": lambda: add_again_while_running(lambda: gs.consumer(print)),
    "add-again-option": lambda: add_again_while_running(
        lambda: gs.producer_consumer(lambda e: e, buffer_size=5)
    ),
    "add-twice": lambda: gs.Pipeline().add(three_stages()[1]),
    "link-max-demand": lambda: link(max_demand=0),
    "link-max-demand-type": lambda: link(max_demand="10"),
    "link-min-demand": lambda: link(max_demand=10, min_demand=10),
    "link-min-demand-negative": lambda: link(min_demand=-1),
    "link-cancel": lambda: link(cancel="sometimes"),
    "link-selector": lambda: (
        lambda p: p.link(
            p.add(gs.from_iterable([], dispatcher=gs.BroadcastDispatcher)),
            p.add(gs.consumer(print)),
            selector=5,
        )
    )(gs.Pipeline()),
    "link-consumer-as-producer": lambda: (lambda p, s, m, k: p.link(k, m))(*three_stages()),
    "link-producer-as-consumer": lambda: (lambda p, s, m, k: p.link(m, s))(*three_stages()),
    "link-itself": lambda: (lambda p, s, m, k: p.link(m, m))(*three_stages()),
    "link-twice": lambda: (lambda p, s, m, k: (p.link(s, m), p.link(s, m)))(*three_stages()),
    "link-unknown-name": lambda: three_stages()[0].link("numbers", "sinkk"),
    "link-foreign-stage": lambda: three_stages()[0].link("numbers", gs.consumer(print)),
    "link-partition-missing": lambda: (lambda p, s, k: p.link(s, k))(*partitioned()),
    "link-partition-unknown": lambda: (lambda p, s, k: p.link(s, k, partition="prime"))(
        *partitioned()
    ),
    "link-partition-taken": lambda: (
        lambda p, s, k: (
            p.link(s, k, partition="even"),
            p.link(s, p.add(gs.consumer(print)), partition="even"),
        )
    )(*partitioned()),
    "link-partition-not-partitioned": lambda: link(partition=0),
    "link-selector-not-broadcast": lambda: link(selector=bool),
    "link-cycle": lambda: a_cycle(),
    "unlink-not-a-subscription": lambda: gs.Pipeline().unlink("numbers"),
    "unlink-foreign": lambda: gs.Pipeline().unlink(link()),
    "tune-max-demand": lambda: link().tune(max_demand=0),
    "ask-n": lambda: link().ask(0),
    "ask-not-running": lambda: link().ask(5),
    # running
    "start-no-loop": start_without_a_loop,
    "run-sync-in-loop": run_sync_in_a_running_loop,
    "run-twice": run_while_running,
    "run-while-started": run_while_started,
    "run-no-consumer": run_without_consumers,
    "run-no-producer": run_without_producers,
    "stop-timeout": lambda: gs.Pipeline().stop(timeout=-1),
    "stop-timeout-nan": lambda: gs.Pipeline().stop(timeout=float("nan")),
    "hook-result": hook_returns_a_number,
    "hook-raises": handler_raises,
    "partition-hash-result": hash_returns_an_unknown_partition,
    "emit-outside": emit_outside_a_pipeline,
    "call-stopped": call_a_stopped_stage,
    "stream-consumer": stream_of_a_consumer,
    "stream-idle": iterate_a_stream_of_an_idle_pipeline,
    "demand-mode": demand_mode_unknown,
    "resume-unknown": pause_call("resume", "nope"),
    "resume-not-paused": pause_call("skip", "sink"),
    "skip-init": skip_a_stage_paused_in_init,
    # notebook
    "magic-resume-which": magic("resume --pipeline p"),
    "magic-resume-not-paused": magic("skip numbers --pipeline p"),
    "magic-kind": magic("sink --kind sink --pipeline p", SINK),
    "magic-subscribe-to": magic("sink --subscribe-to numbrs --pipeline p", SINK),
    "magic-subscribe-self": magic("sink --subscribe-to sink --pipeline p", SINK),
    "magic-number": magic("sink --subscribe-to numbers --max-demand many --pipeline p", SINK),
    "magic-number-low": magic("sink --subscribe-to numbers --max-demand 0 --pipeline p", SINK),
    "magic-min-demand": magic(
        "sink --subscribe-to numbers --max-demand 10 --min-demand 10 --pipeline p", SINK
    ),
    "magic-cancel": magic("sink --subscribe-to numbers --cancel never --pipeline p", SINK),
    "magic-no-hook": magic("sink --pipeline p", "x = 1"),
    "magic-pipeline-var": magic("sink --pipeline q", SINK),
    "magic-pipeline-type": magic("sink --pipeline not_a_pipeline", SINK),
    "magic-command": magic("begin --pipeline p"),
    "magic-syntax-error": magic(
        "sink --pipeline p", "def handle_events(events):\n    return [e for e in events\n"
    ),
    "magic-cell-raises": magic(
        "sink --pipeline p", "def handle_events(events):\n    pass\nprint(undefined_name)\n"
    ),
    "magic-consumer-subscribed": magic(
        "more --subscribe-to sink --pipeline p",
        SINK,
        before=[
            (
                "sink --pipeline p",
                "class Sink(gs.Consumer):\n    def handle_events(self, events):\n        pass",
            )
        ],
    ),
}

ROWS = table_rows()


def test_every_row_has_a_case_and_every_case_a_row():
    assert sorted(ROWS) == sorted(CASES)


def _one_link() -> gs.Pipeline:
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable([1]), name="src"), p.add(gs.consumer(len, name="sink")))
    return p


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_the_user_sees(case, shell):
    error, message = ROWS[case]
    fn = CASES[case]
    try:
        result = fn(shell) if case.startswith("magic-") else fn()
    except Exception as exc:
        seen = exc
    else:
        assert isinstance(result, BaseException), f"{case}: nothing was raised"
        seen = result
    text = str(seen)
    kind = type(seen).__name__
    if isinstance(seen, gs.PipelineError):
        cause = seen.__cause__
        kind = f"PipelineError ({type(cause).__name__})"
        text += "\n" + str(cause)
    assert kind == error, f"{case}: {kind} raised, the table says {error}"
    assert message in text, f"{case}: the table says {message!r}, the user sees {text!r}"


def test_concurrency_above_one_on_an_async_hook_or_with_an_executor_is_accepted():
    from concurrent.futures import ThreadPoolExecutor

    async def fetch(events):
        return events

    p = gs.Pipeline()
    p.add(gs.producer_consumer(fetch, concurrency=4))
    with ThreadPoolExecutor(2) as pool:
        p.add(gs.producer_consumer(square, concurrency=4, executor=pool), name="threads")
    assert list(p.stages) == ["fetch", "threads"]
