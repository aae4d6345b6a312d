"""The dashboard's pictures (drawn off the loop, updated in place, throttled) and what
its controls show."""

from __future__ import annotations

import pytest

import genstage_nb as gs
from genstage_nb.metrics import frame_of
from genstage_nb.notebook.render import SHARE, LivePictures, Throttle, snapshot
from genstage_nb.tuning import TuneRule


def ran(n: int = 400) -> gs.Pipeline:
    p = gs.Pipeline(metrics_interval=0.001)
    src = p.add(gs.from_iterable(range(n)), name="src")
    mid = p.add(gs.producer_consumer(lambda events: events), name="mid")
    p.link(src, mid, max_demand=5)
    p.link(mid, p.add(gs.consumer(len, name="sink")), max_demand=5)
    p.run_sync()
    return p


def test_a_second_refresh_gives_the_same_figures_their_new_data():
    p = ran()
    live = LivePictures()
    shot = snapshot(p)
    graph, plot = live.render(shot)
    assert graph.startswith(b"\x89PNG") and plot.startswith(b"\x89PNG")
    figure, drawing = live._plot, live._graph
    p.subscriptions[0].tune(max_demand=9)  # another link value
    live.render(snapshot(p))
    assert live._graph is drawing  # updated, not built anew
    p.metrics.sample()  # one more sample
    shot = snapshot(p)
    live.render(shot)
    assert live._plot is figure
    frame = frame_of(shot.samples, shot.interval, shot.window)
    expected = frame[(frame.stage == "sink") & (frame.metric == "events_in")]
    throughput = [ln for ln in figure.axes[0].get_lines() if ln.get_label() == "sink"][0]
    assert len(throughput.get_xdata()) == len(expected)
    labels = [t.get_text() for t in drawing.axes[0].texts if "max_demand" in t.get_text()]
    assert labels[0].startswith("max_demand=9")
    times = figure.axes[3]
    widths = [bar.get_width() for bars in times.containers for bar in bars]
    assert all(0.0 <= w <= 1.0 for w in widths)


def test_new_stages_build_the_figures_anew():
    p = ran()
    live = LivePictures()
    live.render(snapshot(p))
    figure = live._plot
    p.link("mid", p.add(gs.consumer(len, name="other")))
    p.metrics.sample()
    live.render(snapshot(p))
    assert live._plot is not figure
    legend = [t.get_text() for t in live._plot.axes[0].get_legend().get_texts()]
    assert legend == ["src", "mid", "sink", "other"]


def test_the_pictures_are_spaced_to_take_a_small_share_of_the_time():
    throttle = Throttle(refresh=1.0)
    assert throttle.pause() == 1.0  # nothing drawn yet
    throttle.took = 0.3
    assert throttle.pause() == pytest.approx(0.3 / SHARE - 0.3)
    assert throttle.took / (throttle.took + throttle.pause()) == pytest.approx(SHARE)


def test_the_auto_toggle_says_what_the_tuner_does():
    p = ran(10)
    dash = p.dashboard()
    assert dash.auto.description == "auto: off"
    dash.auto.value = True
    assert dash.auto.description == "auto: tuning" and dash.auto.button_style == "info"
    rule = dash.tuner._rule = TuneRule(10, max_in_flight=100, target_latency=1.0)
    rule.observe(100.0, 10)
    rule.observe(101.0, 20)  # no gain: settled, and why
    dash.tuner._done = set(p.stages)  # (every stage tuned)
    dash.update()
    assert dash.auto.description == "auto: settled" and dash.auto.button_style == "success"
    assert "less than the 5% a step must gain" in dash.auto.tooltip
    dash.auto.value = False
    assert dash.auto.description == "auto: off"
    dash.close()


def test_a_new_run_draws_new_figures_without_the_last_runs_marks():
    p = ran()
    live = LivePictures()
    tuner = p.autotune()
    tuner._rows.append((0.01, "src -> mid", 10, 1.0))  # a mark of this run
    tuner.stop()  # (it is over: a tuner serves one run)
    live.render(snapshot(p))
    assert [ln.get_linestyle() for ln in live._plot.axes[0].get_lines()].count(":") == 1
    first = live._plot
    p.run_sync()  # the next run: the tuner served the last one
    live.render(snapshot(p))
    assert live._plot is not first
    marks = [ln for ln in live._plot.axes[0].get_lines() if ln.get_linestyle() == ":"]
    assert marks == []
