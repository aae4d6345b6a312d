"""Dispatchers: where a producer's events go, as pure state machines.

A producer hands every list of events it makes to its dispatcher, and every ask and
cancel of its consumers. The dispatcher answers with deliveries (``(subscription,
events)`` pairs for the runtime to send), the events nobody can take yet (for the
producer's buffer) and the demand to pass on to the producer. No I/O, no async: the
runtime in ``genstage_nb.core.process`` only moves the lists.

Three dispatchers, as in GenStage:

- :class:`DemandDispatcher` (the default): each list goes to the consumer with the most
  pending demand.
- :class:`BroadcastDispatcher`: every consumer gets every event, paced by the slowest;
  a subscription's ``selector`` filters what it gets.
- :class:`PartitionDispatcher`: ``hash(event)`` picks a partition, each partition has
  one consumer; ``None`` discards the event.

>>> class Sub:  # any hashable object stands for a subscription here
...     partition = selector = None
>>> a, b = Sub(), Sub()
>>> d = DemandDispatcher()
>>> d.subscribe(a); d.subscribe(b)
>>> d.ask(a, 3), d.ask(b, 2)
((3, []), (2, []))
>>> deliveries, leftover, _ = d.dispatch([1, 2, 3, 4, 5, 6])
>>> [(s is a, e) for s, e in deliveries], leftover
([(True, [1, 2, 3]), (False, [4, 5])], [6])
"""

from __future__ import annotations

import logging
import random
from typing import Any, Protocol

log = logging.getLogger("genstage_nb")

Deliveries = list[tuple[Any, list]]


class Dispatcher(Protocol):
    """The interface every dispatcher implements (state in, state out, no I/O).

    - ``subscribe(sub)``: a consumer joined (its demand starts at 0).
    - ``cancel(sub) -> int``: a consumer left; returns new demand for the producer.
    - ``ask(sub, n) -> (demand, deliveries)``: a consumer asked ``n`` more events;
      returns the demand to pass on to the producer and events sent at once (from
      events the dispatcher held).
    - ``dispatch(events) -> (deliveries, leftover, demand)``: the producer made
      ``events``; returns what goes where, what must be buffered, and extra demand.
    - ``buffered() -> int``: events held inside the dispatcher.
    - ``ready() -> int``: how many events ``dispatch`` would send on right now (the
      producer serves its buffer up to this much, so no buffered event waits while a
      consumer has demand).
    - ``demand_of(sub) -> int``: the demand of ``sub`` not yet served.
    - ``discarded``: events dropped on purpose (a partition hash returned ``None``).
    - ``fresh() -> Dispatcher``: a new dispatcher with the same options and none of the
      state. The instance given to a stage's ``dispatcher=`` is a template: every run
      (and every restart of the pipeline) works on ``template.fresh()``, so one instance
      may serve several pipelines and runs. A class without ``fresh`` gets a deep copy of
      the template.
    - ``check_subscription(partition, selector, taken)``: raise ValueError unless a new
      subscription's options suit this dispatcher (``taken``: the partitions of its
      subscriptions so far). A dispatcher without it takes neither option.
    - ``copies``: True if each event goes to every consumer (a broadcast): the books of
      ``check_balance`` then count it once however many consumers got it.
    - ``stall_reason(consumers) -> str | None``: why this dispatcher holds events or
      demand back, for the stall notice (None: it does not).

    A producer's ``dispatcher=`` option takes one of the three below (or a class of its own
    that follows this interface). They are plain objects, driven with lists and ints:

    >>> from genstage_nb import DemandDispatcher
    >>> d = DemandDispatcher()
    >>> d.subscribe("a")
    >>> d.ask("a", 2)  # (demand for the producer, events sent at once)
    (2, [])
    >>> deliveries, leftover, _ = d.dispatch(["x", "y", "z"])
    >>> deliveries, leftover
    ([('a', ['x', 'y'])], ['z'])
    """

    discarded: int
    copies: bool

    def subscribe(self, sub: Any) -> None: ...
    def cancel(self, sub: Any) -> int: ...
    def ask(self, sub: Any, n: int) -> tuple[int, Deliveries]: ...
    def dispatch(self, events: list) -> tuple[Deliveries, list, int]: ...
    def buffered(self) -> int: ...
    def ready(self) -> int: ...
    def demand_of(self, sub: Any) -> int: ...
    def fresh(self) -> Dispatcher: ...
    def check_subscription(self, partition: Any, selector: Any, taken: list) -> None: ...
    def stall_reason(self, consumers: Any) -> str | None: ...


