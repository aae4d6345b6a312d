"""Buffer: bounded FIFO with keep first/last, as plain data (GenStage's buffer tests)."""

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genstage_nb import Buffer


def test_stores_and_serves_oldest_first_across_lists():
    b = Buffer()
    b.store(["a", "b", "c"])
    b.store(["d", "e"])
    assert len(b) == 5
    assert b.take(4) == ["a", "b", "c", "d"]
    assert b.take(4) == ["e"]
    assert b.take(4) == []
    assert len(b) == 0


def test_keep_first_drops_the_newest_and_reports_the_count():
    b = Buffer(5, keep="first")
    assert b.store(["a", "b", "c", "d", "e"]) == 0
    assert b.store(["f", "g", "h"]) == 3
    assert b.take(4) == ["a", "b", "c", "d"]
    assert b.take(4) == ["e"]


def test_keep_last_drops_the_oldest_and_reports_the_count():
    b = Buffer(5, keep="last")
    assert b.store(["a", "b", "c", "d", "e"]) == 0
    assert b.store(["f", "g", "h"]) == 3
    assert b.take(4) == ["d", "e", "f", "g"]
    assert b.take(4) == ["h"]


def test_unbounded_buffer_never_drops():
    b = Buffer(None)
    assert b.store(["a", "b", "c", "d", "e"]) == 0
    assert b.store(["f", "g", "h"]) == 0
    assert b.take(4) == ["a", "b", "c", "d"]
    assert b.take(4) == ["e", "f", "g", "h"]


def test_one_list_larger_than_the_buffer():
    last = Buffer(3, keep="last")
    assert last.store(list(range(10))) == 7
    assert last.take_all() == [7, 8, 9]
    first = Buffer(3, keep="first")
    assert first.store(list(range(10))) == 7
    assert first.take_all() == [0, 1, 2]


def test_zero_size_buffer_drops_everything():
    for keep in ("first", "last"):
        b = Buffer(0, keep=keep)
        assert b.store([1, 2]) == 2
        assert len(b) == 0


def test_take_of_exactly_one_stored_list_returns_it_whole():
    b = Buffer()
    events = [1, 2, 3]
    b.store(events)
    assert b.take(3) is events


def test_take_zero_or_negative_is_empty():
    b = Buffer()
    b.store([1])
    assert b.take(0) == []
    assert b.take(-1) == []
    assert len(b) == 1


ops = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.integers(0, 12)),
        st.tuples(st.just("take"), st.integers(0, 15)),
    ),
    max_size=40,
)


@pytest.mark.parametrize("keep", ["first", "last"])
@given(size=st.one_of(st.none(), st.integers(0, 20)), ops=ops)
def test_property_buffer_matches_a_simple_model(keep, size, ops):
    b = Buffer(size, keep=keep)
    model: deque = deque()
    counter = 0
    dropped_total = made = taken = 0
    for op, n in ops:
        if op == "store":
            events = list(range(counter, counter + n))
            counter += n
            made += n
            dropped = b.store(events)
            dropped_total += dropped
            model.extend(events)
            excess = 0 if size is None else max(len(model) - size, 0)
            assert dropped == excess
            for _ in range(excess):
                if keep == "last":
                    model.popleft()
                else:
                    model.pop()
        else:
            got = b.take(n)
            want = [model.popleft() for _ in range(min(n, len(model)))]
            assert got == want
            taken += len(got)
        assert len(b) == len(model)
        assert b.events() == list(model)  # (a copy: the buffer keeps them)
        assert size is None or len(b) <= size
    # Every event made is taken, dropped (counted) or still buffered.
    assert made == taken + dropped_total + len(b)
