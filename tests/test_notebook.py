"""The notebook layer through IPython's InteractiveShell: magics, hot swap, dashboard."""

from __future__ import annotations

import base64

import anyio
import pytest
from helpers import GATED_NUMBERS, NUMBERS_CELL
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import genstage_nb as gs
from genstage_nb.notebook.dashboard import Dashboard, DemandSliders


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "genstage_nb")
    sh.user_ns["p"] = gs.Pipeline()
    yield sh
    sh.user_ns.pop("p", None)


def stage(sh, line, cell):
    return sh.run_cell_magic("stage", line + " --pipeline p", cell)


NUMBERS = NUMBERS_CELL

SINK = """
def init(self):
    self.seen = []

def handle_events(self, events):
    self.seen.extend(events)
"""


def test_cells_define_stages_and_kinds_are_inferred(shell, capsys):
    shell.user_ns["LIMIT"] = 50
    stage(shell, "numbers", NUMBERS)
    stage(shell, "double", "def handle_events(events):\n    return [2 * e for e in events]")
    p = shell.user_ns["p"]
    assert p.stages["numbers"].kind == "producer"
    assert p.stages["double"].kind == "consumer"  # nobody subscribes to it yet
    p.link(p.stages["numbers"], p.stages["double"], max_demand=20)
    stage(shell, "sink --subscribe-to double --max-demand 10", SINK)
    # A subscriber turned the consumer cell into a producer-consumer.
    assert p.stages["double"].kind == "producer_consumer"
    # Its links were carried over; a defaulted min_demand still follows max_demand.
    sub = p.graph.edges["numbers", "double"]["subscription"]
    assert (sub.max_demand, sub.min_demand) == (20, 10)
    sub.tune(max_demand=100)
    assert sub.min_demand == 50
    stage(
        shell,
        "double --subscribe-to numbers --max-demand 8 --min-demand 2",
        "def handle_events(events):\n    return [2 * e for e in events]",
    )
    sub = p.graph.edges["numbers", "double"]["subscription"]
    assert (sub.max_demand, sub.min_demand) == (8, 2)
    assert p.graph.edges["double", "sink"]["subscription"].max_demand == 10
    p.run_sync()
    assert p.stages["sink"].seen == [2 * e for e in range(50)]
    out = capsys.readouterr().out
    assert "stage 'numbers' (producer) added" in out
    assert "stage 'sink' (consumer) added, subscribed to double" in out


def test_a_cell_may_define_one_stage_class(shell):
    shell.user_ns["gs"] = gs
    stage(
        shell,
        "src",
        "class Src(gs.Producer):\n"
        "    def handle_demand(self, demand):\n"
        "        self.finish()\n"
        "        return ['a', 'b']\n",
    )
    stage(shell, "out --subscribe-to src", SINK)
    p = shell.user_ns["p"]
    p.run_sync()
    assert p.stages["out"].seen == ["a", "b"]


def test_default_pipeline_is_used_without_pipeline_option(shell):
    gs_default = gs.default_pipeline()
    shell.run_line_magic("pipeline", "reset")
    shell.run_cell_magic("stage", "lonely", "def handle_events(events):\n    pass")
    assert "lonely" in gs.default_pipeline().stages
    assert gs.default_pipeline() is gs_default  # reset empties the same object
    shell.run_line_magic("pipeline", "reset")
    assert gs.default_pipeline().stages == {} and gs.default_pipeline() is gs_default


