"""Metrics, plots and the demo, checked through their data (not pixels)."""

from __future__ import annotations

import subprocess
import sys

import anyio
import matplotlib
import pytest
from helpers import Counter, Doubler, Forwarder, run_linking_later
from matplotlib.figure import Figure

import genstage_nb as gs
from genstage_nb.metrics import METRICS, Metrics


def fan_out_pipeline(**options):
    p = gs.Pipeline(**options)
    src = p.add(gs.from_iterable(range(1000)), name="src")
    dbl = p.add(Doubler(), name="dbl")
    a, b = p.add(Forwarder(name="a")), p.add(Forwarder(name="b"))
    p.link(src, dbl, max_demand=50)
    p.link(dbl, a, max_demand=30)
    p.link(dbl, b, max_demand=30)
    return p


def test_totals_balance_for_a_deterministic_pipeline():
    p = fan_out_pipeline()
    p.run_sync()
    t = p.metrics.totals()
    assert list(t.index) == ["src", "dbl", "a", "b"]
    assert t.loc["src", "events_out"] == 1000
    assert t.loc["dbl", "events_in"] == 1000
    assert t.loc["dbl", "events_out"] == 2000
    # A producer's events_out is the sum of its consumers' events_in.
    assert t.loc["a", "events_in"] + t.loc["b", "events_in"] == 2000
    assert (t["dropped"] == 0).all() and (t["failed"] == 0).all()
    assert set(t["status"]) == {"done"}
    assert t.loc["a", "demand_out"] >= 30


def test_frame_is_tidy_and_ends_with_the_final_counts():
    p = fan_out_pipeline()
    p.run_sync()
    f = p.metrics.frame()
    assert list(f.columns) == ["time", "stage", "metric", "value"]
    assert set(f["metric"]) == set(METRICS)
    assert set(f["stage"]) == {"src", "dbl", "a", "b"}
    first = f[f["time"] == f["time"].min()]
    assert (first["value"] == 0).all()  # sampled as the run starts
    last = f[f["time"] == f["time"].max()].set_index(["stage", "metric"])["value"]
    totals = p.metrics.totals()
    for stage in ("src", "dbl", "a", "b"):
        for metric in ("events_in", "events_out", "dropped", "failed"):
            assert last[stage, metric] == totals.loc[stage, metric]
    assert (f["time"].diff().dropna() >= 0).all()


def test_throughput_is_events_per_second_between_samples():
    p = gs.Pipeline(metrics_interval=None)
    _ = p.link(p.add(gs.from_iterable(range(500)), name="src"), p.add(Forwarder(), name="out"))
    p.run_sync()
    f = p.metrics.frame()
    times = sorted(set(f["time"]))
    assert len(times) == 2  # start and end only, without a sampling interval
    span = times[1] - times[0]
    rate = f[(f["stage"] == "out") & (f["metric"] == "throughput")]["value"].iloc[-1]
    assert rate == pytest.approx(500 / span)


