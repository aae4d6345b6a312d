"""The tuner: its decision rule as a pure state machine (unit and hypothesis tests), and
the tuner on a running pipeline (asyncio and trio)."""

from __future__ import annotations

import itertools

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genstage_nb as gs
from genstage_nb.tuning import GAIN, TuneRule

# -- the rule --------------------------------------------------------------------------


def test_it_doubles_while_it_helps_then_goes_back_and_settles():
    rule = TuneRule(10, max_in_flight=10_000, target_latency=1.0)
    assert rule.observe(100.0, 20) == 20
    assert rule.observe(200.0, 40) == 40
    assert rule.observe(400.0, 80) == 80
    assert rule.observe(401.0, 160) == 40  # no gain: back
    assert rule.settled and rule.current == 40
    for _ in range(10):  # a steady workload: it does not move
        assert rule.observe(400.0 + _, 80) is None


def test_it_never_proposes_more_in_flight_than_the_bounds():
    rule = TuneRule(100, max_in_flight=250, target_latency=1.0)
    assert rule.observe(10_000.0, 100) == 200  # 200 projected: within 250
    assert rule.observe(20_000.0, 200) == 250  # 400 projected: over; up to the bound
    assert rule.observe(25_000.0, 250) is None  # no room left
    assert rule.settled and rule.current == 250
    latency = TuneRule(100, max_in_flight=10**6, target_latency=0.5)
    assert latency.observe(300.0, 100) == 150  # 200 in flight > 300/s * 0.5 s: 150
    assert latency.observe(300.0, 150) == 100  # no gain: back
    small = TuneRule(100, max_in_flight=120, target_latency=1.0)
    assert small.observe(10_000.0, 100) is None  # 120 is not FILL above 100: settled


def test_it_backs_off_when_too_much_is_in_flight_and_stays_within():
    rule = TuneRule(1000, max_in_flight=500, target_latency=1.0)
    assert rule.observe(10_000.0, 2000) == 500
    assert rule.observe(10_000.0, 1000) == 250
    assert rule.observe(10_000.0, 400) is None  # within the bounds: it stays
    assert rule.settled and rule.current == 250


def test_a_settled_rule_tunes_again_when_the_workload_changes():
    rule = TuneRule(10, max_in_flight=10_000, target_latency=1.0)
    rule.observe(100.0, 20)
    rule.observe(100.0, 40)  # no gain: back to 10, settled
    assert rule.settled and rule.current == 10
    assert rule.observe(110.0, 20) is None  # within the shift
    assert rule.observe(300.0, 20) is None  # once is noise
    assert rule.observe(100.0, 20) is None  # (and back)
    assert rule.observe(300.0, 20) is None and rule.observe(300.0, 20) is None
    assert rule.observe(300.0, 20) == 20  # three in a row: a new workload, it tries again
    assert not rule.settled


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(1, 5000),
    bound=st.integers(1, 200_000),
    latency=st.floats(0.05, 5.0),
    curve=st.lists(st.floats(1.0, 1e6), min_size=1, max_size=40),
    per_event=st.floats(0.5, 3.0),
)
def test_property_it_keeps_in_flight_within_the_bounds_and_settles(
    start, bound, latency, curve, per_event
):
    """Throughput is any function of max_demand; in flight is per_event * max_demand."""
    rule = TuneRule(start, max_in_flight=bound, target_latency=latency)
    value = start
    steps = 0
    for step in itertools.count():
        throughput = curve[min(value.bit_length(), len(curve) - 1)]
        in_flight = int(per_event * value)
        new = rule.observe(throughput, in_flight)
        limit = min(bound, throughput * latency)
        if new is not None:
            if new > value:  # a growth is proposed only within the bounds
                assert in_flight * new / value <= limit + 1e-9
            value = new
        assert rule.current == value >= 1
        if rule.settled:
            steps = step
            break
        assert step < 100, "it must settle"
    # Settled on a steady input: it does not move any more.
    throughput = curve[min(value.bit_length(), len(curve) - 1)]
    for _ in range(5):
        assert rule.observe(throughput, int(per_event * value)) is None
    assert steps < 100