BAD_CELLS = [
    (
        "numbers --kind producer",
        "def handle_events(events):\n    pass",
        "stage 'numbers': a producer cell must define handle_demand(demand) returning the events",
    ),
    ("sink", "x = 1", "stage 'sink': the cell defines no hook"),
    (
        "sink --kind sink",
        SINK,
        "stage 'sink': unknown --kind 'sink' (use producer, producer_consumer or consumer)",
    ),
    ("sink --subscribe-to nowhere", SINK, "stage 'sink': unknown --subscribe-to name 'nowhere'"),
    (
        "sink --max-demand lots",
        SINK,
        "stage 'sink': --max-demand must be a whole number, got 'lots'",
    ),
    ("sink --max-demand 0", SINK, "stage 'sink': --max-demand must be at least 1, got 0"),
    ("sink --min-demand -1", SINK, "stage 'sink': --min-demand must be at least 0, got -1"),
    ("sink --cancel never", SINK, "stage 'sink': unknown --cancel 'never'"),
    ("sink --unknown 3", SINK, "%%stage: unrecognized arguments: --unknown 3"),
    ("sink --concurrency many", SINK, "stage 'sink': --concurrency must be a whole number"),
    ("sink --concurrency 0", SINK, "stage 'sink': concurrency must be an int >= 1"),
    ("sink --restart often", SINK, "stage 'sink': restart must be one of"),
    ("sink --executor nopool", SINK, "stage 'sink': --executor 'nopool': NameError"),
    ("numbers --rate-limit 0/1", NUMBERS, "stage 'numbers': rate_limit must be (n, seconds)"),
    ("numbers --rate-limit fast", NUMBERS, "stage 'numbers': --rate-limit 'fast': NameError"),
    ("sink --retry 3", SINK, "stage 'sink': retry must be a gs.Retry(...) or None, got 3"),
    ("sink --buffer-size 5", SINK, "stage 'sink': unknown option 'buffer_size' for a consumer"),
    (
        "c --kind consumer",
        "def handle_event(event):\n    pass",
        "stage 'c': handle_event must be 'async def'",
    ),
]


@pytest.mark.parametrize(("line", "cell", "message"), BAD_CELLS)
def test_bad_magic_input_is_one_usage_error_naming_the_stage(shell, line, cell, message):
    with pytest.raises(UsageError) as info:
        stage(shell, line, cell)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_stage_options_are_cell_flags_and_a_changed_one_rebuilds_the_stage(shell, capsys):
    from concurrent.futures import ThreadPoolExecutor

    shell.user_ns["LIMIT"] = 30
    shell.user_ns["pool"] = pool = ThreadPoolExecutor(2)
    shell.user_ns["gs"] = gs
    stage(shell, "numbers --rate-limit 1000/1 --buffer-keep first --buffer-size 50", NUMBERS)
    stage(
        shell,
        'sink --subscribe-to numbers --executor pool --concurrency 2 --retry "gs.Retry(4)"',
        SINK,
    )
    p = shell.user_ns["p"]
    numbers, sink = p.stages["numbers"], p.stages["sink"]
    assert (numbers.rate_limit, numbers.buffer_keep, numbers.buffer_size) == (
        (1000, 1.0),
        "first",
        50,
    )
    assert (sink.executor, sink.concurrency, sink.restart) == (pool, 2, "temporary")
    assert sink.retry.attempts == 4
    stage(shell, "sink --subscribe-to numbers --restart permanent", SINK)  # the rest kept
    rebuilt = p.stages["sink"]
    assert rebuilt is not sink and p.graph.has_edge("numbers", "sink")
    assert (rebuilt.executor, rebuilt.concurrency, rebuilt.restart) == (pool, 2, "permanent")
    assert "rebuilt with --restart" in capsys.readouterr().out
    stage(shell, "sink --subscribe-to numbers --restart permanent", SINK)  # the same: a swap
    assert p.stages["sink"] is rebuilt
    p.run_sync()
    assert sorted(rebuilt.seen) == list(range(30))
    pool.shutdown()


def test_bad_numbers_between_options_are_usage_errors(shell):
    shell.user_ns["LIMIT"] = 1
    stage(shell, "numbers", NUMBERS)
    with pytest.raises(
        UsageError,
        match=r"stage 'sink': link numbers -> sink: min_demand \(10\) must be below max_demand \(10\)",
    ):
        stage(shell, "sink --subscribe-to numbers --max-demand 10 --min-demand 10", SINK)
    assert "sink" not in shell.user_ns["p"].graph or shell.user_ns["p"].graph.in_degree("sink") == 0


def test_pipeline_option_must_name_a_pipeline(shell):
    shell.user_ns["notapipe"] = 42
    with pytest.raises(
        UsageError, match="--pipeline notapipe: is a int, not a genstage_nb Pipeline \\(or Flow\\)"
    ):
        shell.run_cell_magic("stage", "s --pipeline notapipe", SINK)
    with pytest.raises(UsageError, match="--pipeline missing: no such variable"):
        shell.run_cell_magic("stage", "s --pipeline missing", SINK)


