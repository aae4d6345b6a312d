"""The consumer side of a stage: subscriptions, batches, asks upstream.

A list of events that arrives is cut into batches by the subscription's
``DemandState`` (GenStage's batch rule); each batch goes to ``handle_events`` and,
after it, the consumer asks upstream as far as the rule says. A producer-consumer
takes its input only as far as its downstream demand allows: the rest waits in its
queue (GenStage's ``take_pc_events``). The end of a producer's stream completes the
stage when its last permanent producer has ended.
"""

from __future__ import annotations

import logging
from collections import deque
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from . import messages
from .counters import as_events
from .messages import BATCHES, CANCEL, EVENTS
from .roles import Role
from .timing import BACKPRESSURED, IDLE, clock

if TYPE_CHECKING:
    from .subscription import Subscription

log = logging.getLogger("genstage_nb")

_NORMAL_REASONS = ("normal", "shutdown")


class Consuming(Role):
    """The consumer role of ``Process`` (consumers and producer-consumers)."""

    # Its state (set by _init_consuming):
    producers: dict[Subscription, None]
    pc_queue: deque
    _failed_ask: tuple[Subscription, int] | None
    _rest: tuple[list, int] | None

    def _init_consuming(self) -> None:
        """Subscriptions upstream, a producer-consumer's input queue and the demand from
        downstream, and what a failure left in hand."""
        self.producers = {}
        self.pc_queue = deque()
        self._failed_ask = None
        self._rest = None  # batches left of a list in hand

    async def _subscribe_upstream(self, sub: Subscription) -> None:
        """Consumer side of a new subscription: announce it, then ask (automatic)."""
        producer = sub._from
        producer.post(producer._on_subscribe, sub)
        sub.active = True
        await self._subscribed(sub)

    async def _subscribed(self, sub: Subscription) -> None:
        self.current_hook = "handle_subscribe"
        try:
            mode = await self._hook(self.stage.handle_subscribe, sub)
        except Exception:
            self._keep_redo(
                lambda: self._subscribed(sub),
                lambda: self._first_ask(sub, None),
                restart=lambda: self._subscribed(sub),  # GenStage: subscribed anew
            )
            raise
        self.current_hook = ""
        self._first_ask(sub, mode)

    def _first_ask(self, sub: Subscription, mode: Any) -> None:
        if mode == "manual":
            sub._demand.manual = True
        elif not sub._demand.manual:
            producer = sub._from
            n = sub._demand.initial_ask()
            self.counters.demand_out += n
            if not self.supervisor._hold_ask(producer, sub, n):
                producer.post(producer._on_ask, sub, n)

    async def _on_link(self, sub: Subscription, _: Any) -> None:
        self.producers[sub] = None
        await self._subscribe_upstream(sub)

    async def _on_unlink(self, sub: Subscription, reason: Any) -> None:
        if sub in self.producers:
            del self.producers[sub]
            sub.active = False
            sub._from.post(sub._from._on_cancel_up, sub, reason)
            await self._hook(self.stage.handle_cancel, sub, reason)

    def _on_events(self, sub: Subscription, events: list) -> Any:
        if self.pc:
            if self.pc_demand > 0 and not self.pc_queue:
                # Nothing queued before these events and demand to send them on.
                return self._consume(sub, sub._demand.split(events))
            self.pc_queue.append((EVENTS, sub, events))
            return self._take_pc_events()
        if self.concurrent:
            self._start_events(sub, events)
            return None
        return self._consume(sub, sub._demand.split(events))

    def _on_batches(self, sub: Subscription, batches: list) -> Any:
        return self._consume(sub, batches)

    def _consume(self, sub: Subscription, batches: list) -> Any:
        """Hand batches to handle_events, asking upstream after each as GenStage does
        (a stage of jobs sends them out as jobs: jobs.py)."""
        if self.jobs:
            return self._send_batches(sub, batches)
        if len(batches) == 1:
            # The common case, one batch, without the loop of _consume_from.
            batch, ask = batches[0]
            self.current = batch
            self.current_hook = "handle_events"
            time = self.time
            time.enter(clock())
            try:
                result = self.stage.handle_events(batch)
                if result is not None and result.__class__ is not list and isawaitable(result):
                    self._rest = (batches, 0)
                    return self._consume_async(sub, batches, (0, result))
                time.leave(clock(), IDLE)
                self._batch_handled(sub, result, ask, len(batch))
            except Exception as exc:
                if self.retry is not None and self.retry.retries(exc):
                    # Called again after a backoff, in the stage's own task.
                    self._rest = (batches, 0)
                    again = self._retry_call(self._events_hook, batch, exc)
                    return self._consume_async(sub, batches, (0, again))
                time.leave(clock(), IDLE)
                self._batch_failed(sub, batches, 0)
                raise
            time.mode = (BACKPRESSURED if self.pc_demand <= 0 else IDLE) if self.pc else IDLE
            self.current = []
            self.current_hook = ""
            return None
        step = self._consume_from(sub, batches, 0)
        if step is None:
            return None
        self._rest = (batches, step[0])
        return self._consume_async(sub, batches, step)

    async def _consume_async(self, sub: Subscription, batches: list, step: Any) -> None:
        # While this runs, ``_rest`` says which batches of the list are not done yet.
        while step is not None:
            i, pending = step
            self._rest = (batches, i)
            try:
                try:
                    result = await pending
                except Exception as exc:
                    if self.retry is None or not self.retry.retries(exc) or self._attempts:
                        raise
                    result = await self._retry_call(self._events_hook, batches[i][0], exc)
                self.time.leave(clock(), IDLE)  # busy while it awaited
                self._batch_handled(sub, result, batches[i][1], len(batches[i][0]))
                self.time.mode = (
                    (BACKPRESSURED if self.pc_demand <= 0 else IDLE) if self.pc else IDLE
                )
            except Exception:
                self.time.leave(clock(), IDLE)
                self._batch_failed(sub, batches, i)
                raise
            step = self._consume_from(sub, batches, i + 1)
        self._rest = None

    def _consume_from(self, sub: Subscription, batches: list, i: int) -> Any:
        """Handle batches from ``i`` on; stop at an async hook: return (i, awaitable)."""
        handle_events = self.stage.handle_events
        time = self.time
        n = len(batches)
        while i < n:
            batch, ask = batches[i]
            self.current = batch
            self.current_hook = "handle_events"
            time.enter(clock())
            try:
                result = handle_events(batch)
                if result is not None and result.__class__ is not list and isawaitable(result):
                    return i, result
                time.leave(clock(), IDLE)
                self._batch_handled(sub, result, ask, len(batch))
            except Exception as exc:
                if self.retry is not None and self.retry.retries(exc):
                    return i, self._retry_call(self._events_hook, batch, exc)
                time.leave(clock(), IDLE)
                self._batch_failed(sub, batches, i)
                raise
            time.mode = (BACKPRESSURED if self.pc_demand <= 0 else IDLE) if self.pc else IDLE
            i += 1
        self.current = []
        self.current_hook = ""
        return None

    def _events_hook(self) -> Any:
        """The stage's handle_events as it is now (a re-run cell may have swapped it)."""
        return self.stage.handle_events

    def _batch_handled(self, sub: Subscription, result: Any, ask: int, n: int) -> None:
        counters = self.counters
        if self.pc:
            out = (
                result
                if result.__class__ is list
                else as_events(self.name, "handle_events", result)
            )
            counters.handled += n
            if out:
                counters.made += len(out)
                self._dispatch(out)
        else:
            counters.handled += n
        counters.batches += 1
        if ask:
            self._ask_upstream(sub, ask)

    def _batch_failed(self, sub: Subscription, batches: list, i: int) -> None:
        # The failed batch goes to the failure record; if the stage restarts, its demand
        # is asked again so the flow goes on, and the batches after it stay queued.
        self._rest = None
        batch, ask = batches[i]
        if ask:
            self._failed_ask = (sub, ask)
        self._keep_batch(sub, batch, ask)  # a paused stage handles it again, or skips it
        rest = batches[i + 1 :]
        if rest:
            if self.pc:
                self.pc_queue.appendleft((BATCHES, sub, rest))
            else:
                self.mailbox.appendleft((self._on_batches, sub, rest))

    def _ask_upstream(self, sub: Subscription, n: int) -> None:
        if sub in self.producers:
            self.counters.demand_out += n
            producer = sub._from
            producer.post(producer._on_ask, sub, n)

    def _take_pc_events(self) -> Any:
        """Handle queued input while downstream demand lasts (GenStage's take_pc_events)."""
        pending = self._take_pc_events_from_queue()
        if pending is None:
            return None
        return self._take_pc_events_async(pending)

    async def _take_pc_events_async(self, pending: Any) -> None:
        while pending is not None:
            await pending
            pending = self._take_pc_events_from_queue()

    def _take_pc_events_from_queue(self) -> Any:
        queue = self.pc_queue
        while self.pc_demand > 0 and queue and not self.stopped:
            kind, sub, payload = queue.popleft()
            if kind == EVENTS:
                pending = self._consume(sub, sub._demand.split(payload))
            elif kind == BATCHES:
                pending = self._consume(sub, payload)
            else:
                pending = self._invoke_cancel(sub, payload)
            if pending is not None:
                return pending
        return None

    async def _on_cancel(self, sub: Subscription, reason: Any) -> None:
        """The producer of ``sub`` ended or went away (GenStage's consumer_cancel)."""
        if sub not in self.producers:
            return
        if self.pc and self.pc_queue:
            # Behind the input still queued: the producer counts as live until its turn
            # (so an earlier producer's end does not complete the stage before the
            # events and the end of this one are taken).
            if not any(kind == CANCEL and s is sub for kind, s, _ in self.pc_queue):
                self.pc_queue.append((CANCEL, sub, reason))
            return
        await self._invoke_cancel(sub, reason)

    async def _invoke_cancel(self, sub: Subscription, reason: Any) -> None:
        if sub in self.producers:
            del self.producers[sub]
            sub.active = False
        self.current_hook = "handle_cancel"
        try:
            await self._hook(self.stage.handle_cancel, sub, reason)
        except Exception:
            self._keep_redo(
                lambda: self._invoke_cancel(sub, reason),
                lambda: self._cancelled(sub, reason),
                restart=lambda: self._cancelled(sub, reason),  # the producer is gone still
            )
            raise
        self.current_hook = ""
        self._cancelled(sub, reason)

    def _cancelled(self, sub: Subscription, reason: Any) -> None:
        normal = isinstance(reason, str) and reason in _NORMAL_REASONS
        if normal:
            # Completion: a stage ends when its last permanent producer has ended
            # (during Pipeline.stop, when its last producer has ended).
            stopping = self.supervisor.stopping
            if sub.cancel == "permanent" or stopping:
                live = [
                    s for s in self.producers if s.active and (stopping or s.cancel == "permanent")
                ]
                if not live:
                    self._complete()
            return
        if sub.cancel in ("permanent", "transient"):
            ended = (self.name, sub.producer.name, reason)
            log.info("stage %r is stopping after its producer %r ended with: %r", *ended)
            self._terminate(reason)

    def _take_failed_ask(self) -> tuple[Subscription, int] | None:
        """The ask upstream that a failure cut short, taken (None if none)."""
        failed_ask, self._failed_ask = self._failed_ask, None
        return failed_ask

    def _take_queued(self) -> list:
        """Remove and return a producer-consumer's queued input."""
        received = messages.queued_events(self.pc_queue)
        self.pc_queue.clear()
        return received

    def _complete(self) -> None:
        if self._complete_once_drained():
            return
        if self.producing:
            self.finish()
            self._check_finished()
        else:
            self._terminate("normal")


__all__ = ["BATCHES", "CANCEL", "EVENTS", "Consuming"]
