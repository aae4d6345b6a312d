"""The runtime of one stage: a mailbox served by one task, on anyio.

Stages talk only by posting messages to each other's mailbox: ``ask`` and ``cancel``
travel upstream, event lists and ends of stream travel downstream. A message is a
``(handler, a, b)`` triple appended to a deque; the owner task serves its mailbox
without awaiting between messages unless a hook is ``async``, and parks on an event
only when the mailbox is empty. So a batch costs a couple of task switches, not one per
event, and every rule of the protocol lives in the pure state machines (``demand.py``,
``buffer.py``, ``dispatchers.py``) this module calls. A chain of single-consumer links
can skip the messages altogether while nothing else is afoot: see ``pump.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import traceback
from collections import deque
from collections.abc import Iterable
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint

from .buffer import Buffer
from .errors import Failure
from .remote import Job, check_concurrency, check_picklable, submitter

if TYPE_CHECKING:
    from .subscription import Subscription

log = logging.getLogger("genstage_nb")

# Kinds of entries in a producer-consumer's input queue.
_EVENTS, _BATCHES, _CANCEL = 0, 1, 2
# Messages served in a row before the task lets others run.
_FAIRNESS = 256
# Messages one stage serves inline in another stage's task before waking its own.
_INLINE_BATCH = 64
# How deep inline serving may nest (stage A serving B serving C ...).
_MAX_DEPTH = 8
_NORMAL_REASONS = ("normal", "shutdown")


class Counters:
    """Hot-path counters of one stage: plain ints, read by the metrics sampler."""

    __slots__ = (
        "events_in",  # events delivered to this stage (counted as they are sent to it)
        "events_out",  # events this stage delivered, summed over its consumers
        "made",  # events this stage produced (handle_demand, emit, handle_events output)
        "accepted",  # of those, events its dispatcher took (the rest went to the buffer)
        "handled",  # events in batches its handle_events (or handle_event) finished
        "demand_in",
        "demand_out",
        "dropped",  # buffer overflow
        "discarded",  # partition hash returned None
        "failed",  # events in batches whose hook raised (in the Failure records)
        "unhandled_in",  # events received and never handled (the stage stopped)
        "unhandled_out",  # events made and never sent (the stage failed for good)
        "batches",
        "restarts",
    )

    def __init__(self) -> None:
        for slot in self.__slots__:
            setattr(self, slot, 0)

    def snapshot(self) -> dict[str, int]:
        return {slot: getattr(self, slot) for slot in self.__slots__}


class _Reply:
    __slots__ = ("event", "value", "error")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def as_events(stage_name: str, hook: str, result: Any) -> list:
    """Turn a hook's result into a list of events, or raise TypeError naming the stage."""
    if result.__class__ is list:
        return result
    if result is None:
        return []
    if isinstance(result, (str, bytes, bytearray, dict)) or not isinstance(result, Iterable):
        raise TypeError(
            f"stage {stage_name!r}: {hook} must return an iterable of events (e.g. a list) "
            f"or None, got {type(result).__name__}: {result!r:.80}"
        )
    return list(result)


