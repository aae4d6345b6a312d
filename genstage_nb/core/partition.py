"""The PartitionDispatcher: ``hash(event)`` picks a partition, each partition has one
consumer; ``None`` discards the event (a pure state machine, as the others in
``dispatchers.py``, whose ``Dispatcher`` protocol it follows)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from .dispatchers import Deliveries, _no_selector
from .keys import stable_hash


class _NotAnIndex(Exception):
    pass


def _not_an_index(event: Any) -> None:
    raise _NotAnIndex


class _Partition:
    __slots__ = ("sub", "demand", "queue")

    def __init__(self) -> None:
        self.sub: Any = None
        self.demand = 0
        self.queue: list = []


class PartitionDispatcher:
    """Split events among partitions by ``hash(event)``; one consumer per partition.

    ``partitions`` is a count N (partitions ``0 .. N-1``) or a list of names (then
    ``hash`` is required unless every name is an int). ``hash(event)`` returns the
    partition, or ``None`` to discard the event (counted in ``discarded``). The default
    hash is ``partitions[stable_hash(event) % N]`` (``keys.py``: Python's ``hash`` for
    numbers, and for strings, tuples and dates a hash that is the same in every process,
    so that a run resumed from a checkpoint sends each event where it went before).
    Consumers subscribe with ``partition=``. Each partition keeps its own demand; events
    for a partition without demand wait in its queue (also while it has no consumer)
    and are sent as soon as it asks.

    >>> d = PartitionDispatcher(partitions=2, hash=lambda e: e % 2)
    >>> class Sub:
    ...     def __init__(self, p): self.partition = p
    >>> even, odd = Sub(0), Sub(1)
    >>> d.subscribe(even); d.subscribe(odd)
    >>> d.ask(even, 2), d.ask(odd, 2)
    ((2, []), (2, []))
    >>> [(s.partition, e) for s, e in d.dispatch([0, 1, 2, 3])[0]]
    [(0, [0, 2]), (1, [1, 3])]
    """

    def __init__(
        self,
        partitions: int | Iterable[Hashable],
        hash: Callable[[Any], Hashable | None] | None = None,  # noqa: A002 - GenStage's name
    ) -> None:
        if isinstance(partitions, bool):
            raise TypeError(
                f"PartitionDispatcher: partitions must be an int or a list, got {partitions!r}"
            )
        if isinstance(partitions, int):
            if partitions < 1:
                raise ValueError(
                    f"PartitionDispatcher: partitions ({partitions}) must be at least 1"
                )
            names: list = list(range(partitions))
        else:
            try:
                names = list(partitions)
            except TypeError:
                raise TypeError(
                    f"PartitionDispatcher: partitions must be an int or a list of names, "
                    f"got {partitions!r}"
                ) from None
            if not names:
                raise ValueError("PartitionDispatcher: partitions must not be empty")
            if None in names:
                raise ValueError(
                    "PartitionDispatcher: None cannot name a partition (a hash returns None "
                    "to discard an event)"
                )
            if len(set(names)) != len(names):
                raise ValueError(
                    f"PartitionDispatcher: partition names must be unique, got {names!r}"
                )
            if hash is None and not all(isinstance(p, int) for p in names):
                raise ValueError(
                    "PartitionDispatcher: when partitions are not all ints, pass hash= "
                    "(a function event -> partition)"
                )
        if hash is not None and not callable(hash):
            raise TypeError(f"PartitionDispatcher: hash must be callable, got {hash!r}")
        self.names = names
        if hash is None:
            size = len(names)
            hash = lambda event: names[stable_hash(event) % size]  # noqa: E731
        self._hash = hash
        self._parts = {name: _Partition() for name in names}
        self._by_index = names == list(range(len(names)))
        self._not_indexes = [_not_an_index] * len(names)
        self._by_sub: dict[Any, _Partition] = {}
        self._waiting = 0
        self._pending = 0
        self.discarded = 0

    def fresh(self) -> PartitionDispatcher:
        return PartitionDispatcher(self.names, self._hash)

    def check_partition(self, partition: Any) -> None:
        """Raise ValueError unless ``partition`` is known and has no consumer yet."""
        if partition is None:
            raise ValueError(
                f"a consumer of a PartitionDispatcher must pass partition= (one of {self.names!r})"
            )
        part = self._parts.get(partition) if isinstance(partition, Hashable) else None
        if part is None:
            raise ValueError(f"partition must be one of {self.names!r}, got {partition!r}")
        if part.sub is not None:
            raise ValueError(f"partition {partition!r} is already taken")

    def subscribe(self, sub: Any) -> None:
        self.check_partition(sub.partition)
        part = self._parts[sub.partition]
        part.sub = sub
        self._by_sub[sub] = part

    def cancel(self, sub: Any) -> int:
        part = self._by_sub.pop(sub, None)
        if part is None:
            return 0
        part.sub = None
        # Demand already passed upstream for it is not asked again; events queued for
        # the partition stay there for its next consumer.
        self._pending += part.demand
        part.demand = 0
        return 0

    def ask(self, sub: Any, n: int) -> tuple[int, Deliveries]:
        part = self._by_sub[sub]
        deliveries: Deliveries = []
        if part.queue:
            k = min(n, len(part.queue))
            deliveries.append((sub, part.queue[:k]))
            part.queue = part.queue[k:]
            part.demand += n - k
        else:
            part.demand += n
        already_sent = min(self._pending, n)
        self._pending -= already_sent
        demand = n - already_sent
        self._waiting += demand
        return demand, deliveries

    def dispatch(self, events: list) -> tuple[Deliveries, list, int]:
        waiting = self._waiting
        if not waiting or not events:
            return [], events, 0
        n = len(events)
        index = n if n <= waiting else waiting
        now = events if index == n else events[:index]
        dropped: list = []
        buckets = self._sort_by_index(now) if self._by_index else None
        if buckets is None:
            buckets, appends = self._table()
            appends[None] = dropped.append
            self._sort(now, appends)
            # A discarded event uses no demand: look further until `waiting` are kept.
            while dropped and index < n and index - len(dropped) < waiting:
                more = waiting - (index - len(dropped))
                self._sort(events[index : index + more], appends)
                index = min(index + more, n)
        discarded = len(dropped)
        self.discarded += discarded
        waiting -= index - discarded
        self._waiting = waiting
        # Beyond GenStage: a discarded event gives its demand back. The producer made it
        # for a consumer that did not get it, so the producer is asked for another one
        # (GenStage leaves that demand unmet, and a pipeline can stall on it).
        extra = min(discarded, waiting) if discarded and index == n else 0
        deliveries: Deliveries = []
        parts = self._parts
        for partition, bucket in buckets:
            if not bucket:
                continue
            part = parts[partition]
            demand = part.demand
            if part.queue or not demand:
                part.queue.extend(bucket)
            elif len(bucket) <= demand:
                part.demand = demand - len(bucket)
                deliveries.append((part.sub, bucket))
            else:
                part.demand = 0
                deliveries.append((part.sub, bucket[:demand]))
                part.queue.extend(bucket[demand:])
        return deliveries, events[index:] if index < n else [], extra

    # Sorting events into partitions: the hash is called once per event, in a plain
    # Python loop (a call from Python code is cheaper than one from map()), and the
    # event is appended through a table of bound appends.

    def _table(self) -> tuple[list[tuple[Any, list]], dict]:
        buckets: list[tuple[str, list[Any]]] = [(name, []) for name in self.names]
        return buckets, {name: bucket.append for name, bucket in buckets}

    def _sort_by_index(self, events: list) -> list[tuple[Any, list]] | None:
        """Partitions ``0 .. N-1``: the table is a list indexed by the hash (the
        quickest lookup). Returns None, having switched to the dict table for good, at
        the first hash that is not such an index (None, a discard, among them)."""
        lists: list[list] = [[] for _ in self.names]
        appends: list[Any] = [bucket.append for bucket in lists]
        appends += self._not_indexes  # -N .. -1 land here, not on another partition
        hash_fn: Any = self._hash  # (returns a partition's index)
        try:
            for event in events:
                appends[hash_fn(event)](event)
        except (TypeError, IndexError, _NotAnIndex) as exc:
            tb = exc.__traceback__
            if not isinstance(exc, _NotAnIndex) and tb is not None and tb.tb_next is not None:
                raise  # raised inside the hash
            self._by_index = False
            return None
        return list(zip(self.names, lists, strict=True))

    def _sort(self, events: list, appends: dict) -> None:
        hash_fn = self._hash
        event = None
        try:
            for event in events:
                appends[hash_fn(event)](event)
        except (KeyError, TypeError) as exc:
            tb = exc.__traceback__
            if tb is None or tb.tb_next is not None:
                raise  # raised inside the hash
            key = hash_fn(event)
            if isinstance(key, Hashable) and key in appends:
                raise
            raise ValueError(
                f"hash returned unknown partition {key!r} for event {event!r}; "
                f"the partitions are {self.names!r}"
            ) from None

    def buffered(self) -> int:
        return sum(len(p.queue) for p in self._parts.values())

    def ready(self) -> int:
        return self._waiting

    def demand_of(self, sub: Any) -> int:
        part = self._by_sub.get(sub)
        return part.demand if part is not None else 0

    copies = False

    def check_subscription(self, partition: Any, selector: Any, taken: list) -> None:
        self.check_partition(partition)
        if partition in taken:
            raise ValueError(f"partition {partition!r} is already taken")
        _no_selector(selector)

    def stall_reason(self, consumers: Any) -> str | None:
        for partition, part in self._parts.items():
            if part.sub is None and part.queue:
                return (
                    f"partition {partition!r} has {len(part.queue)} events queued and no "
                    f"consumer; the demand of the waiting partitions went to events for it "
                    f"(link a consumer with partition={partition!r})"
                )
        return None


__all__ = ["PartitionDispatcher"]