def test_no_throughput_is_no_gain():
    """A pipeline that stopped moving (a paused stage, a stall) must not look like a
    pipeline that a bigger max_demand helps."""
    rule = TuneRule(64, max_in_flight=10**9, target_latency=10**6)
    assert rule.observe(0.0, 64) == 128
    assert rule.observe(0.0, 128) == 64  # no gain: back, settled
    assert rule.settled and rule.observe(0.0, 64) is None


@pytest.mark.anyio
async def test_a_paused_pipeline_is_not_tuned():
    p = gs.Pipeline(on_failure="pause", metrics_interval=0.05)
    broken = [True]

    def sink(events):
        if broken[0]:
            raise ValueError("paused")

    p.link(
        p.add(gs.from_iterable(itertools.count()), name="src"),
        p.add(gs.consumer(sink, name="sink")),
        max_demand=10,
    )
    tuner = p.autotune()
    tuner.interval = 0.02

    async def run():
        with pytest.raises(gs.PipelineError):  # stopped while paused: it failed
            await p.run()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await p.wait_paused("sink")
        for _ in range(10):  # ten of the tuner's intervals while paused
            await anyio.sleep(0.02)
        assert tuner.history.empty and p.subscriptions[0].max_demand == 10
        await p.stop(timeout=0)


@given(st.floats(1.0, 1e6), st.floats(-0.99, GAIN * 0.99))
def test_property_a_growth_that_gains_less_than_gain_or_drops_is_undone(base, gain):
    rule = TuneRule(64, max_in_flight=10**9, target_latency=10**6)
    assert rule.observe(base, 64) == 128
    assert rule.observe(base * (1 + gain), 128) == 64
    assert rule.settled


# -- the tuner -----------------------------------------------------------------------------

pytestmark_async = pytest.mark.anyio


class PerBatch(gs.ProducerConsumer):
    """Pays a round trip per batch, whatever its size."""

    async def handle_events(self, events):
        await anyio.sleep(0.005)
        return events


