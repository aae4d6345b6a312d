"""Beyond GenStage: a PartitionDispatcher's discarded event gives its demand back.

GenStage lets a discarded event use demand that no consumer sees again, so a hash that
discards can stall a pipeline for good (the case below stops after 33 + 26 events at
max_demand 5 in GenStage 1.3.2). Here the dispatcher returns that demand as extra demand
and the producer is asked for a replacement: every run completes.
"""

from __future__ import annotations

import anyio
import pytest
from helpers import Forwarder
from hypothesis import given, settings
from hypothesis import strategies as st

import genstage_nb as gs
from genstage_nb.core.partition import PartitionDispatcher

pytestmark = pytest.mark.anyio


class Sub:
    def __init__(self, name, partition):
        self.name = name
        self.partition = partition


def drops_nines(event):
    return None if event % 10 == 9 else event % 2


# -- the pure state machine -------------------------------------------------------


def test_a_discard_at_the_end_of_the_events_is_returned_as_demand():
    d = PartitionDispatcher(partitions=2, hash=drops_nines)
    even, odd = Sub("even", 0), Sub("odd", 1)
    d.subscribe(even)
    d.subscribe(odd)
    assert d.ask(even, 5) == (5, [])
    assert d.ask(odd, 5) == (5, [])
    deliveries, leftover, extra = d.dispatch(list(range(10)))
    assert [(s.name, e) for s, e in deliveries] == [
        ("even", [0, 2, 4, 6, 8]),
        ("odd", [1, 3, 5, 7]),
    ]
    assert leftover == []
    assert extra == 1  # event 9 was discarded: one more event is asked of the producer
    assert d.discarded == 1
    assert d.ready() == 1  # the demand it stands for is still waiting
    deliveries, leftover, extra = d.dispatch([11])
    assert [(s.name, e) for s, e in deliveries] == [("odd", [11])]
    assert (leftover, extra, d.ready()) == ([], 0, 0)


def test_discards_within_more_events_than_demand_look_further_and_ask_nothing():
    d = PartitionDispatcher(partitions=2, hash=drops_nines)
    even, odd = Sub("even", 0), Sub("odd", 1)
    d.subscribe(even)
    d.subscribe(odd)
    d.ask(even, 2)
    d.ask(odd, 2)
    deliveries, leftover, extra = d.dispatch([8, 9, 10, 19, 11, 12, 13, 14])
    # 9 and 19 are discarded; four events are kept, the rest is left for the buffer.
    assert [(s.name, e) for s, e in deliveries] == [("even", [8, 10]), ("odd", [11])]
    assert d.buffered() == 1  # 12 waits in the even partition's queue
    assert leftover == [13, 14]
    assert (extra, d.discarded, d.ready()) == (0, 2, 0)


def test_a_discard_never_returns_more_demand_than_is_waiting():
    d = PartitionDispatcher(partitions=1, hash=lambda e: None if e < 0 else 0)
    s = Sub("s", 0)
    d.subscribe(s)
    d.ask(s, 3)
    assert d.dispatch([-1, -2, 5])[2] == 2
    assert d.dispatch([-3, -4, 6, 7])[2] == 0  # 2 were waiting: 6 and 7 take them
    assert d.ready() == 0


@pytest.mark.parametrize(
    ("hash_value", "message"),
    [
        (2, "unknown partition 2"),
        (-1, "unknown partition -1"),
        ("a", "unknown partition 'a'"),
        ([0], "unknown partition [0]"),
    ],
)
def test_an_unknown_partition_is_named(hash_value, message):
    d = PartitionDispatcher(partitions=2, hash=lambda e: hash_value)
    s = Sub("s", 0)
    d.subscribe(s)
    d.ask(s, 3)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        d.dispatch([1, 2])


def test_an_error_raised_inside_the_hash_is_not_taken_for_an_unknown_partition():
    def broken(event):
        return {}[event]

    d = PartitionDispatcher(partitions=2, hash=broken)
    s = Sub("s", 0)
    d.subscribe(s)
    d.ask(s, 3)
    with pytest.raises(KeyError):
        d.dispatch([1])


def test_none_cannot_name_a_partition():
    with pytest.raises(ValueError, match="None cannot name a partition"):
        PartitionDispatcher(partitions=["a", None], hash=lambda e: "a")


# -- pipelines ----------------------------------------------------------------------


def partitioned(n, hash, partitions, max_demand, min_demand=None):
    p = gs.Pipeline(metrics_interval=None)
    dispatcher = gs.PartitionDispatcher(partitions=partitions, hash=hash)
    src = p.add(gs.from_iterable(range(n), dispatcher=dispatcher), name="numbers")
    sinks = []
    for i in range(partitions):
        sink = p.add(Forwarder(name=f"part{i}"))
        p.link(src, sink, partition=i, max_demand=max_demand, min_demand=min_demand)
        sinks.append(sink)
    return p, sinks


@pytest.mark.parametrize("max_demand", [1, 5, 64, 1000])
async def test_the_stalling_case_completes_with_every_kept_event_once_in_order(max_demand):
    p, (evens, odds) = partitioned(10_000, drops_nines, 2, max_demand)
    with anyio.fail_after(10):
        await p.run()
    assert evens.events == [e for e in range(10_000) if e % 2 == 0]
    assert odds.events == [e for e in range(10_000) if e % 2 == 1 and e % 10 != 9]
    balance = gs.check_balance(p)
    assert balance.loc["numbers", "discarded"] == 1000
    assert p.status == {"numbers": "done", "part0": "done", "part1": "done"}


async def test_a_hash_that_discards_every_event_completes():
    p, (sink,) = partitioned(1000, lambda e: None, 1, 10)
    with anyio.fail_after(10):
        await p.run()
    assert sink.events == []
    assert gs.check_balance(p).loc["numbers", "discarded"] == 1000


@settings(max_examples=60, deadline=None)
@given(
    partitions=st.integers(1, 4),
    modulus=st.integers(2, 7),
    dropped=st.sets(st.integers(0, 6), max_size=4),
    salt=st.integers(0, 3),
    max_demand=st.integers(1, 40),
    min_share=st.floats(0, 0.99),
    n=st.integers(0, 400),
)
def test_property_runs_with_discards_complete_and_balance(
    partitions, modulus, dropped, salt, max_demand, min_share, n
):
    def hash_(event):
        if event % modulus in dropped:
            return None
        return (event + salt) % partitions

    min_demand = min(int(max_demand * min_share), max_demand - 1)
    p, sinks = partitioned(n, hash_, partitions, max_demand, min_demand)

    async def main():
        with anyio.fail_after(10):
            await p.run()

    anyio.run(main)
    for i, sink in enumerate(sinks):
        kept = [e for e in range(n) if hash_(e) == i]
        assert sink.events == kept
    discards = sum(1 for e in range(n) if hash_(e) is None)
    balance = gs.check_balance(p)
    assert balance.loc["numbers", "discarded"] == discards
