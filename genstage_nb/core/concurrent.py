"""A ``ConcurrentConsumer``'s events: ``handle_event`` run for many events at once.

GenStage's ConsumerSupervisor: each event is handled concurrently, at most ``max_demand``
at once per subscription; the stage asks again once ``min_demand`` of them have
finished. A failed event fails the stage (the event is named in the failure record).
The events are handled by worker tasks of the stage, started as more events are in
flight than workers are idle and kept for the next ones (a task start per event is
what made this slower than a plain asyncio worker pool).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint

from .roles import Role
from .timing import BUSY, IDLE, SLICE, clock

if TYPE_CHECKING:
    from .subscription import Subscription


class ConcurrentEvents(Role):
    """The concurrent-consumer role of ``Process``."""

    # Its state (set by _init_concurrent):
    concurrent: bool
    _in_flight: dict[Subscription, list[int]]
    _event_queue: deque
    _idle_event_workers: deque
    _events_at_work: dict[object, tuple[Subscription, Any]]
    _served_out: bool  # the stage's mailbox is served no more: workers count themselves

    def _init_concurrent(self, stage: Any) -> None:
        """A ConcurrentConsumer's events in flight, per subscription, and its workers."""
        self.concurrent = hasattr(stage, "handle_event")
        self._in_flight = {}  # [done, running]
        self._event_queue = deque()  # (subscription, event) to handle
        self._idle_event_workers = deque()
        # Events a worker is handling now: a restart (which cancels the workers) puts
        # them back first in the queue, so that none is lost.
        self._events_at_work = {}
        self._served_out = False

    def _start_events(self, sub: Subscription, events: list) -> None:
        state = self._in_flight.setdefault(sub, [0, 0])
        state[1] += len(events)
        if self.time.mode != BUSY:
            self.time.enter(clock())  # busy while events are in flight
        queue, idle = self._event_queue, self._idle_event_workers
        for event in events:
            queue.append((sub, event))
            if idle:
                idle.popleft().set()
            else:
                self._task_group.start_soon(self._event_worker)

    async def _event_worker(self) -> None:
        queue, idle = self._event_queue, self._idle_event_workers
        since = clock()
        while True:
            while queue:
                sub, event = queue.popleft()
                token = object()
                self._events_at_work[token] = (sub, event)
                await self._run_event(sub, event)
                del self._events_at_work[token]  # (kept if cancelled: see _start_event_workers)
                if clock() - since > SLICE:
                    await checkpoint()  # hooks that never wait must not hold the loop
                    since = clock()
            if self.stopped:
                return  # the stage has ended and every event it took is handled
            wakeup = anyio.Event()
            idle.append(wakeup)
            await wakeup.wait()
            since = clock()

    async def _run_event(self, sub: Subscription, event: Any) -> None:
        try:
            await self._retried_hook("handle_event", event)
        except Exception as exc:
            if self.stopped or self._served_out:
                # The stage already ended: record the failure here.
                self._event_failed_late(exc, sub, event)
            else:
                self.post(self._on_event_failed, exc, (sub, event))
            return
        if self.stopped or self._served_out:
            # The stage already ended (its last producer left while this event was at
            # work): nothing serves its mailbox any more, so count the event here.
            self._count_late_event(sub)
            return
        self.post(self._on_event_done, sub)

    def _count_late_event(self, sub: Subscription) -> None:
        self.counters.batches += 1
        self.counters.handled += 1
        self._in_flight.setdefault(sub, [0, 0])[1] -= 1

    def _serve_out(self) -> None:
        """The stage has ended: the busy workers count their events themselves from now
        on (what they posted before it ended went to ``_dead_letter``)."""
        self._served_out = True
        self._release_event_workers()

    def _start_event_workers(self) -> None:
        """After a restart: workers for the events that were waiting for one, the events
        whose handlers the restart cancelled first (handled again: none is lost)."""
        cut_short, self._events_at_work = list(self._events_at_work.values()), {}
        self._event_queue.extendleft(reversed(cut_short))
        self._idle_event_workers.clear()
        for _ in self._event_queue:
            self._task_group.start_soon(self._event_worker)

    def _release_event_workers(self) -> None:
        """The stage has ended: idle workers exit, busy ones once the queue is empty."""
        idle = self._idle_event_workers
        while idle:
            idle.popleft().set()

    def _on_event_done(self, sub: Subscription, _: Any) -> None:
        self.counters.batches += 1
        self.counters.handled += 1
        self._event_finished(sub)

    def _event_finished(self, sub: Subscription) -> None:
        """An event of ``sub`` is done with (handled, or skipped after a failure)."""
        state = self._in_flight[sub]
        state[0] += 1
        state[1] -= 1
        if not state[1] and not any(s[1] for s in self._in_flight.values()):
            self.time.leave(clock(), IDLE)
        # ConsumerSupervisor's rule: ask once min_demand handlers have finished.
        demand = sub._demand
        if state[0] >= max(demand.min_demand, 1) and not demand.manual:
            n, state[0] = state[0], 0
            demand.pending += n
            if demand.realign is not None:
                demand._realigned()
            self._ask_upstream(sub, n)

    def _event_failed_late(self, exc: BaseException, sub: Subscription, event: Any) -> None:
        """An event failed after the stage ended (or while it was cancelled): still a
        failure, recorded with its event."""
        self._in_flight.setdefault(sub, [0, 0])[1] -= 1
        self.current, self.current_hook = [event], "handle_event"
        self._record_failure(exc, False)
        self.supervisor._stage_failed(self.process, exc)

    def _on_event_failed(self, exc: BaseException, failed: tuple) -> None:
        # (Not async: served inline in another stage's task, it raises there and becomes
        # the stage's inline error, which a cancellation cannot drop; a coroutine handed
        # to the stage's task would be discarded unstarted if the stage is cancelled.)
        sub, event = failed
        self._in_flight.setdefault(sub, [0, 0])[1] -= 1
        if not any(s[1] for s in self._in_flight.values()):
            self.time.leave(clock(), IDLE)  # nothing at work any more
        self.current = [event]
        self.current_hook = "handle_event"
        self._keep_event(sub, event)  # a paused stage handles it again, or skips it
        raise exc


__all__ = ["ConcurrentEvents"]
