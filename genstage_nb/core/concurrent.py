"""A ``ConcurrentConsumer``'s events: one ``handle_event`` task per event.

GenStage's ConsumerSupervisor: each event runs in a task of the stage's task group, at
most ``max_demand`` at once; the stage asks again once ``min_demand`` of them have
finished. A failed event fails the stage (the event is named in the failure record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .subscription import Subscription


class ConcurrentEvents:
    """The concurrent-consumer role of ``Process``."""

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


__all__ = ["ConcurrentEvents"]