def test_pipeline_magic_commands(shell):
    from matplotlib.figure import Figure

    shell.user_ns["LIMIT"] = 20
    stage(shell, "numbers", NUMBERS)
    stage(shell, "sink --subscribe-to numbers", SINK)
    p = shell.user_ns["p"]
    p.run_sync()
    status = shell.run_line_magic("pipeline", "status --pipeline p")
    assert status.loc["sink", "events_in"] == 20
    assert isinstance(shell.run_line_magic("pipeline", "show --pipeline p"), Figure)
    assert isinstance(shell.run_line_magic("pipeline", "plot --pipeline p"), Figure)
    assert isinstance(shell.run_line_magic("pipeline", "dashboard --pipeline p"), Dashboard)
    with pytest.raises(UsageError, match="%pipeline: unknown command 'go'"):
        shell.run_line_magic("pipeline", "go --pipeline p")
    with pytest.raises(
        UsageError, match="%pipeline start: Pipeline.start\\(\\) needs a running asyncio event loop"
    ):
        shell.run_line_magic("pipeline", "start --pipeline p")
    shell.run_line_magic("pipeline", "reset --pipeline p")
    assert p.stages == {}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_rerunning_a_cell_while_running_swaps_code_and_keeps_state(shell):
    ns = shell.user_ns
    ns.update(LIMIT=400, HALF=200, GATE=anyio.Event())
    stage(shell, "numbers", GATED_NUMBERS)
    stage(shell, "tag", "def handle_events(events):\n    return [(e, 'v1') for e in events]")
    stage(shell, "sink --subscribe-to tag --max-demand 10", SINK)
    stage(
        shell,
        "tag --subscribe-to numbers --max-demand 10",
        "def handle_events(events):\n    return [(e, 'v1') for e in events]",
    )
    p = ns["p"]
    tag = p.stages["tag"]
    tag.marker = "kept"
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            while len(getattr(p.stages["sink"], "seen", ())) < 200:
                await anyio.sleep(0.001)
        # Same stage object, new code, while it runs; options apply live.
        stage(
            shell,
            "tag --subscribe-to numbers --max-demand 4",
            "def handle_events(events):\n    return [(e, 'v2') for e in events]",
        )
        assert p.stages["tag"] is tag and tag.marker == "kept"
        assert p.graph.edges["numbers", "tag"]["subscription"].max_demand == 4
        ns["GATE"].set()
    seen = p.stages["sink"].seen
    assert sorted(e for e, _ in seen) == list(range(400))  # nothing lost or twice
    assert [v for e, v in seen if e < 200] == ["v1"] * 200
    assert [v for e, v in seen if e >= 240] == ["v2"] * 160
    assert p.status == {"numbers": "done", "tag": "done", "sink": "done"}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_kind_change_while_running_is_refused(shell):
    ns = shell.user_ns
    ns.update(LIMIT=10, HALF=0, GATE=anyio.Event())
    stage(shell, "numbers", GATED_NUMBERS)
    stage(shell, "sink --subscribe-to numbers", SINK)
    p = ns["p"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.sleep(0)
        with pytest.raises(
            UsageError,
            match="stage 'sink' would change from consumer to producer_consumer; stop the pipeline first",
        ):
            stage(shell, "more --subscribe-to sink", SINK)
        ns["GATE"].set()


def test_dashboard_widget_tree_and_slider_binding():
    import ipywidgets as w

    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(100)), name="src")
    mid = p.add(gs.producer_consumer(lambda e: e), name="mid")
    out = p.add(gs.consumer(lambda e: None), name="out")
    s1 = p.link(src, mid, max_demand=100)
    s2 = p.link(mid, out, max_demand=10, min_demand=2)
    d = p.dashboard()
    assert isinstance(d, w.VBox)
    buttons, bar, status, paused, warnings, sliders, pictures, peek, explanation = d.children
    assert paused.children == ()  # a paused stage would show here
    assert warnings.value == ""  # no slow handler
    assert [b.description for b in buttons.children[:3]] == ["Start", "Stop", "auto: off"]
    assert "0/100 events" in bar.text.value and "stopped" in bar.text.value
    assert "<th>stage</th>" in status.value and "src" in status.value
    assert "<th>events/s<br>(last 1 s)</th>" in status.value  # the one events/s, labelled
    assert pictures.layout.flex_flow == "row wrap"  # plots go below the graph when narrow
    graph, plot = pictures.children  # the live graph beside the metrics plots
    assert graph.layout.max_width == plot.layout.max_width == "100%"
    assert list(peek.choice.options) == ["(none)", "src", "mid"]
    assert isinstance(plot, w.Image) and isinstance(graph, w.Image)
    assert bytes(graph.value).startswith(b"\x89PNG")
    assert "No bottleneck yet" in explanation.value
    assert [s.max_slider.description for s in sliders.children] == ["src → mid", "mid → out"]
    assert all(isinstance(s, DemandSliders) for s in sliders.children)
    first, second = sliders.children
    assert isinstance(first.max_slider, w.IntSlider)
    assert first.max_slider.value == 100 and second.min_slider.value == 2
    first.max_slider.value = 40
    assert s1.max_demand == 40 and s1.min_demand == 20
    assert first.min_slider.max == 39 and first.min_slider.value == 20
    second.min_slider.value = 5
    assert s2.min_demand == 5
    second.max_slider.value = 4  # below the explicit min: min goes back to half
    assert (s2.max_demand, s2.min_demand) == (4, 2)
    second.max_slider.value = 60  # widening keeps the slider in step with the link
    assert (s2.max_demand, s2.min_demand) == (60, 2)
    assert (second.min_slider.value, second.min_slider.max) == (2, 59)
    peek.choice.value = "mid"  # from now on it keeps mid's events
    p.run_sync()
    d.update()
    assert "done" in status.value and bar.bar.value == 1.0
    assert plot.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<code>99</code>" in peek.table.value  # the newest event first
    d.close()
    assert "_peek_ring" not in vars(p._procs["mid"])  # closed: nothing is kept any more


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dashboard_buttons_run_the_pipeline_and_refreshing_stops_with_it():
    p = gs.Pipeline(metrics_interval=0.01)
    gate = anyio.Event()

    async def slow(demand):
        await gate.wait()
        return list(range(demand))

    p.link(p.add(gs.producer(slow, name="src")), p.add(gs.consumer(lambda e: None, name="out")))
    d = p.dashboard(refresh=0.01)
    d.start_button.click()
    assert p.running
    with anyio.fail_after(10):
        while d.refreshes < 3:
            await anyio.sleep(0.01)
    d.stop_button.click()
    gate.set()
    await p.wait()
    with anyio.fail_after(10):
        await d._task
    assert d.message.value == "stopped"
    assert "done" in d.status.value
    # Closing stops a refresh task that is still running.
    p.start()
    d._follow()
    task = d._task
    d.close()
    await p.stop(timeout=0)
    with pytest.raises(BaseException):  # noqa: B017 - cancelled
        await task
    assert task.cancelled()