@pytest.mark.anyio
async def test_the_tuner_grows_max_demand_for_a_per_batch_cost_and_settles():
    p = gs.Pipeline(metrics_interval=0.05)
    src = p.add(gs.from_iterable(itertools.count()), name="src")
    lookup = p.add(PerBatch(name="lookup"))
    sink = p.add(gs.consumer(lambda events: None, name="sink"))
    p.link(src, lookup, max_demand=10)
    p.link(lookup, sink, max_demand=10)
    tuner = p.autotune(max_in_flight=5000)
    tuner.interval = 0.05
    changes = []
    tuner.listeners.append(lambda sub, value: changes.append(value))
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(30):
            await tuner.wait_settled()
        await p.stop(timeout=0)
    history = tuner.history
    assert list(history.columns) == ["time", "link", "max_demand", "throughput"]
    assert set(history.link) == {"src -> lookup", "lookup -> sink"}
    assert all(sub.max_demand > 10 for sub in p.subscriptions)
    assert all(sub.min_demand == sub.max_demand // 2 for sub in p.subscriptions)
    assert max(sub.max_demand for sub in p.subscriptions) <= 5000
    assert changes and max(changes) <= 5000


@pytest.mark.anyio
async def test_a_link_the_tuner_changes_comes_in_whole_batches_again():
    """Raised while a remainder of the old demand is in flight, a link realigns: no
    batch carries the remainder on (where the cost is per batch, a few events would
    cost a whole batch, every time)."""
    sizes: list[int] = []
    p = gs.Pipeline()
    tuner = p.autotune()
    tuner.stop()  # driven by hand here: one change, at a known moment

    def record(events):
        sizes.append(len(events))
        if len(sizes) == 3:  # lists of 5 in flight: raise 10 -> 20 now
            tuner._links = list(p.subscriptions)
            tuner._apply(20)

    src = p.add(gs.from_iterable(range(600)), name="src")
    p.link(src, p.add(gs.consumer(record, name="sink")), max_demand=10)
    await p.run()
    assert sum(sizes) == 600
    # A few batches finish what the old demand asked for; then whole batches of 10.
    assert set(sizes[8:-1]) == {10}, sizes
    assert p.subscriptions[0].min_demand == 10


@pytest.mark.anyio
async def test_a_stopped_tuner_changes_nothing_more():
    p = gs.Pipeline(metrics_interval=0.05)
    src = p.add(gs.from_iterable(range(2000)), name="src")
    p.link(src, p.add(gs.consumer(lambda events: None, name="sink")), max_demand=10)
    tuner = p.autotune()
    tuner.stop()
    await p.run()
    assert tuner.history.empty and p.subscriptions[0].max_demand == 10


def test_autotune_checks_its_options():
    p = gs.Pipeline()
    with pytest.raises(
        ValueError, match="autotune: target_latency must be a number of seconds > 0"
    ):
        p.autotune(target_latency=0)
    with pytest.raises(ValueError, match="autotune: max_in_flight must be an int >= 1"):
        p.autotune(max_in_flight=0)


def test_the_dashboard_auto_toggle_runs_a_tuner_and_the_sliders_follow_it():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(10)), name="src")
    sub = p.link(src, p.add(gs.consumer(len, name="sink")), max_demand=10)
    dash = p.dashboard()
    dash.auto.value = True
    tuner = dash.tuner
    assert tuner is not None and tuner in p._tuners
    for listener in tuner.listeners:  # what the tuner does when it changes a link
        sub.tune(max_demand=4000, min_demand=2000)
        listener(sub, 4000)
    (sliders,) = dash.sliders
    assert sliders.max_slider.value == 4000 and sliders.max_slider.max >= 4000
    assert (sub.max_demand, sub.min_demand) == (4000, 2000)
    dash.auto.value = False
    assert tuner._stopped and dash.tuner is None
    dash.close()


def test_the_throughput_panel_marks_each_change_of_the_tuner():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(100)), name="src")
    p.link(src, p.add(gs.consumer(len, name="sink")))
    p.run_sync()
    tuner = p.autotune()
    tuner._rows += [(0.1, "src -> sink", 2000, 10.0), (0.2, "src -> sink", 4000, 20.0)]
    throughput = p.plot().axes[0]
    marks = [line for line in throughput.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in marks] == [0.1, 0.2]
    assert "max_demand tuned" in [t.get_text() for t in throughput.get_legend().get_texts()]


def test_a_tuner_serves_one_run():
    p = gs.Pipeline(metrics_interval=0.05)
    src = p.add(gs.from_iterable(range(1000)), name="src")
    p.link(src, p.add(gs.consumer(len, name="sink")), max_demand=10)
    tuner = p.autotune()
    p.run_sync()
    assert tuner._stopped  # the run ended: so did the tuner
    p.subscriptions[0].tune(max_demand=7)
    p.run_sync()  # a second run: nothing tunes it
    assert p.subscriptions[0].max_demand == 7


def test_the_sliders_follow_a_link_changed_elsewhere_without_tuning_it_again():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(10)), name="src")
    sub = p.link(src, p.add(gs.consumer(len, name="sink")), max_demand=10)
    dash = p.dashboard()
    sub.tune(max_demand=3000, min_demand=100)  # code (or a tuner) changed the link
    dash.update()
    (sliders,) = dash.sliders
    assert (sliders.max_slider.value, sliders.min_slider.value) == (3000, 100)
    assert (sub.max_demand, sub.min_demand) == (3000, 100)  # not re-tuned to half
    dash.close()


