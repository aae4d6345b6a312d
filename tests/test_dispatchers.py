"""Dispatchers as plain data: GenStage's dispatcher test scenarios and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import genstage_nb as gs
from genstage_nb import BroadcastDispatcher, DemandDispatcher, PartitionDispatcher


class Sub:
    """Stands for a subscription: identity, plus the options dispatchers read."""

    def __init__(self, name, partition=None, selector=None):
        self.name = name
        self.partition = partition
        self.selector = selector

    def __repr__(self):
        return self.name


def state(d: DemandDispatcher):
    return [(c, s.name) for c, s in d._demands], d._pending, d._max


def sent(deliveries):
    return [(s.name, e) for s, e in deliveries]


# -- DemandDispatcher (GenStage's demand_dispatcher_test.exs) -------------------------


def test_demand_subscribes_and_cancels():
    d, a = DemandDispatcher(), Sub("a")
    d.subscribe(a)
    assert state(d) == ([(0, "a")], 0, None)
    assert d.cancel(a) == 0
    assert state(d) == ([], 0, None)


def test_demand_subscribes_asks_and_cancels_leaving_demand_not_asked_again():
    d, a = DemandDispatcher(), Sub("a")
    d.subscribe(a)
    assert d.ask(a, 10) == (10, [])
    assert state(d) == ([(10, "a")], 0, 10)
    assert d.cancel(a) == 0
    assert state(d) == ([], 10, 10)
    # Subscribe, ask and cancel and leave the same demand.
    d.subscribe(a)
    assert d.ask(a, 5) == (0, [])
    assert state(d) == ([(5, "a")], 5, 10)
    assert d.cancel(a) == 0
    assert state(d) == ([], 10, 10)
    # Dispatch with no consumers: all left over, the pending demand is used up.
    assert d.dispatch(["a", "b", "c"]) == ([], ["a", "b", "c"], 0)
    assert state(d) == ([], 7, 10)
    d.dispatch(list(range(1, 11)))
    assert state(d) == ([], 0, 10)


def test_demand_subscribes_twice_asks_twice_and_cancels_one():
    d, a, b = DemandDispatcher(), Sub("a"), Sub("b")
    d.subscribe(a)
    assert d.ask(a, 3) == (3, [])
    d.subscribe(b)
    assert d.ask(b, 3) == (3, [])
    assert state(d) == ([(3, "a"), (3, "b")], 0, 3)
    assert d.cancel(a) == 0
    assert state(d) == ([(3, "b")], 3, 3)
    deliveries, leftover, _ = d.dispatch(["a", "b", "c", "d", "e"])
    assert sent(deliveries) == [("b", ["a", "b", "c"])]
    assert leftover == ["d", "e"]
    assert state(d) == ([(0, "b")], 1, 3)


def test_demand_subscribes_asks_and_dispatches():
    d, a = DemandDispatcher(), Sub("a")
    d.subscribe(a)
    assert d.ask(a, 3) == (3, [])
    deliveries, leftover, _ = d.dispatch(["a"])
    assert (sent(deliveries), leftover) == ([("a", ["a"])], [])
    assert state(d) == ([(2, "a")], 0, 3)
    assert d.ask(a, 3) == (3, [])
    assert state(d) == ([(5, "a")], 0, 3)
    deliveries, leftover, _ = d.dispatch(list("bcdefgh"))
    assert sent(deliveries) == [("a", list("bcdef"))]
    assert leftover == ["g", "h"]
    assert state(d) == ([(0, "a")], 0, 3)
    assert d.dispatch(["i", "j"]) == ([], ["i", "j"], 0)


def test_demand_asks_keep_the_highest_demand_first():
    d = DemandDispatcher()
    a, b, c = Sub("a"), Sub("b"), Sub("c")
    for s in (a, b, c):
        d.subscribe(s)
    assert [d.ask(a, 4)[0], d.ask(b, 2)[0], d.ask(c, 3)[0]] == [4, 2, 3]
    assert state(d) == ([(4, "a"), (3, "c"), (2, "b")], 0, 4)
    assert d.ask(c, 2) == (2, [])
    assert state(d) == ([(5, "c"), (4, "a"), (2, "b")], 0, 4)
    assert d.ask(b, 4) == (4, [])
    assert state(d) == ([(6, "b"), (5, "c"), (4, "a")], 0, 4)


def test_demand_dispatches_to_multiple_consumers():
    d, a, b = DemandDispatcher(), Sub("a"), Sub("b")
    d.subscribe(a)
    d.subscribe(b)
    d.ask(a, 3)
    d.ask(b, 2)
    assert state(d) == ([(3, "a"), (2, "b")], 0, 3)
    # One batch fits all.
    deliveries, leftover, _ = d.dispatch(list("abcde"))
    assert sent(deliveries) == [("a", list("abc")), ("b", list("de"))]
    assert leftover == []
    assert d.dispatch(list("abc")) == ([], list("abc"), 0)
    assert state(d) == ([(0, "a"), (0, "b")], 0, 3)
    # Two batches with left over.
    d.ask(a, 3)
    d.ask(b, 3)
    assert state(d) == ([(3, "a"), (3, "b")], 0, 3)
    deliveries, _, _ = d.dispatch(["a", "b"])
    assert sent(deliveries) == [("a", ["a", "b"])]
    assert state(d) == ([(3, "b"), (1, "a")], 0, 3)
    deliveries, _, _ = d.dispatch(["c", "d"])
    assert sent(deliveries) == [("b", ["c", "d"])]
    assert state(d) == ([(1, "a"), (1, "b")], 0, 3)
    # Eliminate the left-over.
    deliveries, leftover, _ = d.dispatch(["e", "f", "g"])
    assert sent(deliveries) == [("a", ["e"]), ("b", ["f"])]
    assert leftover == ["g"]
    assert state(d) == ([(0, "a"), (0, "b")], 0, 3)


def test_demand_shuffles_once_before_the_first_dispatch():
    d, a, b = DemandDispatcher(shuffle_demands_on_first_dispatch=True), Sub("a"), Sub("b")
    d.subscribe(a)
    d.subscribe(b)
    d.ask(a, 3)
    d.ask(b, 2)
    deliveries, leftover, _ = d.dispatch(list("abcde"))
    assert leftover == []
    assert sorted(sent(deliveries)) in (
        [("a", list("abc")), ("b", list("de"))],
        [("a", list("cde")), ("b", list("ab"))],
    )
    assert d._shuffle is False


def test_demand_warns_about_greedy_consumers(caplog):
    d, a, b = DemandDispatcher(), Sub("a"), Sub("b")
    d.subscribe(a)
    d.subscribe(b)
    d.ask(a, 3)
    d.ask(b, 5)
    assert "expects a maximum demand of 3" in caplog.text
    assert "got demand for 5 events" in caplog.text
    d.ask(b, 5)
    assert caplog.text.count("expects a maximum demand") == 1  # once per subscription


def test_demand_follows_a_lone_consumer_tuned_up_without_warning(caplog):
    d, a = DemandDispatcher(), Sub("a")
    d.subscribe(a)
    assert d.ask(a, 10) == (10, [])
    assert d.ask(a, 995) == (995, [])
    assert d._max == 995
    assert "expects a maximum demand" not in caplog.text


# -- BroadcastDispatcher (GenStage's broadcast_dispatcher_test.exs) -------------------


def bstate(d: BroadcastDispatcher):
    return [(c, s.name) for c, s, _ in d._demands], d._waiting, d._requested


def test_broadcast_subscribes_asks_and_cancels():
    d, a = BroadcastDispatcher(), Sub("a")
    d.subscribe(a)
    assert bstate(d) == ([(0, "a")], 0, 0)
    assert d.ask(a, 10) == (10, [])
    assert bstate(d) == ([(0, "a")], 10, 10)
    assert d.cancel(a) == 0
    assert bstate(d) == ([], 0, 10)
    assert d.dispatch([1, 2, 3]) == ([], [1, 2, 3], 0)
    # They count against what was requested (they wait in the producer's buffer).
    assert bstate(d) == ([], 0, 7)


def test_broadcast_multiple_subscriptions_with_early_demand():
    d, a, b = BroadcastDispatcher(), Sub("a"), Sub("b")
    d.subscribe(a)
    assert d.ask(a, 10) == (10, [])
    d.subscribe(b)
    assert bstate(d) == ([(0, "b"), (10, "a")], 0, 10)
    assert d.cancel(a) == 0
    assert bstate(d) == ([(0, "b")], 0, 10)
    assert d.ask(b, 10) == (0, [])
    assert bstate(d) == ([(0, "b")], 10, 10)


def test_broadcast_multiple_subscriptions_with_late_demand():
    d, a, b = BroadcastDispatcher(), Sub("a"), Sub("b")
    d.subscribe(a)
    d.subscribe(b)
    assert bstate(d) == ([(0, "b"), (0, "a")], 0, 0)
    assert d.ask(a, 10) == (0, [])
    assert bstate(d) == ([(10, "a"), (0, "b")], 0, 0)
    # The slowest consumer leaves: the others' demand goes upstream.
    assert d.cancel(b) == 10
    assert bstate(d) == ([(0, "a")], 10, 10)
    assert d.ask(a, 10) == (10, [])
    assert bstate(d) == ([(0, "a")], 20, 20)


def test_broadcast_dispatches_to_multiple_consumers_paced_by_the_slowest():
    d, a, b, c = BroadcastDispatcher(), Sub("a"), Sub("b"), Sub("c")
    d.subscribe(a)
    d.subscribe(b)
    assert d.ask(a, 3) == (0, [])
    assert d.ask(b, 2) == (2, [])
    assert bstate(d) == ([(0, "b"), (1, "a")], 2, 2)
    # One batch fits all.
    deliveries, leftover, _ = d.dispatch(["a", "b"])
    assert sorted(sent(deliveries)) == [("a", ["a", "b"]), ("b", ["a", "b"])]
    assert leftover == []
    assert bstate(d) == ([(0, "b"), (1, "a")], 0, 0)
    # A batch with left-over.
    assert d.ask(b, 2) == (1, [])
    deliveries, leftover, _ = d.dispatch(["c", "d"])
    assert sorted(sent(deliveries)) == [("a", ["c"]), ("b", ["c"])]
    assert leftover == ["d"]
    assert bstate(d) == ([(1, "b"), (0, "a")], 0, 0)
    # A batch with no demand.
    assert d.dispatch(["d"]) == ([], ["d"], 0)
    # A late subscriber.
    assert d.ask(a, 1) == (1, [])
    d.subscribe(c)
    assert d.dispatch(["d", "e"]) == ([], ["d", "e"], 0)
    # (GenStage keeps 1 requested here; the two events made count against it.)
    assert bstate(d) == ([(0, "c"), (1, "a"), (1, "b")], 0, 0)
    # Even out: the producer serves its buffer (d, e) first and asks one event more.
    assert d.ask(a, 2) == (0, [])
    assert d.ask(b, 2) == (0, [])
    assert d.ask(c, 3) == (3, [])
    deliveries, leftover, _ = d.dispatch(["d", "e"])
    assert sorted(sent(deliveries)) == [(n, ["d", "e"]) for n in "abc"]
    deliveries, leftover, _ = d.dispatch(["f"])
    assert sorted(sent(deliveries)) == [(n, ["f"]) for n in "abc"]
    assert bstate(d) == ([(0, "c"), (0, "b"), (0, "a")], 0, 0)


def test_broadcast_subscribes_asks_dispatches_and_repeats():
    d, a, b = BroadcastDispatcher(), Sub("a"), Sub("b")
    d.subscribe(a)
    assert d.ask(a, 10) == (10, [])
    deliveries, _, _ = d.dispatch(["a", "b", "c"])
    assert sent(deliveries) == [("a", ["a", "b", "c"])]
    assert bstate(d) == ([(0, "a")], 7, 7)
    d.subscribe(b)
    assert bstate(d) == ([(0, "b"), (7, "a")], 0, 7)
    assert d.ask(b, 20) == (0, [])
    assert bstate(d) == ([(13, "b"), (0, "a")], 7, 7)
    deliveries, leftover, _ = d.dispatch(list("defghij"))
    assert sorted(sent(deliveries)) == [("a", list("defghij")), ("b", list("defghij"))]
    assert bstate(d) == ([(13, "b"), (0, "a")], 0, 0)


def test_broadcast_reuses_requested_demand_for_another_subscriber():
    d, a, b = BroadcastDispatcher(), Sub("a"), Sub("b")
    d.subscribe(a)
    assert d.ask(a, 10) == (10, [])
    assert d.cancel(a) == 0
    d.subscribe(b)
    assert bstate(d) == ([(0, "b")], 0, 10)
    assert d.ask(b, 5) == (0, [])
    assert bstate(d) == ([(0, "b")], 5, 10)
    deliveries, _, _ = d.dispatch(["a", "b", "c"])
    assert sent(deliveries) == [("b", ["a", "b", "c"])]
    assert bstate(d) == ([(0, "b")], 2, 7)


def test_broadcast_cancels_a_blocking_subscriber_with_requested_demand():
    d, a, b = BroadcastDispatcher(), Sub("a"), Sub("b")
    d.subscribe(a)
    assert d.ask(a, 10) == (10, [])
    d.subscribe(b)
    assert bstate(d) == ([(0, "b"), (10, "a")], 0, 10)
    assert d.ask(a, 5) == (0, [])
    assert bstate(d) == ([(15, "a"), (0, "b")], 0, 10)
    assert d.cancel(b) == 5
    assert bstate(d) == ([(0, "a")], 15, 15)


def test_broadcast_selectors_filter_and_ask_again_for_what_they_reject():
    pre = Sub("pre", selector=lambda e: e.startswith("pre"))
    pref = Sub("pref", selector=lambda e: e.startswith("pref"))
    d = BroadcastDispatcher()
    d.subscribe(pre)
    d.subscribe(pref)
    assert d.ask(pref, 4) == (0, [])
    assert d.ask(pre, 4) == (4, [])
    events = ["pref-1234", "pref-5678", "pre0000", "foo0000"]
    deliveries, leftover, demand = d.dispatch(events)
    assert sorted(sent(deliveries)) == [
        ("pre", ["pref-1234", "pref-5678", "pre0000"]),
        ("pref", ["pref-1234", "pref-5678"]),
    ]
    assert leftover == []
    # pre rejected 1 and pref 2: asked again on their behalf; the common part (1)
    # goes upstream.
    assert demand == 1


def test_broadcast_rejects_a_selector_that_is_not_callable():
    with pytest.raises(TypeError, match="selector must be a callable"):
        BroadcastDispatcher().subscribe(Sub("a", selector="nope"))


# -- PartitionDispatcher -----------------------------------------------------------


def test_partition_sends_each_event_to_its_partition():
    d = PartitionDispatcher(partitions=2, hash=lambda e: e % 2)
    even, odd = Sub("even", partition=0), Sub("odd", partition=1)
    d.subscribe(even)
    d.subscribe(odd)
    assert d.ask(even, 3) == (3, [])
    assert d.ask(odd, 3) == (3, [])
    deliveries, leftover, _ = d.dispatch([1, 2, 3, 4, 5, 6])
    assert sorted(sent(deliveries)) == [("even", [2, 4, 6]), ("odd", [1, 3, 5])]
    assert leftover == []
    assert d.buffered() == 0


def test_partition_queues_events_beyond_a_partitions_demand_and_serves_them_on_ask():
    d = PartitionDispatcher(partitions=2, hash=lambda e: e % 2)
    even, odd = Sub("even", partition=0), Sub("odd", partition=1)
    d.subscribe(even)
    d.subscribe(odd)
    d.ask(even, 1)
    d.ask(odd, 3)
    # 4 asked upstream in all; 4 events taken, the rest left over.
    deliveries, leftover, _ = d.dispatch([0, 2, 4, 1, 3, 5])
    assert sent(deliveries) == [("even", [0]), ("odd", [1])]
    assert leftover == [3, 5]
    assert d.buffered() == 2  # 2 and 4 wait for the even partition
    assert d.demand_of(odd) == 2
    # Asking serves the queue first; only the rest goes upstream as new demand.
    demand, deliveries = d.ask(even, 3)
    assert sent(deliveries) == [("even", [2, 4])]
    assert demand == 3
    assert d.demand_of(even) == 1


def test_partition_hash_none_discards_and_does_not_use_demand():
    d = PartitionDispatcher(partitions=1, hash=lambda e: None if e < 0 else 0)
    s = Sub("s", partition=0)
    d.subscribe(s)
    d.ask(s, 2)
    deliveries, leftover, _ = d.dispatch([-1, 5, -2, 6, 7])
    assert sent(deliveries) == [("s", [5, 6])]
    assert leftover == [7]
    assert d.discarded == 2


def test_partition_names_with_hash():
    d = PartitionDispatcher(partitions=["a", "b"], hash=lambda e: e[0])
    a, b = Sub("a", partition="a"), Sub("b", partition="b")
    d.subscribe(a)
    d.subscribe(b)
    d.ask(a, 5)
    d.ask(b, 5)
    deliveries, _, _ = d.dispatch(["apple", "banana", "avocado"])
    assert sorted(sent(deliveries)) == [("a", ["apple", "avocado"]), ("b", ["banana"])]


def test_partition_default_hash_spreads_ints():
    d = PartitionDispatcher(partitions=3)
    subs = [Sub(str(i), partition=i) for i in range(3)]
    for s in subs:
        d.subscribe(s)
        d.ask(s, 10)
    deliveries, _, _ = d.dispatch(list(range(9)))
    assert sorted(sent(deliveries)) == [("0", [0, 3, 6]), ("1", [1, 4, 7]), ("2", [2, 5, 8])]


def test_partition_cancel_forgets_demand_and_keeps_queued_events_for_the_next_consumer():
    d = PartitionDispatcher(partitions=1, hash=lambda e: 0)
    first, second = Sub("first", partition=0), Sub("second", partition=0)
    d.subscribe(first)
    assert d.ask(first, 4) == (4, [])
    d.dispatch([1, 2])
    assert d.cancel(first) == 0
    # The 2 events of demand left were already asked upstream: not asked again.
    d.subscribe(second)
    assert d.ask(second, 2) == (0, [])
    assert d.ask(second, 3) == (3, [])
    d.dispatch([3, 4, 5, 6, 7])
    assert d.buffered() == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"partitions": 0}, ValueError, r"partitions \(0\) must be at least 1"),
        ({"partitions": []}, ValueError, "partitions must not be empty"),
        ({"partitions": ["a", "b"]}, ValueError, "pass hash="),
        ({"partitions": [1, 1]}, ValueError, "must be unique"),
        ({"partitions": 2, "hash": 3}, TypeError, "hash must be callable"),
        ({"partitions": 2.5}, TypeError, "partitions must be an int or a list"),
        ({"partitions": True}, TypeError, "partitions must be an int or a list"),
    ],
)
def test_partition_bad_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        PartitionDispatcher(**kwargs)


def test_partition_subscribe_errors():
    d = PartitionDispatcher(partitions=2)
    with pytest.raises(ValueError, match="must pass partition="):
        d.subscribe(Sub("x"))
    with pytest.raises(ValueError, match=r"partition must be one of \[0, 1\], got 5"):
        d.subscribe(Sub("x", partition=5))
    d.subscribe(Sub("x", partition=0))
    with pytest.raises(ValueError, match="partition 0 is already taken"):
        d.subscribe(Sub("y", partition=0))


def test_partition_unknown_partition_from_hash_is_an_error_naming_it():
    d = PartitionDispatcher(partitions=2, hash=lambda e: 7)
    s = Sub("s", partition=0)
    d.subscribe(s)
    d.ask(s, 5)
    with pytest.raises(ValueError, match="unknown partition 7"):
        d.dispatch([1])
    # Nothing changed: the demand is still there.
    assert d._waiting == 5


# -- properties ----------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("subscribe"), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 3)),
        st.tuples(st.just("ask"), st.integers(0, 3), st.integers(1, 20)),
        st.tuples(st.just("dispatch"), st.integers(0, 30)),
    ),
    max_size=60,
)


def run_ops(d, ops, subs):
    """Drive ``d`` like a producer would; return per-sub received lists and totals."""
    live: set = set()
    asked = {s: 0 for s in subs}
    received: dict = {s: [] for s in subs}
    made = 0
    leftover_total: list = []
    upstream = 0
    for op in ops:
        kind = op[0]
        s = subs[op[1]] if kind != "dispatch" else None
        if kind == "subscribe" and s not in live:
            d.subscribe(s)
            live.add(s)
        elif kind == "cancel" and s in live:
            upstream += d.cancel(s)
            live.discard(s)
        elif kind == "ask" and s in live:
            demand, deliveries = d.ask(s, op[2])
            asked[s] += op[2]
            upstream += demand
            for to, events in deliveries:
                received[to].extend(events)
        elif kind == "dispatch":
            events = list(range(made, made + op[1]))
            made += op[1]
            deliveries, leftover, demand = d.dispatch(events)
            upstream += demand
            for to, evs in deliveries:
                assert to in live
                received[to].extend(evs)
            leftover_total.extend(leftover)
    return received, asked, made, leftover_total, upstream


@given(ops)
def test_property_demand_dispatcher_never_exceeds_asks_and_loses_nothing(ops):
    subs = [Sub(str(i)) for i in range(4)]
    d = DemandDispatcher()
    received, asked, made, leftover, _ = run_ops(d, ops, subs)
    everything = [e for s in subs for e in received[s]] + leftover
    assert sorted(everything) == list(range(made))  # no loss, no duplicate
    for s in subs:
        assert len(received[s]) <= asked[s]
        assert received[s] == sorted(received[s])  # order per consumer


@given(ops)
def test_property_partition_dispatcher_never_exceeds_asks_and_loses_nothing(ops):
    subs = [Sub(str(i), partition=i) for i in range(4)]
    d = PartitionDispatcher(partitions=4, hash=lambda e: None if e % 7 == 6 else e % 4)
    received, asked, made, leftover, _ = run_ops(d, ops, subs)
    queued = [e for p in d._parts.values() for e in p.queue]
    everything = [e for s in subs for e in received[s]] + leftover + queued
    discarded = [e for e in range(made) if e % 7 == 6 and e not in leftover]
    assert len(discarded) == d.discarded
    assert sorted(everything + discarded) == list(range(made))  # no loss, no duplicate
    assert len(set(everything)) == len(everything)
    for i, s in enumerate(subs):
        assert len(received[s]) <= asked[s]
        assert received[s] == sorted(received[s])
        assert all(e % 4 == i for e in received[s])


@given(ops)
def test_property_broadcast_dispatcher_paces_every_consumer_by_its_own_demand(ops):
    subs = [Sub(str(i), selector=(lambda e: e % 2 == 0) if i == 3 else None) for i in range(4)]
    d = BroadcastDispatcher()
    received, asked, made, leftover, upstream = run_ops(d, ops, subs)
    for s in subs:
        got = received[s]
        assert len(got) <= asked[s]
        assert got == sorted(set(got))  # in order, no duplicate
        if s.selector is not None:
            assert all(s.selector(e) for e in got)
    # Every event was delivered (to the consumers there at the time) or left over.
    delivered = set().union(*(set(received[s]) for s in subs))
    assert delivered.isdisjoint(leftover)


# -- a dispatcher driven as the runtime's producer drives it --------------------------


class ModelProducer:
    """A producer as ``core/producing.py`` drives its dispatcher: new demand is served
    from the buffer first (as far as the dispatcher can send on) and the rest is owed
    by ``handle_demand``; events made while older ones are buffered queue behind them."""

    def __init__(self, dispatcher):
        self.d = dispatcher
        self.buffer: list = []
        self.owed = 0  # demand passed to handle_demand and not yet made
        self.made = 0
        self.received: dict = {}

    def demand(self, n):
        ready = self.d.ready()
        if self.buffer and max(n, ready):
            taken, self.buffer = self.buffer[: max(n, ready)], self.buffer[max(n, ready) :]
            self._dispatch(taken, from_buffer=True)
            n = max(n - len(taken), 0)
        self.owed += n

    def make(self, k):
        events = list(range(self.made, self.made + k))
        self.made += k
        self.owed = max(self.owed - k, 0)
        if self.buffer:
            self.buffer.extend(events)
            self.demand(0)
        else:
            self._dispatch(events)

    def _dispatch(self, events, from_buffer=False):
        deliveries, leftover, extra = self.d.dispatch(events)
        for sub, got in deliveries:
            self.received.setdefault(sub, []).extend(got)
        self.buffer = leftover + self.buffer if from_buffer else self.buffer + leftover
        if extra:
            self.demand(extra)


def test_broadcast_serves_a_late_subscriber_without_forgetting_buffered_events():
    """Found by the generated pipelines (a stream joining a broadcast): events asked before
    a consumer joined wait in the buffer; the next demand must be served from it *and*
    ask the producer for the rest, or every consumer waits for ever."""
    d, a, b = BroadcastDispatcher(), Sub("a"), Sub("b")
    producer = ModelProducer(d)
    d.subscribe(a)
    producer.demand(d.ask(a, 10)[0])
    d.subscribe(b)
    producer.make(10)  # asked by a before b joined: buffered
    assert producer.buffer == list(range(10))
    producer.demand(d.ask(a, 5)[0])
    producer.demand(d.ask(b, 15)[0])
    assert producer.received == {a: list(range(10)), b: list(range(10))}
    assert producer.owed == 5  # a and b each want 5 more: asked of the producer
    producer.make(5)
    assert producer.received[a] == producer.received[b] == list(range(15))


producer_ops = st.lists(
    st.one_of(
        st.tuples(st.just("subscribe"), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 3)),
        st.tuples(st.just("ask"), st.integers(0, 3), st.integers(1, 20)),
        st.tuples(st.just("make"), st.integers(0, 30)),
    ),
    max_size=60,
)


@pytest.mark.parametrize("kind", ["demand", "broadcast"])
@given(ops=producer_ops)
def test_property_a_producer_never_leaves_demand_unserved(kind, ops):
    """Whatever the order of joins, asks, leaves and events made (fewer or more than
    asked), once the producer has made what it owes, no consumer with demand waits
    while events are buffered, and not every consumer waits (a stall)."""
    subs = [Sub(str(i), selector=(lambda e: e % 2 == 0) if i == 3 else None) for i in range(4)]
    d = DemandDispatcher() if kind == "demand" else BroadcastDispatcher()
    producer, live, asked = ModelProducer(d), [], dict.fromkeys(subs, 0)
    for op in ops:
        s = subs[op[1]] if op[0] != "make" else None
        if op[0] == "subscribe" and s not in live:
            d.subscribe(s)
            live.append(s)
        elif op[0] == "cancel" and s in live:
            live.remove(s)
            producer.demand(d.cancel(s))
        elif op[0] == "ask" and s in live:
            asked[s] += op[2]
            demand, deliveries = d.ask(s, op[2])
            assert deliveries == []
            producer.demand(demand)
        elif op[0] == "make":
            producer.make(op[1])
    for _ in range(100):
        if not producer.owed:
            break
        producer.make(producer.owed)
    assert producer.owed == 0
    for s in subs:
        got = producer.received.get(s, [])
        assert len(got) <= asked[s] and got == sorted(set(got))
    if producer.buffer:
        assert d.ready() == 0, "a consumer has demand while events wait in the buffer"
    if live:
        waiting = [d.demand_of(s) for s in live]
        assert min(waiting) == 0, f"every consumer waits for ever: {waiting}"


def test_each_dispatcher_checks_its_own_subscription_options():
    select = lambda e: True  # noqa: E731
    DemandDispatcher().check_subscription(None, None, [])
    with pytest.raises(ValueError, match="partition= needs a producer with a PartitionD"):
        DemandDispatcher().check_subscription(0, None, [])
    with pytest.raises(ValueError, match="selector= needs a producer with a BroadcastD"):
        DemandDispatcher().check_subscription(None, select, [])
    BroadcastDispatcher().check_subscription(None, select, [])
    with pytest.raises(ValueError, match="partition= needs"):
        BroadcastDispatcher().check_subscription(1, None, [])
    parts = PartitionDispatcher(partitions=2)
    parts.check_subscription(1, None, [0])
    with pytest.raises(ValueError, match="partition 0 is already taken"):
        parts.check_subscription(0, None, [0])
    with pytest.raises(ValueError, match="must pass partition="):
        parts.check_subscription(None, None, [])
    with pytest.raises(ValueError, match="selector= needs"):
        parts.check_subscription(1, select, [])
    assert BroadcastDispatcher.copies and not DemandDispatcher.copies
    assert not PartitionDispatcher(partitions=1).copies


class _Plain:
    """A user's dispatcher with the core of the protocol only: one consumer."""

    discarded = 0

    def __init__(self):
        self.sub, self.demand = None, 0

    def subscribe(self, sub):
        self.sub = sub

    def cancel(self, sub):
        self.sub = None
        return 0

    def ask(self, sub, n):
        self.demand += n
        return n, []

    def dispatch(self, events):
        n = min(len(events), self.demand)
        self.demand -= n
        return ([(self.sub, events[:n])] if n else []), events[n:], 0

    def buffered(self):
        return 0

    def ready(self):
        return self.demand

    def demand_of(self, sub):
        return self.demand


def test_a_users_dispatcher_without_the_checks_takes_no_partition_nor_selector():
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(20), dispatcher=_Plain), name="src")
    with pytest.raises(ValueError, match="link src -> a: _Plain takes neither partition="):
        p.link(src, p.add(gs.consumer(print), name="a"), selector=lambda e: True)
    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(20), dispatcher=_Plain), name="src")
    seen = []
    p.link(src, p.add(gs.consumer(seen.extend), name="b"), max_demand=3)
    p.run_sync()
    assert seen == list(range(20))
    gs.check_balance(p)