class Process:
    """Serves one stage's mailbox for one run of its pipeline."""

    def __init__(self, stage: Any, supervisor: Any) -> None:
        self.stage = stage
        self.name = stage.name
        self.kind = stage.kind
        self.supervisor = supervisor
        self.mailbox: deque = deque()
        self._wakeup: anyio.Event | None = None
        self.status = "idle"
        self.running = False
        self.stopped = False
        self.stop_reason: Any = None
        self.counters = Counters()
        self.current: list = []
        self.current_hook = ""
        self.producing = hasattr(stage, "emit")
        self.pc = self.kind == "producer_consumer"
        self.fusable = self.kind == "producer"  # may drive its chain in one loop (pump.py)
        self.concurrent = hasattr(stage, "handle_event")
        # Producer side.
        self.consumers: dict[Subscription, None] = {}
        if self.producing:
            self.dispatcher = stage._new_dispatcher()
            self.buffer = Buffer(stage.buffer_size, stage.buffer_keep)
        self.accumulating = getattr(stage, "_demand_mode", "forward") == "accumulate"
        self.accumulated: list[tuple[str, Any]] = []
        self.finishing = False
        # Consumer side.
        self.producers: dict[Subscription, None] = {}
        self.pc_queue: deque = deque()
        self.pc_demand = 0
        self._task_group: Any = None
        self._in_flight: dict[Subscription, list[int]] = {}  # concurrent: [done, running]
        self._failed_ask: tuple[Subscription, int] | None = None
        self._demand_in_hand = 0
        self._undispatched: list = []
        self._rest: tuple[list, int] | None = None  # batches left of a list in hand
        self._final_failure: Failure | None = None
        # The sync fast path (see post): set while the task waits for messages.
        self._parked = False
        self.inline = not self.concurrent
        self._resume: Any = None
        self._inline_error: BaseException | None = None
        # Handlers on an executor (see core/remote.py).
        self.executor = getattr(stage, "executor", None)
        check_concurrency(stage)
        if self.executor is not None:
            check_picklable(self.name, "handle_events", stage.handle_events, self.executor)
            self.concurrency: int = stage.concurrency
            self._submit_to = submitter(self.executor)
            self._waiting: deque[Job] = deque()
            self._sent: deque[Job] = deque()
            self._complete_when_drained = False
            self._consume = self._send_batches  # batches go to the executor

    # -- posting -------------------------------------------------------------------

    def post(self, handler: Any, a: Any = None, b: Any = None) -> None:
        if self.stopped:
            self._dead_letter(handler, a, b)
            return
        self.mailbox.append((handler, a, b))
        if self._parked:
            self._take_mail()

    def _take_mail(self) -> None:
        """Mail for this parked stage: serve it in the sender's task, or wake the task."""
        supervisor = self.supervisor
        if self.inline and supervisor.depth < _MAX_DEPTH:
            # The sync fast path: serve the message right here, in the sender's task,
            # instead of waking this stage's task (a task switch per batch).
            supervisor.depth += 1
            try:
                self._serve_inline()
            finally:
                supervisor.depth -= 1
        else:
            self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def _serve_inline(self) -> None:
        """Serve the mailbox synchronously while the stage's own task is parked.

        Stops at an async hook (its coroutine is handed to the stage's task), at an
        error (raised in the stage's task, where failures are handled) or after a few
        messages; then the stage's task is woken to carry on.
        """
        self._parked = False
        mailbox = self.mailbox
        served = 0
        try:
            while mailbox and not self.stopped:
                handler, a, b = mailbox.popleft()
                pending = handler(a, b)
                if self.finishing and not self.stopped:
                    self._check_finished()
                if pending is not None:
                    self._resume = pending
                    break
                served += 1
                if served == _INLINE_BATCH:
                    break
        except Exception as exc:
            self._inline_error = exc
        if self._resume is not None or self._inline_error is not None or self.stopped or mailbox:
            self._wake()
        else:
            self._parked = True

    def post_ask(self, sub: Subscription, n: int) -> None:
        self.post(self._on_ask, sub, n)

    def post_info(self, message: Any) -> None:
        self.post(self._on_info, message)

    async def call(self, request: Any) -> Any:
        if self.stopped:
            raise RuntimeError(f"stage {self.name!r} is not running (status {self.status!r})")
        reply = _Reply()
        self.post(self._on_call, request, reply)
        await reply.event.wait()
        if reply.error is not None:
            raise reply.error
        return reply.value

    def _dead_letter(self, handler: Any, a: Any, b: Any) -> None:
        """A message for a stage that has stopped."""
        func = getattr(handler, "__func__", None)
        if func is Process._on_subscribe:
            # A consumer subscribed to a stage that has already ended.
            sub = a
            sub._to.post(sub._to._on_cancel, sub, self.stop_reason)
        elif func is Process._on_events:
            # Sent before the producer learnt that this stage stopped.
            self.counters.unhandled_in += len(b)
            if self._final_failure is not None:
                self._final_failure.unhandled.extend(b)
            else:
                log.warning(
                    "stage %r has stopped; %d events sent to it were not handled",
                    self.name,
                    len(b),
                )
        elif func is Process._on_call:
            b.error = RuntimeError(f"stage {self.name!r} stopped before answering the call")
            b.event.set()

    # -- the task ------------------------------------------------------------------

    async def main(self) -> None:
        """Run the stage until it ends: init, serve, restart on failure if allowed."""
        stage = self.stage
        restarts: deque[float] = deque()
        self.running = True
        try:
            while True:
                self.status = "running"
                try:
                    if self.concurrent or self.executor is not None:
                        async with anyio.create_task_group() as tg:
                            self._task_group = tg
                            await self._start()
                            self.supervisor._started(self)
                            await self._serve()
                    else:
                        await self._start()
                        self.supervisor._started(self)
                        await self._serve()
                    self.status = "done"
                    return
                except Exception as error:
                    exc = _first_leaf(error)
                    restarted = self._may_restart(restarts)
                    if restarted:
                        # Events made but refused by the dispatcher are lost either way.
                        unhandled, self._undispatched = self._undispatched, []
                        self.counters.unhandled_out += len(unhandled)
                    else:
                        unhandled = self._take_unhandled()
                    self._record_failure(exc, restarted, unhandled)
                    failed_ask, self._failed_ask = self._failed_ask, None
                    lost_demand, self._demand_in_hand = self._demand_in_hand, 0
                    if restarted and self.executor is not None:
                        # Batches in flight were abandoned with the task group: send
                        # them again after the restart (their demand was asked).
                        for job in reversed(self._sent):
                            job.reset()
                            self._waiting.appendleft(job)
                        self._sent.clear()
                    if restarted:
                        # The demand in hand when it failed is served after the restart.
                        if failed_ask is not None:
                            self._ask_upstream(*failed_ask)
                        if lost_demand:
                            self.mailbox.appendleft((self._on_self_demand, lost_demand, None))
                        elif self.pc and self.pc_queue:
                            # Input queued behind the failed batch: handled after the
                            # restart as far as the demand from downstream goes.
                            self.mailbox.appendleft((self._on_self_demand, 0, None))
                        self.status = "restarting"
                        self.counters.restarts += 1
                        await checkpoint()
                        continue
                    self.status = "failed"
                    self._terminate(exc)
                    self.supervisor._stage_failed(self, exc)
                    return
        except (KeyboardInterrupt, SystemExit) as exc:
            # A kernel interrupt (or exit) raised in a hook: not the stage's failure.
            # The whole pipeline stops cleanly and run() raises it once all have ended.
            self.supervisor._interrupted(self, exc)
        finally:
            self.supervisor._started(self)  # ended before it started: do not hold the rest
            if self._rest is not None:
                # Cancelled while an async handle_events was at work on this list.
                batches, i = self._rest
                self.counters.unhandled_in += sum(len(b) for b, _ in batches[i:])
                self._rest = None
                self.current = []
            if self.executor is not None and (self._sent or self._waiting):
                # Cancelled with batches at the executor or waiting for it.
                self.counters.unhandled_in += sum(
                    len(job.batch) for job in (*self._sent, *self._waiting)
                )
                self._sent.clear()
                self._waiting.clear()
            if self._resume is not None:
                # Cancelled with an async hook handed over but not started.
                _discard(self._resume)
                self._resume = None
            self.running = False
            self._task_group = None
            if self.status in ("running", "restarting", "idle"):
                self.status = "done"
            if not self.stopped:
                self.stopped = True
                self.stop_reason = "shutdown"
            end = getattr(stage, "_gs_ended", None)
            if end is not None:
                end(self)
            self.supervisor._stage_ended(self)

    async def _start(self) -> None:
        self.current = []
        self.current_hook = "init"
        await self._hook(self.stage.init)
        self.current_hook = ""
        # On a restart the subscriptions are still live: only new ones are announced.
        for sub in list(self.producers):
            if not sub.active:
                await self._subscribe_upstream(sub)
        if self.executor is not None:
            self._send_more()

    async def _serve(self) -> None:
        mailbox = self.mailbox
        served = 0
        while not self.stopped:
            if self._inline_error is not None:
                error, self._inline_error = self._inline_error, None
                raise error
            if self._resume is not None:
                pending, self._resume = self._resume, None
                await pending
                if self.finishing and not self.stopped:
                    self._check_finished()
            elif mailbox:
                handler, a, b = mailbox.popleft()
                pending = handler(a, b)
                if pending is not None:
                    await pending
                if self.finishing and not self.stopped:
                    self._check_finished()
                served += 1
                if served == _FAIRNESS:
                    served = 0
                    await checkpoint()
            else:
                wakeup = self._wakeup = anyio.Event()
                self._parked = True
                try:
                    await wakeup.wait()
                finally:
                    self._parked = False

    def _may_restart(self, restarts: deque[float]) -> bool:
        stage = self.stage
        if stage.restart == "temporary" or self.stopped:
            return False
        now = time.monotonic()
        while restarts and now - restarts[0] > stage.max_seconds:
            restarts.popleft()
        if len(restarts) >= stage.max_restarts:
            return False
        restarts.append(now)
        return True

    def _record_failure(
        self, exc: BaseException, restarted: bool, unhandled: list | None = None
    ) -> None:
        self.counters.failed += len(self.current)
        failure = Failure(
            self.name,
            exc,
            list(self.current),
            hook=self.current_hook,
            restarted=restarted,
            unhandled=unhandled or [],
        )
        self.current = []
        if not restarted:
            self._final_failure = failure
        self.supervisor._record_failure(self, failure)
        log.error(
            "stage %r failed in %s%s:\n%s",
            self.name,
            failure.hook or "a hook",
            " (restarting)" if restarted else "",
            _user_traceback(exc),
        )

    def _take_unhandled(self) -> list:
        """Remove and return every event this stage holds but will never handle or send
        (input first, then output), counting them."""
        received: list = []
        if self.executor is not None:
            for job in (*self._sent, *self._waiting):
                received.extend(job.batch)
            self._sent.clear()
            self._waiting.clear()
        for handler, _a, b in self.mailbox:
            func = getattr(handler, "__func__", None)
            if func is Process._on_events:
                received.extend(b)
            elif func is Process._on_batches:
                received.extend(e for batch, _ in b for e in batch)
        kept = [
            m
            for m in self.mailbox
            if getattr(m[0], "__func__", None) not in (Process._on_events, Process._on_batches)
        ]
        self.mailbox.clear()
        self.mailbox.extend(kept)
        for kind, _, payload in self.pc_queue:
            if kind == _EVENTS:
                received.extend(payload)
            elif kind == _BATCHES:
                received.extend(e for batch, _ in payload for e in batch)
        self.pc_queue.clear()
        made: list = []
        if self.producing:
            for kind, value in self.accumulated:
                if kind == "dispatch":
                    made.extend(value)
            self.accumulated.clear()
            made.extend(self.buffer.take_all())
        made.extend(self._undispatched)
        self._undispatched = []
        self.counters.unhandled_in += len(received)
        self.counters.unhandled_out += len(made)
        return received + made

    def _terminate(self, reason: Any) -> None:
        """Stop serving and tell every linked stage why."""
        if self.stopped:
            return
        self.stopped = True
        self.stop_reason = reason
        for sub in list(self.consumers):
            sub._to.post(sub._to._on_cancel, sub, reason)
        self.consumers.clear()
        for sub in list(self.producers):
            sub._from.post(sub._from._on_cancel_up, sub, reason)
        self.producers.clear()
        # Events still held will never be handled or sent: counted, and logged.
        left = self._take_unhandled()
        if left:
            log.warning("stage %r stopped with %d events unhandled", self.name, len(left))
        # Subscriptions and calls that came too late are answered as for a stopped stage.
        late = list(self.mailbox)
        self.mailbox.clear()
        for handler, a, b in late:
            self._dead_letter(handler, a, b)

    async def _hook(self, fn: Any, *args: Any) -> Any:
        result = fn(*args)
        if result is not None and result.__class__ is not list and isawaitable(result):
            result = await result
        return result

    # -- subscribing ---------------------------------------------------------------

    async def _subscribe_upstream(self, sub: Subscription) -> None:
        """Consumer side of a new subscription: announce it, then ask (automatic)."""
        producer = sub._from
        producer.post(producer._on_subscribe, sub)
        sub.active = True
        self.current_hook = "handle_subscribe"
        mode = await self._hook(self.stage.handle_subscribe, sub)
        self.current_hook = ""
        if mode == "manual":
            sub._demand.manual = True
        elif not sub._demand.manual:
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

    async def _on_subscribe(self, sub: Subscription, _: Any) -> None:
        self.current_hook = "handle_subscribe"
        await self._hook(self.stage.handle_subscribe, sub)
        self.current_hook = ""
        self.consumers[sub] = None
        self.dispatcher.subscribe(sub)

    # -- producer side -------------------------------------------------------------

    # Hot-path handlers are plain functions: they return None when all was done at
    # once, or a coroutine to await when a hook turned out to be async.

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
                    levels = _fused.chain(self)
                    if levels:
                        return _fused.pump(self, demand, levels)
                    if levels is not None and self._wakeup is not None:
                        # Served inline by a stage of the chain, which is at work: the
                        # stage's own task drives the chain once that stage is done.
                        return self._pump_later(demand)
                return self._handle_demand(demand)
        return None

    async def _pump_later(self, demand: int) -> None:
        levels = _fused.chain(self)
        pending = _fused.pump(self, demand, levels) if levels else self._handle_demand(demand)
        if pending is not None:
            await pending

    def _ready(self) -> int:
        ready = getattr(self.dispatcher, "ready", None)
        return ready() if ready is not None else 0

    def _handle_demand(self, demand: int) -> Any:
        self.current_hook = "handle_demand"
        self._demand_in_hand = demand
        result = self.stage.handle_demand(demand)
        if result is not None and result.__class__ is not list and isawaitable(result):
            return self._handle_demand_async(result)
        self._demand_handled(result)
        return None

    async def _handle_demand_async(self, pending: Any) -> None:
        self._demand_handled(await pending)

    def _demand_handled(self, result: Any) -> None:
        self.current_hook = ""
        self._demand_in_hand = 0
        events = as_events(self.name, "handle_demand", result)
        if events:
            self.counters.made += len(events)
            self._dispatch(events)

    def _take_from_buffer(self, n: int) -> int:
        """Dispatch up to ``n`` buffered events; return how many were taken."""
        if n <= 0 or not len(self.buffer):
            return 0
        events = self.buffer.take(n)
        self._dispatch(events)
        return len(events)

    def emit(self, events: Any, hook: str) -> None:
        events = as_events(self.name, hook, events)
        if events:
            self.counters.made += len(events)
            self._dispatch(events)

    def _dispatch(self, events: list) -> None:
        """Hand events to the dispatcher; buffer what nobody can take yet."""
        if self.accumulating and not self.pc:
            self.accumulated.append(("dispatch", events))
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
        if leftover:
            dropped = self.buffer.store(leftover)
            if dropped:
                self.counters.dropped += dropped
                log.warning(
                    "stage %r discarded %d events from its buffer (buffer_size=%s, buffer_keep=%r)",
                    self.name,
                    dropped,
                    self.buffer.size,
                    self.buffer.keep,
                )
        if extra:
            self.post(self._on_self_demand, extra)

    def _send(self, deliveries: list) -> None:
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
            return
        del self.consumers[sub]
        await self._hook(self.stage.handle_cancel, sub, reason)
        demand = self.dispatcher.cancel(sub)
        if demand:
            more = self._on_demand(demand)
            if more is not None:
                await more

    def finish(self) -> None:
        self.finishing = True

    def _check_finished(self) -> None:
        if self.kind == "consumer":
            return
        if self.pc and self.pc_queue:
            return
        if len(self.buffer) or self.dispatcher.buffered():
            return
        if any(kind == "dispatch" for kind, _ in self.accumulated):
            return
        self._terminate("normal")

    def buffered(self) -> int:
        if not self.producing:
            return 0
        held = sum(len(e) for kind, e in self.accumulated if kind == "dispatch")
        return len(self.buffer) + self.dispatcher.buffered() + held

    def set_demand_mode(self, mode: str) -> None:
        self.post(self._on_demand_mode, mode)

    async def _on_demand_mode(self, mode: str, _: Any) -> None:
        if mode == "accumulate":
            self.accumulating = True
            return
        self.accumulating = False
        pending, self.accumulated = self.accumulated, []
        for kind, value in pending:
            if kind == "dispatch":
                self._dispatch(value)
            else:
                more = self._on_demand(value)
                if more is not None:
                    await more

    # -- consumer side -------------------------------------------------------------

    def _on_events(self, sub: Subscription, events: list) -> Any:
        if self.pc:
            if self.pc_demand > 0 and not self.pc_queue:
                # Nothing queued before these events and demand to send them on.
                return self._consume(sub, sub._demand.split(events))
            self.pc_queue.append((_EVENTS, sub, events))
            return self._take_pc_events()
        if self.concurrent:
            self._start_events(sub, events)
            return None
        return self._consume(sub, sub._demand.split(events))

    def _on_batches(self, sub: Subscription, batches: list) -> Any:
        return self._consume(sub, batches)

    def _consume(self, sub: Subscription, batches: list) -> Any:
        """Hand batches to handle_events, asking upstream after each as GenStage does."""
        if len(batches) == 1:
            # The common case, one batch, without the loop of _consume_from.
            batch, ask = batches[0]
            self.current = batch
            self.current_hook = "handle_events"
            try:
                result = self.stage.handle_events(batch)
                if result is not None and result.__class__ is not list and isawaitable(result):
                    self._rest = (batches, 0)
                    return self._consume_async(sub, batches, (0, result))
                self._batch_handled(sub, result, ask, len(batch))
            except Exception:
                self._batch_failed(sub, batches, 0)
                raise
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
                result = await pending
                self._batch_handled(sub, result, batches[i][1], len(batches[i][0]))
            except Exception:
                self._batch_failed(sub, batches, i)
                raise
            step = self._consume_from(sub, batches, i + 1)
        self._rest = None

    def _consume_from(self, sub: Subscription, batches: list, i: int) -> Any:
        """Handle batches from ``i`` on; stop at an async hook: return (i, awaitable)."""
        handle_events = self.stage.handle_events
        n = len(batches)
        while i < n:
            batch, ask = batches[i]
            self.current = batch
            self.current_hook = "handle_events"
            try:
                result = handle_events(batch)
                if result is not None and result.__class__ is not list and isawaitable(result):
                    return i, result
                self._batch_handled(sub, result, ask, len(batch))
            except Exception:
                self._batch_failed(sub, batches, i)
                raise
            i += 1
        self.current = []
        self.current_hook = ""
        return None

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
        ask = batches[i][1]
        if ask:
            self._failed_ask = (sub, ask)
        rest = batches[i + 1 :]
        if rest:
            if self.pc:
                self.pc_queue.appendleft((_BATCHES, sub, rest))
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
            if kind == _EVENTS:
                pending = self._consume(sub, sub._demand.split(payload))
            elif kind == _BATCHES:
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
        del self.producers[sub]
        sub.active = False
        if self.pc and self.pc_queue:
            self.pc_queue.append((_CANCEL, sub, reason))
            return
        await self._invoke_cancel(sub, reason)

    async def _invoke_cancel(self, sub: Subscription, reason: Any) -> None:
        await self._hook(self.stage.handle_cancel, sub, reason)
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
            log.info(
                "stage %r is stopping after its producer %r ended with: %r",
                self.name,
                sub.producer.name,
                reason,
            )
            self._terminate(reason)

    def _complete(self) -> None:
        if self.executor is not None and (self._sent or self._waiting):
            self._complete_when_drained = True  # once the last result is in
            return
        if self.producing:
            self.finishing = True
            self._check_finished()
        elif self.concurrent:
            self._terminate("normal")
        else:
            self._terminate("normal")

    # -- handlers on an executor ---------------------------------------------------

    def _send_batches(self, sub: Subscription, batches: list) -> None:
        """Stands in for ``_consume`` when the stage has an executor."""
        waiting = self._waiting
        for batch, ask in batches:
            waiting.append(Job(sub, batch, ask))
        self._send_more()

    def _send_more(self) -> None:
        """Send waiting batches while fewer than ``concurrency`` are in flight; settle
        their demand as they go (the next events come while these are computed)."""
        waiting, sent = self._waiting, self._sent
        handler = self.stage.handle_events
        while waiting and len(sent) < self.concurrency and not self.stopped:
            job = waiting.popleft()
            job.future = self._submit_to(handler, job.batch)
            sent.append(job)
            self._task_group.start_soon(self._wait_for, job)
            if job.ask:
                ask, job.ask = job.ask, 0
                self._ask_upstream(job.sub, ask)

    async def _wait_for(self, job: Job) -> None:
        try:
            job.result = await anyio.to_thread.run_sync(
                job.future.result, abandon_on_cancel=True, limiter=self._limiter()
            )
        except Exception as exc:
            job.error = exc
        job.done = True
        self.post(self._on_job_done)

    def _limiter(self) -> anyio.CapacityLimiter:
        # A thread per batch in flight waits for its result, outside anyio's default
        # pool so that many in flight do not starve other to_thread users.
        limiter = getattr(self, "_waiters", None)
        if limiter is None:
            limiter = self._waiters = anyio.CapacityLimiter(self.concurrency)
        return limiter

    def _on_job_done(self, _: Any, __: Any) -> None:
        """Take the results that are in, in the order the batches were sent."""
        sent = self._sent
        while sent and sent[0].done:
            job = sent.popleft()
            if job.error is not None:
                self.current = job.batch
                self.current_hook = "handle_events"
                raise job.error
            self._batch_handled(job.sub, job.result, 0, len(job.batch))
        self._send_more()
        if self._complete_when_drained and not sent and not self._waiting:
            self._complete_when_drained = False
            self._complete()

    # -- concurrent consumer -------------------------------------------------------

    def _start_events(self, sub: Subscription, events: list) -> None:
        state = self._in_flight.setdefault(sub, [0, 0])
        state[1] += len(events)
        for event in events:
            self._task_group.start_soon(self._run_event, sub, event)

    async def _run_event(self, sub: Subscription, event: Any) -> None:
        try:
            await self._hook(self.stage.handle_event, event)
        except Exception as exc:
            if self.stopped:
                # The stage already ended: record the failure here.
                self.current, self.current_hook = [event], "handle_event"
                self._record_failure(exc, False)
                self.supervisor._stage_failed(self, exc)
            else:
                self.post(self._on_event_failed, exc, event)
            return
        self.post(self._on_event_done, sub)

    async def _on_event_done(self, sub: Subscription, _: Any) -> None:
        self.counters.batches += 1
        self.counters.handled += 1
        state = self._in_flight[sub]
        state[0] += 1
        state[1] -= 1
        # ConsumerSupervisor's rule: ask once min_demand handlers have finished.
        if state[0] >= max(sub.min_demand, 1) and not sub._demand.manual:
            n, state[0] = state[0], 0
            sub._demand.pending += n
            self._ask_upstream(sub, n)

    async def _on_event_failed(self, exc: BaseException, event: Any) -> None:
        for state in self._in_flight.values():
            if state[1]:
                state[1] -= 1
                break
        self.current = [event]
        self.current_hook = "handle_event"
        raise exc

    # -- messages from outside -----------------------------------------------------

    async def _on_info(self, message: Any, _: Any) -> None:
        self.current_hook = "handle_info"
        result = await self._hook(self.stage.handle_info, message)
        if self.producing:
            # GenStage's {:noreply, events, state}: events sent like handle_demand's
            # (within demand, the rest buffered); a consumer's return value is ignored.
            events = as_events(self.name, "handle_info", result)
            if events:
                self.counters.made += len(events)
                self._dispatch(events)
        self.current_hook = ""

    async def _on_call(self, request: Any, reply: _Reply) -> None:
        handle_call = self.stage.handle_call
        self.current_hook = "handle_call"
        try:
            if getattr(handle_call, "__func__", None) is _base_handle_call():
                reply.error = NotImplementedError(
                    f"stage {self.name!r} does not define handle_call"
                )
                return
            reply.value = await self._hook(handle_call, request)
        except Exception as exc:
            reply.error = exc
            raise
        finally:
            self.current_hook = ""
            reply.event.set()

    def request_stop(self) -> None:
        """Pipeline.stop: a producer stops making events and finishes."""
        self.post(self._on_stop_request)

    async def _on_stop_request(self, _: Any, __: Any) -> None:
        if self.kind == "producer":
            self.finishing = True
            self.accumulating = False
            pending, self.accumulated = self.accumulated, []
            for kind, value in pending:
                if kind == "dispatch":
                    self._dispatch(value)
        elif not self.producers:
            self._complete()

    def outstanding_demand(self) -> int:
        """Demand asked of this stage by its consumers and not yet served."""
        if not self.producing:
            return 0
        return sum(self.dispatcher.demand_of(sub) for sub in self.consumers)