# -- settling --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(1, 5000),
    seen=st.lists(
        st.tuples(st.floats(0.0, 1e6), st.integers(0, 10**6), st.floats(0.0, 0.5)),
        min_size=1,
        max_size=300,
    ),
)
def test_property_whatever_it_measures_it_makes_a_bounded_number_of_steps(start, seen):
    """Any throughput, in flight and noise, in any order: a bounded number of moves, then
    it stays (growth ends at MAX_STEPS; after that only halvings, each below the last)."""
    from genstage_nb.tuning import MAX_STEPS

    rule = TuneRule(start, max_in_flight=50_000, target_latency=1.0)
    moves = [v for t, f, n in seen if (v := rule.observe(t, f, n)) is not None]
    assert len(moves) <= MAX_STEPS + start.bit_length()
    if rule.phase == "done":
        assert rule.reason


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.floats(50.0, 5000.0),
    start=st.integers(1, 2000),
    wobble=st.lists(st.floats(-0.15, 0.15), min_size=200, max_size=200),
)
def test_property_a_stage_limited_by_its_concurrency_settles_and_stays(capacity, start, wobble):
    """The pipeline of the flights notebook: an async stage whose concurrency caps the
    throughput, whatever max_demand; in flight grows with max_demand; each measurement
    is off by up to 15% and says so. The tuner settles and then never moves again."""
    rule = TuneRule(start, max_in_flight=100_000, target_latency=1.0)
    value, moves, last_move = start, 0, -1
    for i, error in enumerate(wobble):
        throughput = min(capacity, 10.0 * value) * (1 + error)
        new = rule.observe(throughput, 2 * value, noise=0.15 / 3)
        if new is not None:
            value, moves, last_move = new, moves + 1, i
    assert rule.settled and moves <= 16
    assert last_move < 40, "it went on moving"


def test_noise_it_measured_is_not_a_gain():
    rule = TuneRule(100, max_in_flight=10**6, target_latency=10.0)
    assert rule.observe(1000.0, 100, noise=0.04) == 200
    assert rule.observe(1080.0, 200, noise=0.04) == 100  # +8%: under 3x 4% of noise
    assert rule.settled and "3x the noise measured, 4.0%" in rule.reason
    quiet = TuneRule(100, max_in_flight=10**6, target_latency=10.0)
    quiet.observe(1000.0, 100, noise=0.01)
    assert quiet.observe(1080.0, 200, noise=0.01) == 400  # +8% beats 5% and 3x 1%


def test_it_never_grows_back_to_a_value_that_crossed_the_bounds():
    rule = TuneRule(500, max_in_flight=10**6, target_latency=1.0)
    assert rule.observe(100.0, 500) == 250  # 500 in flight at 100/s: over a second's worth
    assert rule.observe(100.0, 250) == 125
    assert rule.observe(100.0, 62) is None and rule.settled  # within: it stays
    assert "backed off from max_demand 250" in rule.reason
    for throughput in (300.0, 60.0, 400.0, 30.0):  # the workload moves: it may start again
        new = rule.observe(throughput, rule.current // 2)
        assert new is None or new <= 249


def test_a_link_a_user_changes_is_left_to_the_user_with_a_notice(capsys):
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(10)), name="src")
    sub = p.link(src, p.add(gs.consumer(len, name="sink")), max_demand=10)
    tuner = p.autotune()
    tuner._links = [sub]
    tuner._rule = TuneRule(10, max_in_flight=1000, target_latency=1.0)
    tuner._apply(40)
    assert (sub.max_demand, sub.min_demand, sub._min_default) == (40, 20, True)
    tuner._release_changed()
    assert tuner.released == []  # its own change
    sub.tune(max_demand=1000)  # a slider, a cell run again, or code
    tuner._release_changed()
    assert tuner.released == [sub] and tuner._links == []
    assert (sub.max_demand, sub.min_demand) == (1000, 500)  # the min follows, as defaulted
    out = capsys.readouterr().out
    assert "src -> sink: max_demand set to 1000 by you; the tuner leaves this link alone" in out
    assert tuner.settled and tuner.reason == "its links were changed by you"
    tuner.stop()
    assert tuner.state == "stopped"
