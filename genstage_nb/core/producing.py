"""The producer side of a stage: demand in, events out through the dispatcher.

Asks from consumers go to the dispatcher, which answers with the demand to pass on;
the buffer is served first, the rest of the demand goes to ``handle_demand`` (a
producer-consumer instead takes its queued input, see ``consuming.py``). Events made
go to the dispatcher; what nobody can take yet waits in the buffer. A producer whose
chain can be driven in one loop hands the demand to ``pump.py``.

Hot-path handlers are plain functions: they return None when all was done at once, or
a coroutine to await when a hook turned out to be async.
"""

from __future__ import annotations

import logging
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from . import pump as _fused
from .counters import as_events
from .roles import Role
from .timing import BACKPRESSURED, IDLE, clock

if TYPE_CHECKING:
    from .dispatchers import Dispatcher
    from .subscription import Subscription

log = logging.getLogger("genstage_nb")


class Producing(Role):
    """The producer role of ``Process`` (producers and producer-consumers)."""

    # Its state (set by _init_producing):
    producing: bool
    consumers: dict[Subscription, None]
    finishing: bool
    _undispatched: list
    pc_demand: int
    _demand_in_hand: int
    _demand_in_hand_was: int
    dispatcher: Dispatcher

    def _init_producing(self, stage: Any) -> None:
        """Subscriptions downstream, the dispatcher (fresh per run), the demand."""
        self.producing = hasattr(stage, "emit")
        self.consumers = {}
        if self.producing:
            self.dispatcher = stage._new_dispatcher()
        self.finishing = False
        self._undispatched = []  # made, refused by the dispatcher (a failure)
        # Demand from downstream (a producer-consumer's), and the demand handed to
        # handle_demand (what a failure left in hand; the last one: timing.py).
        self.pc_demand = 0
        self._demand_in_hand = 0
        self._demand_in_hand_was = 0

    async def _on_subscribe(self, sub: Subscription, _: Any) -> None:
        self.current_hook = "handle_subscribe"
        try:
            await self._hook(self.stage.handle_subscribe, sub)
        except Exception:
            self._keep_redo(
                lambda: self._on_subscribe(sub, None),
                lambda: self._subscribe(sub),
                restart=lambda: self._subscribe(sub),  # before the consumer's ask is served
            )
            raise
        self.current_hook = ""
        self._subscribe(sub)

    def _subscribe(self, sub: Subscription) -> None:
        self.consumers[sub] = None
        self.dispatcher.subscribe(sub)

    def _on_ask(self, sub: Subscription, n: int) -> Any:
        if sub not in self.consumers:
            return None
        self.counters.demand_in += n
        demand, deliveries = self.dispatcher.ask(sub, n)
        if deliveries:
            self._send(deliveries)
        return self._on_demand(demand)

    def _on_self_demand(self, demand: int, _: Any) -> Any:
        return self._on_demand(demand)

    def _on_demand(self, demand: int) -> Any:
        """New demand for this producer (GenStage's handle_dispatcher_result).

        The buffer is served first, as far as the dispatcher can send on (which may be
        more than ``demand``: GenStage takes only ``demand`` and can leave buffered
        events waiting while a consumer has demand); the rest of ``demand`` goes to
        ``handle_demand`` (a producer-consumer instead handles its queued input).
        """
        if self.pc:
            self.pc_demand += demand
            if self.time.mode == BACKPRESSURED and self.pc_demand > 0:
                self.time.rest_as(clock(), IDLE)  # downstream wants events again
            self._take_from_buffer(max(self.pc_demand, self._ready()))
            return self._take_pc_events()
        if len(self.buffer):
            ready = self._ready()
            taken = self._take_from_buffer(demand if demand > ready else ready)
            demand = demand - taken if demand > taken else 0
        if demand > 0 and not self.finishing:
            if self.accumulating:
                self.accumulated.append(("demand", demand))
            else:
                if self.fusable and _fused.enabled:
                    levels = _fused.chain(self)  # type: ignore[arg-type]  # (self: a Process)
                    if levels:
                        return _fused.pump(self, demand, levels)  # type: ignore[arg-type]
                    if levels is not None and self._wakeup is not None:
                        # Served inline by a stage of the chain, which is at work: the
                        # stage's own task drives the chain once that stage is done.
                        return self._pump_later(demand)
                return self._handle_demand(demand)
        return None

    async def _pump_later(self, demand: int) -> None:
        levels = _fused.chain(self)  # type: ignore[arg-type]  # (self: a Process)
        pending = (
            _fused.pump(self, demand, levels)  # type: ignore[arg-type]
            if levels
            else self._handle_demand(demand)
        )
        if pending is not None:
            await pending

    def _ready(self) -> int:
        ready = getattr(self.dispatcher, "ready", None)
        return ready() if ready is not None else 0

    def _handle_demand(self, demand: int) -> Any:
        self.current_hook = "handle_demand"
        self._demand_in_hand = demand
        time = self.time
        time.enter(clock())
        try:
            result = self.stage.handle_demand(demand)
        except Exception as exc:
            if self.retry is None or not self.retry.retries(exc):
                raise
            return self._handle_demand_async(self._retry_call(self._demand_hook, demand, exc))
        if result is not None and result.__class__ is not list and isawaitable(result):
            return self._handle_demand_async(result)
        time.leave(clock(), IDLE)
        # All the demand it was given met: none outstanding, it is held back (the
        # buffer was served first, so this is what its consumers were still owed).
        time.mode = BACKPRESSURED if self._demand_handled(result) >= demand else IDLE
        return None

    def _demand_hook(self) -> Any:
        return self.stage.handle_demand

    async def _handle_demand_async(self, pending: Any) -> None:
        try:
            result = await pending
        except Exception as exc:
            if self.retry is None or not self.retry.retries(exc) or self._attempts:
                raise
            result = await self._retry_call(self._demand_hook, self._demand_in_hand, exc)
        self.time.leave(clock(), IDLE)  # busy while it awaited
        made = self._demand_handled(result)
        self.time.mode = BACKPRESSURED if made >= self._demand_in_hand_was else IDLE

    def _demand_handled(self, result: Any) -> int:
        """Send what handle_demand returned; return how many events it made."""
        self.current_hook = ""
        self._demand_in_hand_was, self._demand_in_hand = self._demand_in_hand, 0
        events = as_events(self.name, "handle_demand", result)
        if events:
            self.counters.made += len(events)
            self._dispatch(events)
        return len(events)

    def emit(self, events: Any, hook: str) -> None:
        events = as_events(self.name, hook, events)
        if events:
            self.counters.made += len(events)
            self._dispatch(events)

    def _dispatch(self, events: list, from_buffer: bool = False) -> None:
        """Hand events to the dispatcher; buffer what nobody can take yet.

        The buffer holds the oldest events not sent: new events queue behind it (the
        buffer is served first, as far as the dispatcher can send on), and what the
        dispatcher leaves of events taken from the buffer goes back to its front (and
        is never kept by the accumulate mode). So events leave in the order made.
        """
        if self.accumulating and not self.pc and not from_buffer:
            self.accumulated.append(("dispatch", events))
            return
        if not from_buffer and len(self.buffer):
            self._buffer_behind(events)
            return
        try:
            deliveries, leftover, extra = self.dispatcher.dispatch(events)
        except Exception:
            self._undispatched = events  # goes to the failure record
            raise
        counters = self.counters
        counters.accepted += len(events) - len(leftover)
        counters.discarded = self.dispatcher.discarded
        if deliveries:
            self._send(deliveries)
        if self.pc:
            sent = len(events) - len(leftover)
            self.pc_demand = self.pc_demand - sent if self.pc_demand > sent else 0
        if leftover and from_buffer:
            self.buffer.put_back(leftover)
        elif leftover:
            self._store(leftover)
        if extra:
            self.post(self._on_self_demand, extra)

    def _send(self, deliveries: list) -> None:
        if self.rate is not None:
            deliveries = self._pace(deliveries)
        counters = self.counters
        for sub, events in deliveries:
            n = len(events)
            counters.events_out += n
            to = sub._to
            to.counters.events_in += n
            to.post(to._on_events, sub, events)

    async def _on_cancel_up(self, sub: Subscription, reason: Any) -> None:
        """A consumer left (unlinked, stopped or failed)."""
        if sub not in self.consumers:
            # (a consumer that failed before it subscribed)
            if self._alone_for_good(reason):
                self._terminate("shutdown")
            return
        del self.consumers[sub]
        await self._consumer_left(sub, reason)

    async def _consumer_left(self, sub: Subscription, reason: Any) -> None:
        """``handle_cancel``, then the consumer's demand leaves the dispatcher. A failing
        hook keeps the rest for the resume, the skip or the restart (else a broadcast
        waited for ever on the demand of a consumer that had left)."""
        self.current_hook = "handle_cancel"
        try:
            await self._hook(self.stage.handle_cancel, sub, reason)
        except Exception:
            self._keep_redo(
                lambda: self._consumer_left(sub, reason),
                lambda: self._consumer_gone(sub, reason),
                restart=lambda: self._consumer_gone(sub, reason),
            )
            raise
        self.current_hook = ""
        pending = self._consumer_gone(sub, reason)
        if pending is not None:
            await pending

    def _consumer_gone(self, sub: Subscription, reason: Any) -> Any:
        """What a consumer's leaving does once its ``handle_cancel`` has run: None, or an
        awaitable for the stage's task."""
        if self.supervisor.stopping and not self.consumers or self._alone_for_good(reason):
            # Nobody is left to take what it holds or makes: stopping (it ends now instead
            # of at the stop's timeout), or its last consumer failed for good in a run()
            # that nothing can link to later (on_failure="continue"). What it holds is
            # counted as unhandled.
            self._terminate("shutdown")
            return None
        demand = self.dispatcher.cancel(sub)
        if demand or (len(self.buffer) and self._ready()):
            # New demand, or none but buffered events that may go now (a broadcast's
            # slowest consumer left: the others' demand frees what waited for it).
            return self._on_demand(demand)
        return None

    def _alone_for_good(self, reason: Any) -> bool:
        """Every consumer linked to this stage has stopped (failed, or stopped in turn
        because of a failure: not unlinked), in a run() that nobody can link to later."""
        return (
            not self.consumers
            and reason != "unlinked"
            and self.supervisor._consumers_gone(self.process)
        )

    def finish(self) -> None:
        self.finishing = True

    def _stop_making(self) -> None:
        """A stop request: a producer makes no more events; the demand it accumulated
        is let go, what it made beyond demand is dispatched."""
        self.finishing = True
        self._stop_accumulating()

    def _take_made(self) -> list:
        """Remove and return the events made and not sent (accumulated, buffered, refused
        by the dispatcher)."""
        made = [*self._take_accumulated(), *self.buffer.take_all()] if self.producing else []
        return made + self._take_refused()

    def _take_refused(self) -> list:
        """Remove and return the events the dispatcher refused (a failure's)."""
        refused, self._undispatched = self._undispatched, []
        return refused

    def _take_demand_in_hand(self) -> int:
        """The demand handed to a handle_demand that failed, taken (0 if none)."""
        demand, self._demand_in_hand = self._demand_in_hand, 0
        return demand

    def _check_finished(self) -> None:
        if self.kind == "consumer":
            return
        if self.pc and self.pc_queue:
            return
        if len(self.buffer) or self.dispatcher.buffered() or self._held:
            return
        if any(kind == "dispatch" for kind, _ in self.accumulated):
            return
        self._terminate("normal")

    def buffered(self) -> int:
        if not self.producing:
            return 0
        held = self._accumulated_events()
        return len(self.buffer) + self.dispatcher.buffered() + held + self._held_count

    def outstanding_demand(self) -> int:
        """Demand asked of this stage by its consumers and not yet served."""
        if not self.producing:
            return 0
        return sum(self.dispatcher.demand_of(sub) for sub in self.consumers)


__all__ = ["Producing"]