def _no_partition(name: str, partition: Any) -> None:
    if partition is not None:
        raise ValueError(
            f"partition= needs a producer with a PartitionDispatcher; the producer uses {name!r}"
        )


def _no_selector(selector: Any) -> None:
    if selector is not None:
        raise ValueError("selector= needs a producer with a BroadcastDispatcher")


class DemandDispatcher:
    """Send each list of events to the consumer with the highest pending demand.

    The default dispatcher. Give every consumer the same ``max_demand``: a consumer
    that asks more than the first ask seen (or ``max_demand`` if given) is logged as
    greedy. Demand left behind by a cancelled consumer was already passed upstream, so
    it is not asked again: later asks are reduced by it.

    Beyond GenStage: a subscription with ``shares = True`` (a ``p.stream(stage)``)
    has its pending demand compared relative to its largest ask, and so do the others
    while it is subscribed. A stream with ``max_demand=5`` beside a sink of 1000 then
    gets its share of the events; by GenStage's order (the largest count first) it
    would wait until the sink had fewer than 5 events asked, which a fast sink never
    has. Without such a subscription the order is GenStage's exactly.

    Options: ``shuffle_demands_on_first_dispatch`` (default False) shuffles the
    consumers once before the first dispatch, so the first consumer is not favoured.

    >>> d = DemandDispatcher()
    >>> d.subscribe("a")
    >>> d.ask("a", 10)
    (10, [])
    >>> d.dispatch(list(range(12)))[1]
    [10, 11]
    """

    def __init__(
        self, *, shuffle_demands_on_first_dispatch: bool = False, max_demand: int | None = None
    ) -> None:
        # [counter, sub] pairs, the highest counter first; ties keep arrival order.
        if max_demand is not None and (
            isinstance(max_demand, bool) or not isinstance(max_demand, int) or max_demand < 1
        ):
            raise ValueError(
                f"DemandDispatcher: max_demand must be a positive int or None, got {max_demand!r}"
            )
        if not isinstance(shuffle_demands_on_first_dispatch, bool):
            raise TypeError(
                "DemandDispatcher: shuffle_demands_on_first_dispatch must be True or False, "
                f"got {shuffle_demands_on_first_dispatch!r}"
            )
        self._options = (shuffle_demands_on_first_dispatch, max_demand)
        self._sizes: dict = {}  # subscription -> its largest ask (its max_demand)
        self._sharing: set = set()  # subscriptions with shares = True (streams)
        self._relative = False  # compare counters relative to sizes (see the doc)
        self._demands: list[list] = []
        self._pending = 0
        self._max = max_demand
        self._shuffle = shuffle_demands_on_first_dispatch
        self._warned: set = set()  # subscriptions warned about their demand
        self.discarded = 0

    def fresh(self) -> DemandDispatcher:
        shuffle, max_demand = self._options
        return DemandDispatcher(shuffle_demands_on_first_dispatch=shuffle, max_demand=max_demand)

    def subscribe(self, sub: Any) -> None:
        self._demands.append([0, sub])

    def _update_relative(self) -> None:
        self._relative = bool(self._sharing) and len(set(self._sizes.values())) > 1

    def cancel(self, sub: Any) -> int:
        self._warned.discard(sub)
        self._sizes.pop(sub, None)
        self._sharing.discard(sub)
        self._update_relative()
        entry = self._pop(sub)
        if entry is not None:
            self._pending += entry[0]
        return 0

    def ask(self, sub: Any, n: int) -> tuple[int, Deliveries]:
        if self._max is None:
            self._max = n
        elif n > self._max and len(self._demands) == 1:
            self._max = n  # a lone consumer tuned up overloads no one
        elif n > self._max and sub not in self._warned:
            self._warned.add(sub)  # once per subscription, not at every ask
            log.warning(
                "DemandDispatcher expects a maximum demand of %d; got demand for %d events "
                "from %s. Using different maximum demands will overload greedy consumers.",
                self._max,
                n,
                sub,
            )
        sizes = self._sizes
        if n > sizes.get(sub, 0):
            if sub not in sizes and getattr(sub, "shares", False):
                self._sharing.add(sub)
            sizes[sub] = n
            if self._sharing:
                self._update_relative()
        demands = self._demands
        if len(demands) == 1 and demands[0][1] is sub:
            demands[0][0] += n  # one consumer: nothing to reorder
        else:
            entry = self._pop(sub)
            current = entry[0] if entry is not None else 0
            self._add(current + n, sub)
        already_sent = min(self._pending, n)
        self._pending -= already_sent
        return n - already_sent, []

    def dispatch(self, events: list) -> tuple[Deliveries, list, int]:
        if self._shuffle:
            random.shuffle(self._demands)
            self._shuffle = False
        demands = self._demands
        n = len(events)
        if len(demands) == 1 and n <= demands[0][0]:
            # One consumer with enough demand: the whole list goes to it.
            entry = demands[0]
            entry[0] -= n
            return [(entry[1], events)], [], 0
        deliveries: Deliveries = []
        while n and demands and demands[0][0] > 0:
            counter, sub = demands.pop(0)
            if n <= counter:
                deliveries.append((sub, events))
                counter -= n
                events = []
                n = 0
            else:
                deliveries.append((sub, events[:counter]))
                events = events[counter:]
                n -= counter
                counter = 0
            self._add(counter, sub)
        if n:
            self._pending = max(self._pending - n, 0)
        return deliveries, events, 0

    def buffered(self) -> int:
        return 0

    def ready(self) -> int:
        return sum(entry[0] for entry in self._demands)

    def demand_of(self, sub: Any) -> int:
        for counter, s in self._demands:
            if s is sub:
                return counter
        return 0

    copies = False

    def check_subscription(self, partition: Any, selector: Any, taken: list) -> None:
        _no_partition("DemandDispatcher", partition)
        _no_selector(selector)

    def stall_reason(self, consumers: Any) -> str | None:
        return None

    def _add(self, counter: int, sub: Any) -> None:
        demands = self._demands
        if not self._relative:
            for i, entry in enumerate(demands):
                if counter > entry[0]:
                    demands.insert(i, [counter, sub])
                    return
        else:
            # counter / size > other / other_size, without division.
            sizes, default = self._sizes, self._max or 1
            size = sizes.get(sub, default)
            for i, entry in enumerate(demands):
                if counter * sizes.get(entry[1], default) > entry[0] * size:
                    demands.insert(i, [counter, sub])
                    return
        demands.append([counter, sub])

    def _pop(self, sub: Any) -> list | None:
        demands = self._demands
        for i, entry in enumerate(demands):
            if entry[1] is sub:
                return demands.pop(i)
        return None