def _base_handle_call() -> Any:
    from .stage import Stage

    return Stage.handle_call


#: Modules whose frames lead up to a hook (the runtime, and the executors and event
#: loops it calls the hook through): left out of a failure's logged traceback.
_RUNNER_MODULES = (
    "genstage_nb.core",
    "anyio",
    "concurrent",
    "asyncio",
    "trio",
    "outcome",
    "distributed",
)


def _user_traceback(exc: BaseException) -> str:
    """The traceback of a hook's exception from the user's code on: the runtime's own
    frames above the hook are left out (the exception itself keeps them all)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if not module.startswith(_RUNNER_MODULES):
            break
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines).rstrip()


def _discard(coro: Any) -> None:
    """Close a coroutine that will never run, and the hook coroutines it was given,
    without running any of their code (and without 'never awaited' warnings)."""
    frame = getattr(coro, "cr_frame", None)
    if frame is not None:
        for value in frame.f_locals.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if inspect.iscoroutine(item):
                    _discard(item)  # it may hold hook coroutines of its own
    if inspect.iscoroutine(coro) and coro.cr_frame is not None:
        _close_unstarted(coro)


def _close_unstarted(coro: Any) -> None:
    # Throwing into a coroutine that never started raises at its first line, so none
    # of its body runs; a plain close() would warn that it was never awaited.
    with contextlib.suppress(BaseException):  # GeneratorExit, or whatever it raised
        coro.throw(GeneratorExit)
    coro.close()


def _first_leaf(error: BaseException) -> BaseException:
    exc = error
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


__all__ = ["Counters", "Process", "as_events"]

from . import pump as _fused  # noqa: E402  (it builds on this module)