def test_a_slow_handler_shows_in_status_and_dashboard(shell, capsys):
    import threading

    reported = threading.Event()
    p = shell.user_ns["p"] = gs.Pipeline(slow_handler=0.05)

    class Watch(list):
        """Pipeline.warnings that says when the watchdog added a record."""

        def append(self, record):
            super().append(record)
            reported.set()

    p.warnings = Watch()
    p.link(
        p.add(gs.from_iterable(range(3)), name="src"),
        p.add(gs.consumer(lambda events: reported.wait(60), name="heavy")),
    )
    p.run_sync()
    assert reported.is_set()
    capsys.readouterr()
    shell.run_line_magic("pipeline", "status --pipeline p")
    printed = capsys.readouterr().out
    assert "warning: stage 'heavy' blocked the event loop for" in printed
    d = p.dashboard()
    assert "stage &#x27;heavy&#x27; blocked the event loop" in d.warnings.value
    d.close()


def kernel_formatter(shell, mime, monkeypatch):
    """The shell's formatter for ``mime``, enabled as a kernel enables it (a terminal
    shell, or IPython's test shell, switches image formatters off)."""
    formatter = shell.display_formatter.formatters[mime]
    monkeypatch.setattr(formatter, "enabled", True)
    monkeypatch.setattr(formatter, "type_printers", dict(formatter.type_printers))
    return formatter