def test_dropped_events_are_counted_in_the_metrics():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable([], buffer_size=3), name="src")

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_linking_later, p)
            await anyio.sleep(0)
            src.emit(list(range(10)))
            await p.stop(timeout=0)

    anyio.run(main)
    assert p.metrics.totals().loc["src", "dropped"] == 7


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_sampler_samples_while_running_and_stops_with_the_pipeline():
    p = gs.Pipeline(metrics_interval=0.01)
    c = Forwarder(until=lambda b: False)
    p.link(p.add(Counter()), p.add(c), max_demand=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(10):
            while len(p.metrics) < 4:
                await anyio.sleep(0.01)
        await p.stop(timeout=0)
    n = len(p.metrics)
    assert n >= 5  # start, at least three while running, end
    await anyio.sleep(0.03)
    assert len(p.metrics) == n  # nothing samples after the run
    out = p.metrics.frame()
    outstanding = out[(out["stage"] == "forwarder") & (out["metric"] == "outstanding_demand")]
    assert outstanding["value"].max() <= 10


def test_history_is_bounded():
    p = gs.Pipeline()
    p.add(Counter())
    m = Metrics(p, history=5)
    for _ in range(12):
        m.sample()
    assert len(m) == 5
    assert len(m.frame()) == 5 * len(METRICS)


def test_plot_panels_name_every_stage_and_stack_the_shares_of_time():
    import matplotlib.pyplot as plt

    p = fan_out_pipeline()
    p.run_sync()
    before = plt.get_fignums()
    fig = p.plot()
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before  # nothing shown or kept by pyplot
    axes = fig.axes[:3]
    assert [ax.get_title(loc="left") for ax in axes] == [
        "Throughput",
        "Buffer size",
        "Outstanding demand",
    ]
    # The one events/s of the status table, labelled with its window.
    assert [ax.get_ylabel() for ax in axes] == ["events/s (last 1 s)", "events", "events"]
    times = fig.axes[3]  # a stacked bar per stage: busy, back-pressured, idle
    assert times.get_title(loc="left") == "Share of time over the run"
    assert [t.get_text() for t in times.get_legend().get_texts()] == [
        "busy",
        "back-pressured",
        "idle",
    ]
    assert [t.get_text() for t in times.get_yticklabels()] == ["b", "a", "dbl", "src"]
    bars = times.patches
    assert len(bars) == 3 * 4
    for i in range(4):  # each stage's three shares sit end to end, within 1
        busy, pressed, idle = bars[i], bars[4 + i], bars[8 + i]
        assert pressed.get_x() == pytest.approx(busy.get_x() + busy.get_width())
        assert idle.get_x() == pytest.approx(pressed.get_x() + pressed.get_width())
        assert idle.get_x() + idle.get_width() <= 1.0 + 1e-9
    colours = {}
    for ax in axes:
        assert [line.get_label() for line in ax.get_lines()] == ["src", "dbl", "a", "b"]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["src", "dbl", "a", "b"]
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(
                matplotlib.colors.to_hex(line.get_color())
            )
    assert all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == 4
    # The data are the metrics' own.
    frame = p.metrics.frame()
    expected = frame[(frame["stage"] == "dbl") & (frame["metric"] == "buffer_size")]["value"]
    line = [ln for ln in axes[1].get_lines() if ln.get_label() == "dbl"][0]
    assert list(line.get_ydata()) == list(expected)


def test_nothing_of_the_figure_is_clipped_and_every_legend_is_inside_it():
    p = fan_out_pipeline()
    p.run_sync()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for fig in (p.plot(), p.draw(), p.draw(busy=True)):
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        box = fig.bbox
        renderer = canvas.get_renderer()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + fig.legends
        for artist in [*fig.axes, *legends]:
            extent = artist.get_window_extent(renderer)
            assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, artist
            assert extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1, artist


def test_graph_labels_read_on_their_fill():
    from genstage_nb.plotting import text_colour

    assert text_colour("#67000d") == "#ffffff"  # a busy stage's deep red
    assert text_colour("#fff5f0") == "#000000"  # an idle one's near white
    p = fan_out_pipeline()
    p.run_sync()
    fig = p.draw(busy=True)
    nodes = fig.axes[0].collections[0]
    fills = [matplotlib.colors.to_hex(c) for c in nodes.get_facecolors()]
    labels = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    for name, fill in zip(p.graph.nodes, fills, strict=True):
        assert labels[name] == text_colour(fill)


def test_draw_lays_out_left_to_right_colours_kinds_and_labels_max_demand():
    from genstage_nb.plotting import FAILED_COLOUR, KIND_COLOURS

    class Bad(gs.Consumer):
        def handle_events(self, events):
            raise ValueError("bad")

    p = fan_out_pipeline(on_failure="continue")
    p.link("dbl", p.add(Bad()), max_demand=7)
    with pytest.raises(gs.PipelineError):
        p.run_sync()
    fig = p.draw()
    ax = fig.axes[0]
    texts = {t.get_text(): t.get_position() for t in ax.texts}
    assert {"src", "dbl", "a", "b", "bad"} <= set(texts)
    assert texts["src"][0] < texts["dbl"][0] < texts["a"][0]
    assert texts["a"][0] == texts["b"][0] == texts["bad"][0]
    assert "max_demand=50" in texts and "max_demand=7" in texts
    nodes = ax.collections[0]
    faces = [matplotlib.colors.to_hex(c) for c in nodes.get_facecolors()]
    assert faces == [
        KIND_COLOURS["producer"],
        KIND_COLOURS["producer_consumer"],
        KIND_COLOURS["consumer"],
        KIND_COLOURS["consumer"],
        FAILED_COLOUR,
    ]


def test_demo_runs_and_writes_the_plot(tmp_path, capsys):
    from genstage_nb.demo import main

    out = tmp_path / "signing.png"
    assert (
        main(
            [
                "--events",
                "300",
                "--max-demand",
                "20",
                "--seconds-per-book",
                "0",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "All 300 books signed" in text
    assert "300/300 signed" in text
    for stage in ("crowd", "author", "exit"):
        assert stage in text
    assert f"Metrics plot: {out}" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_command_line(tmp_path):
    out = tmp_path / "plot.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "genstage_nb",
            "demo",
            "--events",
            "100",
            "--seconds-per-book",
            "0",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "All 100 books signed" in result.stdout
    assert out.exists()


def test_demo_bad_options_are_one_clear_line(capsys):
    from genstage_nb.demo import main

    with pytest.raises(SystemExit):
        main(["--max-demand", "0"])
    assert "max_demand (0) must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--events", "0"])
    assert "--events must be at least 1" in capsys.readouterr().err