class BroadcastDispatcher:
    """Send every event to every consumer, without exceeding any consumer's demand.

    Demand is passed upstream only as far as the slowest consumer has asked, and only
    once however many consumers asked it. A subscription's ``selector(event) -> bool``
    keeps only the events it accepts; the events it rejects count as delivered to it and
    are asked again on its behalf.

    Subscribe every consumer before events flow (start the producer with
    ``demand="accumulate"`` and switch to ``"forward"``) if each must see the first
    events.

    >>> d = BroadcastDispatcher()
    >>> d.subscribe("a"); d.subscribe("b")
    >>> d.ask("a", 10), d.ask("b", 4)
    ((0, []), (4, []))
    >>> sorted(e for _, e in d.dispatch([1, 2, 3, 4, 5])[0]), d.dispatch([])[1]
    ([[1, 2, 3, 4], [1, 2, 3, 4]], [])
    """

    def __init__(self) -> None:
        # [counter, sub, selector], counters relative to what is waiting upstream.
        self._demands: list[list] = []
        self._waiting = 0
        self._requested = 0
        self.discarded = 0

    def fresh(self) -> BroadcastDispatcher:
        return BroadcastDispatcher()

    def subscribe(self, sub: Any) -> None:
        selector = getattr(sub, "selector", None)
        if selector is not None and not callable(selector):
            raise TypeError(f"selector must be a callable taking one event, got {selector!r}")
        if self._waiting:
            for entry in self._demands:
                entry[0] += self._waiting
        self._demands.insert(0, [0, sub, selector])
        self._waiting = 0

    def cancel(self, sub: Any) -> int:
        self._demands = [e for e in self._demands if e[1] is not sub]
        if not self._demands:
            self._waiting = 0
            return 0
        return self._sync()

    def ask(self, sub: Any, n: int) -> tuple[int, Deliveries]:
        demands = self._demands
        for i, entry in enumerate(demands):
            if entry[1] is sub:
                demands.pop(i)
                demands.insert(0, [entry[0] + n, sub, entry[2]])
                break
        else:
            demands.insert(0, [n, sub, getattr(sub, "selector", None)])
        return self._sync(), []

    def dispatch(self, events: list) -> tuple[Deliveries, list, int]:
        # Every event handed over counts against what was requested, also the ones left
        # over: they wait in the producer's buffer, which serves the next demand first
        # and takes what it served off the demand it passes on (so an event asked before
        # a consumer joined, left over because of it, is never asked for again).
        requested = self._requested - len(events)
        self._requested = requested if requested > 0 else 0
        waiting = self._waiting
        if not waiting or not events:
            return [], events, 0
        if len(events) <= waiting:
            now, later = events, []
        else:
            now, later = events[:waiting], events[waiting:]
        count = len(now)
        self._waiting = waiting - count
        deliveries: Deliveries = []
        reasks = []
        for _, sub, selector in self._demands:
            if selector is None:
                deliveries.append((sub, now))
                continue
            selected = [e for e in now if selector(e)]
            if len(selected) < count:
                reasks.append((sub, count - len(selected)))
            if selected:
                deliveries.append((sub, selected))
        demand = 0
        for sub, k in reasks:
            demand += self.ask(sub, k)[0]
        return deliveries, later, demand

    def buffered(self) -> int:
        return 0

    def ready(self) -> int:
        return self._waiting

    def demand_of(self, sub: Any) -> int:
        for counter, s, _ in self._demands:
            if s is sub:
                return counter + self._waiting
        return 0

    copies = True

    def check_subscription(self, partition: Any, selector: Any, taken: list) -> None:
        _no_partition("BroadcastDispatcher", partition)

    def stall_reason(self, consumers: Any) -> str | None:
        for sub in consumers:
            if sub._demand.manual and self.demand_of(sub) == 0:
                return (
                    f"a BroadcastDispatcher waits for its slowest consumer, and "
                    f"{sub.consumer.name!r} has manual demand and asks for no more "
                    f"(call subscription.ask(n) in it)"
                )
        return None

    def _sync(self) -> int:
        demands = self._demands
        new_min = max(min(e[0] for e in demands), 0) if demands else 0
        if new_min:
            for entry in demands:
                entry[0] -= new_min
        self._waiting += new_min
        request = max(0, self._waiting - self._requested)
        self._requested += request
        return request