def test_a_returned_figure_shows_as_a_picture_without_pyplot(shell, monkeypatch):
    from matplotlib.figure import Figure

    png = kernel_formatter(shell, "image/png", monkeypatch)
    png.type_printers.pop(Figure, None)  # as in a fresh kernel that never loaded pyplot
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable([1]), name="src"), p.add(gs.consumer(len), name="sink"))
    fig = p.draw()
    data = png(fig)  # what the kernel sends beside text/plain
    if isinstance(data, str):
        data = base64.b64decode(data)
    assert data.startswith(b"\x89PNG")


def test_a_figure_format_the_user_chose_is_kept(shell, monkeypatch):
    from IPython.core.pylabtools import select_figure_formats
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    kernel_formatter(shell, "image/png", monkeypatch).type_printers.pop(Figure, None)
    kernel_formatter(shell, "image/svg+xml", monkeypatch)
    select_figure_formats(shell, {"svg"})
    p = gs.Pipeline()
    p.add(gs.from_iterable([1]), name="src")
    fig = p.draw()
    assert formatters["image/svg+xml"](fig) is not None
    assert formatters["image/png"](fig) is None  # no PNG added beside the user's SVG


def test_a_flow_appears_in_pipeline_status_and_explain(shell, capsys):
    flow = gs.Flow.from_iterable(range(30)).partition(key=lambda x: x % 3, stages=2).count()
    shell.user_ns["flow"] = flow
    assert sorted(flow.run()) == [(0, 10), (1, 10), (2, 10)]
    status = shell.run_line_magic("pipeline", "status --pipeline flow")
    assert list(status.index) == ["from_iterable", "partition[0]", "partition[1]", "results"]
    assert status.loc["partition[0]", "events_in"] + status.loc["partition[1]", "events_in"] == 30
    shell.run_line_magic("pipeline", "explain --pipeline flow")
    assert "partition" in capsys.readouterr().out
    shell.user_ns.pop("flow")


def test_a_flows_dashboard_shows_its_stages_and_links():
    flow = (
        gs.Flow.from_iterable(range(50)).map(lambda x: x + 1).partition(key=str, stages=2).count()
    )
    assert len(flow.run()) == 50
    d = flow.dashboard()
    status, sliders = d.status, d.children[5]
    assert "partition[1]" in status.value and "from_iterable" in status.value
    labels = [s.max_slider.description for s in sliders.children]
    assert "map → partition[0]" in labels and "partition[1] → results" in labels


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pipeline_status_shows_a_started_flow_when_the_default_pipeline_is_empty(shell):
    from genstage_nb.pipeline import reset_default_pipeline

    reset_default_pipeline()
    flow = gs.Flow.from_iterable(range(20)).partition(key=lambda x: x % 2).count()
    flow.start()
    await flow.wait()
    status = shell.run_line_magic("pipeline", "status")
    assert list(status.index) == ["from_iterable", "partition[0]", "results"]
    assert status.loc["partition[0]", "events_in"] == 20


def test_status_and_dashboard_say_where_a_durable_run_resumed(shell, capsys, tmp_path):
    def build():
        p = shell.user_ns["p"] = gs.Pipeline(checkpoint=tmp_path / "run.db")
        p.link(p.add(gs.from_iterable(range(50)), name="src"), p.add(gs.consumer(list), name="k"))
        return p

    build().run_sync()
    p = build()
    p.run_sync()  # (the run after a restart: from the last checkpoint)
    capsys.readouterr()
    shell.run_line_magic("pipeline", "status --pipeline p")
    assert "resumed from checkpoint 1 (50 events already done)" in capsys.readouterr().out
    d = p.dashboard()
    assert "resumed from checkpoint 1 (50 events already done)" in d.warnings.value
    d.close()
    with pytest.raises(UsageError, match="--rewind goes with resume only"):
        shell.run_line_magic("pipeline", "skip k --rewind --pipeline p")
