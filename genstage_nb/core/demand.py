"""Consumer-side demand accounting for one subscription: GenStage's batch-splitting rule.

A consumer first asks its producer for ``max_demand`` events. Each list of events that
arrives is cut into batches of at most ``max_demand - min_demand`` events for
``handle_events``; after a batch, when the demand still pending has fallen to
``min_demand`` or below, the consumer asks for enough to bring it back to
``max_demand``. Pure data: no I/O, no async.

>>> d = DemandState(100, 20)
>>> d.initial_ask()
100
>>> [(b[0], b[-1], ask) for b, ask in d.split(list(range(100)))]
[(0, 79, 80), (80, 99, 0)]
>>> d.pending  # 100 after the ask, less the 20 of the second batch
80
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("genstage_nb")

DEFAULT_MAX_DEMAND = 1000


def check_demand_options(where: str, max_demand: object, min_demand: object) -> tuple[int, int]:
    """Validate ``max_demand``/``min_demand`` and return them (``min_demand`` defaulted).

    ``where`` names the subscription in the error, e.g. ``"link counter -> sink"``.
    """
    if isinstance(max_demand, bool) or not isinstance(max_demand, int):
        raise TypeError(f"{where}: max_demand must be an int, got {max_demand!r}")
    if max_demand < 1:
        raise ValueError(f"{where}: max_demand ({max_demand}) must be at least 1")
    if min_demand is None:
        min_demand = max_demand // 2
    if isinstance(min_demand, bool) or not isinstance(min_demand, int):
        raise TypeError(f"{where}: min_demand must be an int, got {min_demand!r}")
    if min_demand < 0:
        raise ValueError(f"{where}: min_demand ({min_demand}) must be 0 or more")
    if min_demand >= max_demand:
        raise ValueError(
            f"{where}: min_demand ({min_demand}) must be below max_demand ({max_demand})"
        )
    return max_demand, min_demand


class DemandState:
    """Outstanding demand of one subscription, seen from the consumer.

    ``pending`` is the demand asked of the producer and not yet used up by handled
    batches. ``manual`` subscriptions never ask on their own: the consumer calls
    ``Subscription.ask``. ``excess`` counts events received beyond the demand (a
    producer bug that GenStage logs; it should stay 0).
    """

    __slots__ = ("max_demand", "min_demand", "pending", "manual", "excess", "realign")

    def __init__(self, max_demand: int, min_demand: int, manual: bool = False) -> None:
        self.max_demand = max_demand
        self.min_demand = min_demand
        self.pending = 0
        self.manual = manual
        self.excess = 0
        self.realign: int | None = None

    def realign_to(self, min_demand: int) -> None:
        """Take ``min_demand`` as 0 until the next ask, then ``min_demand``.

        The lists a producer sends are as big as the asks, and each ask refills the
        pending demand to ``max_demand``: so once a list arrives that is not a whole
        number of batches (after ``max_demand`` changed, say), its remainder comes
        back as part of every later ask, and every later list is cut into full batches
        and a small one. Asking only once nothing is pending makes the next ask
        ``max_demand`` whole, and the lists come in whole batches again
        (``Pipeline.autotune`` does this when it changes a link).

        >>> d = DemandState(10, 5)
        >>> d.pending = 7  # a remainder of 2 in flight: lists would come as 5 + 2
        >>> d.realign_to(5)
        >>> d.split([0] * 5), d.min_demand  # 2 still pending: no ask yet
        ([([0, 0, 0, 0, 0], 0)], 0)
        >>> d.split([0, 0]), d.min_demand  # all in: ask 10, and min_demand is back
        ([([0, 0], 10)], 5)
        """
        self.realign = min_demand
        self.min_demand = 0

    def _realigned(self) -> int:
        min_demand = self.realign if self.realign is not None else self.min_demand
        self.realign = None
        self.min_demand = min_demand
        return min_demand

    def initial_ask(self) -> int:
        """The first ask of an automatic subscription: ``max_demand``."""
        self.pending = self.max_demand
        return self.max_demand

    def manual_ask(self, n: int) -> None:
        """Record ``n`` events asked by hand."""
        self.pending += n

    def split(self, events: list[Any]) -> list[tuple[list[Any], int]]:
        """Cut ``events`` into ``(batch, ask)`` pairs, in order.

        ``ask`` is the demand to send upstream after ``batch`` has been handled
        (0: none). A manual subscription gets the whole list as one batch and never asks.
        """
        n = len(events)
        if self.manual:
            self.pending = max(self.pending - n, 0)
            return [(events, 0)]
        max_demand = self.max_demand
        min_demand = self.min_demand
        step = max_demand - min_demand
        pending = self.pending
        if n > pending:
            self.excess += n - pending
            log.error("a consumer received %d events in excess of its demand", n - pending)
        if n <= step:
            # The common case: one batch, no slicing.
            used = n if n <= pending else pending
            left = pending - used
            if left <= min_demand:
                self.pending = max_demand
                if self.realign is not None:
                    self._realigned()
                return [(events, max_demand - left)]
            self.pending = left
            return [(events, 0)]
        # ``received`` is what is left of the demand this list was sent against (it is
        # never refilled, so events beyond it are excess); ``pending`` is refilled by
        # each ask.
        received = pending
        batches = []
        for start in range(0, n, step):
            batch = events[start : start + step]
            size = len(batch)
            if size > received:
                size = received
                received = 0
            else:
                received -= size
            left = pending - size
            if left <= min_demand:
                pending = max_demand
                batches.append((batch, max_demand - left))
                if self.realign is not None:
                    min_demand = self._realigned()
            else:
                pending = left
                batches.append((batch, 0))
        self.pending = pending
        return batches
