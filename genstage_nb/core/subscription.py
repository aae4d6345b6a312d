"""``Subscription``: one edge producer -> consumer, with its demand settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .demand import DemandState, check_demand_options

if TYPE_CHECKING:
    from .stage import Stage

CANCEL_MODES = ("permanent", "transient", "temporary")


class Subscription:
    """A consumer's subscription to a producer, made by ``Pipeline.link``.

    Attributes: ``producer`` and ``consumer`` (the stages), ``max_demand``,
    ``min_demand``, ``cancel`` (``"permanent"``, ``"transient"`` or ``"temporary"``),
    ``partition`` and ``selector`` (for partition and broadcast dispatchers), and
    ``pending``: the demand asked of the producer and not yet used up; ``active``:
    True while the subscription is established in a running pipeline; ``shares``: True
    for a stream's link, which a ``DemandDispatcher`` serves relative to its
    ``max_demand`` (so a small stream beside a large sink gets its share).

    ``tune(max_demand=..., min_demand=...)`` changes the demand live; it takes effect at
    the consumer's next ask. ``ask(n)`` asks for ``n`` more events by hand, for
    consumers whose ``handle_subscribe`` returned ``"manual"``.

    >>> import genstage_nb as gs
    >>> p = gs.Pipeline()
    >>> sub = p.link(p.add(gs.from_iterable(range(3)), name="src"),
    ...              p.add(gs.consumer(print), name="out"), max_demand=10)
    >>> sub.max_demand, sub.min_demand, sub.cancel
    (10, 5, 'permanent')
    >>> sub.tune(max_demand=4)
    >>> sub.max_demand, sub.min_demand
    (4, 2)
    """

    __slots__ = (
        "producer",
        "consumer",
        "cancel",
        "partition",
        "selector",
        "_demand",
        "_min_default",
        "_to",
        "_from",
        "active",
        "shares",
    )

    def __init__(
        self,
        producer: Stage,
        consumer: Stage,
        max_demand: int,
        min_demand: int | None,
        cancel: str,
        partition: Any = None,
        selector: Any = None,
    ) -> None:
        where = f"link {producer.name} -> {consumer.name}"
        max_demand, min_value = check_demand_options(where, max_demand, min_demand)
        if cancel not in CANCEL_MODES:
            raise ValueError(f"{where}: cancel must be one of {CANCEL_MODES}, got {cancel!r}")
        if selector is not None and not callable(selector):
            raise TypeError(
                f"{where}: selector must be a callable taking one event, got {selector!r}"
            )
        self.producer = producer
        self.consumer = consumer
        self.cancel = cancel
        self.partition = partition
        self.selector = selector
        self._demand = DemandState(max_demand, min_value)
        self._min_default = min_demand is None
        self._to: Any = None  # the consumer's process while running
        self._from: Any = None  # the producer's process while running
        self.active = False
        # A DemandDispatcher gives it a share relative to its max_demand (a stream).
        self.shares = False

    @property
    def max_demand(self) -> int:
        """The most events the consumer has asked for and not yet handled."""
        return self._demand.max_demand

    @property
    def min_demand(self) -> int:
        """The consumer asks again once its pending demand falls to this (it handles
        batches of at most ``max_demand - min_demand`` events). While a tuner
        realigns the link (``DemandState.realign_to``), the value it goes back to."""
        demand = self._demand
        return demand.min_demand if demand.realign is None else demand.realign

    @property
    def pending(self) -> int:
        """Events asked of the producer and not yet handled by the consumer."""
        return self._demand.pending

    @property
    def manual(self) -> bool:
        """True when the consumer asks for events itself (``handle_subscribe``
        returned ``"manual"``; see ``ask``)."""
        return self._demand.manual

    def tune(self, max_demand: int | None = None, min_demand: int | None = None) -> None:
        """Change ``max_demand`` and/or ``min_demand``; takes effect at the next ask.

        Without ``min_demand``, a ``min_demand`` that was defaulted follows the new
        ``max_demand`` (half of it); one that was set explicitly is kept.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> sub = p.link(p.add(gs.from_iterable([1])), p.add(gs.consumer(len)), max_demand=10)
        >>> sub.tune(max_demand=100); (sub.max_demand, sub.min_demand)
        (100, 50)
        >>> sub.tune(min_demand=90); (sub.max_demand, sub.min_demand)
        (100, 90)
        """
        new_max = self.max_demand if max_demand is None else max_demand
        if min_demand is None and (self._min_default or self.min_demand >= new_max):
            new_min = None
        else:
            new_min = self.min_demand if min_demand is None else min_demand
        new_max, value = check_demand_options(
            f"tune {self.producer.name} -> {self.consumer.name}", new_max, new_min
        )
        self._demand.max_demand = new_max
        self._demand.min_demand = value
        self._demand.realign = None  # (a realignment in course would undo this min_demand)
        if min_demand is not None:
            self._min_default = False

    def ask(self, n: int) -> None:
        """Ask the producer for ``n`` more events (manual demand).

        >>> import genstage_nb as gs
        >>> class OneAtATime(gs.Consumer):
        ...     def handle_subscribe(self, subscription):
        ...         self.sub = subscription
        ...         subscription.ask(1)
        ...         return "manual"
        ...     def handle_events(self, events):
        ...         print(events)
        ...         self.sub.ask(1)
        >>> p = gs.Pipeline()
        >>> _ = p.link(p.add(gs.from_iterable("ab")), p.add(OneAtATime()))
        >>> p.run_sync()
        ['a']
        ['b']
        """
        where = f"ask {self.producer.name} -> {self.consumer.name}"
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{where}: n must be an int, got {n!r}")
        if n < 1:
            raise ValueError(f"{where}: n ({n}) must be at least 1")
        producer = self._from
        if producer is None or not producer.supervisor.running:
            raise RuntimeError(
                f"{where}: the pipeline is not running (ask from the consumer's "
                f"handle_subscribe or hooks, once it runs)"
            )
        self._demand.manual_ask(n)
        # A manual ask passes the start gate like an automatic one (Pipeline._hold_ask).
        if not producer.supervisor._hold_ask(producer, self, n):
            producer.post_ask(self, n)

    def __repr__(self) -> str:
        return (
            f"<Subscription {self.producer.name} -> {self.consumer.name} "
            f"max_demand={self.max_demand} min_demand={self.min_demand} "
            f"cancel={self.cancel!r} pending={self.pending}>"
        )
