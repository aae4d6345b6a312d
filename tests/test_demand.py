"""DemandState: GenStage's batch-splitting rule, exactly, as plain data."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genstage_nb.core.demand import DemandState, check_demand_options


def simulate(max_demand, min_demand, total):
    """A producer that always sends exactly what was asked, as one list per ask."""
    d = DemandState(max_demand, min_demand)
    asks = [d.initial_ask()]
    n = 0
    batches = []
    while n < total:
        ask = asks.pop(0)
        events = list(range(n, n + ask))
        n += ask
        for batch, more in d.split(events):
            batches.append(batch)
            if more:
                asks.append(more)
    return batches


def ranges(batches):
    return [(b[0], b[-1]) for b in batches]


def test_with_default_max_and_min_demand():
    assert ranges(simulate(1000, 500, 1000))[:2] == [(0, 499), (500, 999)]


def test_with_20_percent_min_demand():
    assert ranges(simulate(100, 20, 300))[:5] == [
        (0, 79),
        (80, 99),
        (100, 179),
        (180, 259),
        (260, 279),
    ]


def test_with_80_percent_min_demand():
    batches = ranges(simulate(100, 80, 1100))
    assert batches[:2] == [(0, 19), (20, 39)]
    assert (1000, 1019) in batches


def test_with_1_max_and_0_min_demand():
    assert simulate(1, 0, 3) == [[0], [1], [2]]


def test_first_ask_is_max_demand_and_pending_follows_batches():
    d = DemandState(10, 5)
    assert d.initial_ask() == 10
    assert d.split(list(range(4))) == [([0, 1, 2, 3], 0)]
    assert d.pending == 6
    # 6 - 2 = 4 <= 5: ask 10 - 4 = 6 to be back at 10.
    assert d.split([4, 5]) == [([4, 5], 6)]
    assert d.pending == 10


def test_excess_events_are_counted_and_clamped():
    d = DemandState(4, 0)
    d.initial_ask()
    batches = d.split(list(range(6)))
    # One batch of 4 (max - min), then the 2 in excess, which use no demand (GenStage
    # clamps them to what is left of it, 0), so they bring no ask.
    assert batches == [([0, 1, 2, 3], 4), ([4, 5], 0)]
    assert d.excess == 2


def test_manual_subscription_gets_one_batch_and_never_asks():
    d = DemandState(10, 5, manual=True)
    d.manual_ask(7)
    assert d.split(list(range(7))) == [(list(range(7)), 0)]
    assert d.pending == 0


@pytest.mark.parametrize(
    ("max_demand", "min_demand", "error", "message"),
    [
        (0, None, ValueError, "max_demand (0) must be at least 1"),
        (-3, None, ValueError, "max_demand (-3) must be at least 1"),
        (10, 10, ValueError, "min_demand (10) must be below max_demand (10)"),
        (10, 11, ValueError, "min_demand (11) must be below max_demand (10)"),
        (10, -1, ValueError, "min_demand (-1) must be 0 or more"),
        (1.5, None, TypeError, "max_demand must be an int"),
        (True, None, TypeError, "max_demand must be an int"),
        (10, "5", TypeError, "min_demand must be an int"),
    ],
)
def test_bad_demand_options_name_the_link_and_option(max_demand, min_demand, error, message):
    with pytest.raises(
        error, match=r"^link a -> b: " + message.replace("(", r"\(").replace(")", r"\)")
    ):
        check_demand_options("link a -> b", max_demand, min_demand)


def test_min_demand_defaults_to_half_of_max():
    assert check_demand_options("x", 1000, None) == (1000, 500)
    assert check_demand_options("x", 1, None) == (1, 0)
    assert check_demand_options("x", 7, None) == (7, 3)


demands = st.integers(1, 60).flatmap(lambda mx: st.tuples(st.just(mx), st.integers(0, mx - 1)))


@given(demands, st.lists(st.integers(1, 200), min_size=1, max_size=30), st.data())
def test_property_split_keeps_order_bounds_batches_and_conserves_demand(md, sizes, data):
    max_demand, min_demand = md
    d = DemandState(max_demand, min_demand)
    outstanding = d.initial_ask()  # asked of the producer, not yet sent
    sent = received = asked = 0
    asked = outstanding
    for _ in sizes:
        if not outstanding:
            break
        # The producer sends any part of what is outstanding, as one list.
        k = data.draw(st.integers(1, outstanding))
        events = list(range(sent, sent + k))
        sent += k
        outstanding -= k
        batches = d.split(events)
        assert [e for b, _ in batches for e in b] == events
        for batch, ask in batches:
            assert 1 <= len(batch) <= max_demand - min_demand
            assert ask >= 0
            outstanding += ask
            asked += ask
        received += k
        # Demand is conserved: what was asked is received or still pending.
        assert asked == received + d.pending
        assert min_demand < d.pending <= max_demand or d.pending == outstanding
        assert d.pending == outstanding
        assert d.excess == 0


@given(demands, st.integers(0, 59), st.integers(1, 40), st.data())
def test_property_realign_asks_a_whole_max_demand_once_nothing_is_pending(md, new_min, at, data):
    """After ``realign_to(m)``: no ask until every pending event is in, then one ask of
    exactly ``max_demand``, and ``min_demand`` is ``m`` again; demand is conserved."""
    max_demand, min_demand = md
    new_min = new_min % max_demand
    d = DemandState(max_demand, min_demand)
    outstanding = asked = d.initial_ask()
    received, realigning, realigned = 0, False, False
    for step in range(80):
        if step == at:
            d.realign_to(new_min)
            realigning = True
        k = data.draw(st.integers(1, outstanding))
        before = d.pending
        batches = d.split(list(range(k)))
        received += k
        outstanding -= k
        for i, (_, ask) in enumerate(batches):
            if ask and realigning:
                # The first ask since realign_to: only with nothing pending, and whole.
                left = before - sum(len(b) for b, _ in batches[: i + 1])
                assert left == 0 and ask == max_demand
                realigning, realigned = False, True
                assert d.min_demand == new_min
            outstanding += ask
            asked += ask
        assert asked == received + d.pending == received + outstanding
        assert d.pending <= max_demand
        if realigning:
            assert d.min_demand == 0
    if realigned:
        assert d.realign is None and d.min_demand == new_min
