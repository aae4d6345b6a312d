"""The common aggregations of a Flow, each a ``reduce`` (the ``Aggregations`` role of
``Flow``): ``count``, ``sum``, ``mean``, ``top_k``."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flow import Flow


def check_fn(where: str, fn: Any, what: str = "a function") -> None:
    if not callable(fn):
        raise TypeError(f"Flow.{where}: expected {what}, got {fn!r}")


class Aggregations:
    """``count``, ``sum``, ``mean`` and ``top_k``, built on ``reduce``."""

    if TYPE_CHECKING:

        def reduce(self, initial: Callable[[], Any], fn: Callable[[Any, Any], Any]) -> Flow: ...

        def partition(self, *, stages: int = 1) -> Flow: ...

    def count(self) -> Flow:
        """The number of events per key (and window).

        >>> from genstage_nb import Flow
        >>> Flow.from_iterable("abca").partition(key=str).count().run()
        [('a', 2), ('b', 1), ('c', 1)]
        """
        return self.reduce(_zero, _count)

    def sum(self, value: Callable[[Any], Any] | None = None) -> Flow:
        """The sum of ``value(event)`` (the event itself by default) per key.

        >>> from genstage_nb import Flow
        >>> Flow.from_iterable([("a", 2), ("a", 3)]).partition(key=lambda e: e[0]).sum(
        ...     lambda e: e[1]).run()
        [('a', 5)]
        """
        if value is not None:
            check_fn("sum", value)
        return self.reduce(_zero, _adder(value))

    def mean(self, value: Callable[[Any], Any] | None = None) -> Flow:
        """The mean of ``value(event)`` per key, skipping None and NaN (as pandas does;
        NaN when a key has no value).

        >>> from genstage_nb import Flow
        >>> Flow.from_iterable([("a", 2), ("a", None), ("a", 4)]).partition(
        ...     key=lambda e: e[0]).mean(lambda e: e[1]).run()
        [('a', 3.0)]
        """
        if value is not None:
            check_fn("mean", value)
        flow = self.reduce(_pair, _averager(value))
        return flow._with_reduce(present=_mean)

    def top_k(self, k: int, *, by: Callable[[Any], Any] | None = None) -> Flow:
        """The ``k`` largest events by ``by(event)`` (the event itself by default), gathered
        in one stage, emitted largest first when the input ends (ties: the first seen).

        >>> from genstage_nb import Flow
        >>> counts = Flow.from_iterable("abcab").partition(key=str).count()
        >>> counts.top_k(2, by=lambda kv: kv[1]).run()
        [('a', 2), ('b', 2)]
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Flow.top_k: k must be an int >= 1, got {k!r}")
        if by is not None:
            check_fn("top_k", by)
        keep = _TopK(k, by)
        flow = self.partition(stages=1).reduce(keep.initial, keep.push)
        return flow.on_trigger(keep.emit)


# The helpers' functions: module-level (picklable, one call each).


def _zero() -> int:
    return 0


def _pair() -> tuple[int, float]:
    return (0, 0.0)


def _count(n: int, event: Any) -> int:
    return n + 1


def _adder(value: Callable[[Any], Any] | None) -> Callable[[Any, Any], Any]:
    if value is None:
        return lambda total, event: total + event
    return lambda total, event: total + value(event)


def _averager(value: Callable[[Any], Any] | None) -> Callable[[Any, Any], Any]:
    def add(acc: tuple[int, float], event: Any) -> tuple[int, float]:
        x = event if value is None else value(event)
        if x is None or x != x:  # None and NaN are skipped
            return acc
        return (acc[0] + 1, acc[1] + x)

    return add


def _mean(acc: tuple[int, float]) -> float:
    return acc[1] / acc[0] if acc[0] else math.nan


class _TopK:
    """The bounded heap of ``top_k``: ``(score, -seq, seq, event)``, smallest on top."""

    def __init__(self, k: int, by: Callable[[Any], Any] | None) -> None:
        self.k, self.by = k, by
        self.seq = itertools.count()

    def initial(self) -> list:
        return []

    def push(self, heap: list, event: Any) -> list:
        score = event if self.by is None else self.by(event)
        n = next(self.seq)
        item = (score, -n, n, event)
        if len(heap) < self.k:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
        return heap

    def emit(self, key: Any, heap: list, window: Any) -> list:
        return [item[3] for item in sorted(heap, reverse=True)]


__all__ = ["Aggregations", "check_fn"]
