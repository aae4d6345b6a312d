"""The pacing role of ``Process``: ``rate_limit=``, events held back until the window
has room (back-pressure: the demand they answer waits with them), released by a timer."""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio

from .policies import RateLimit
from .roles import Role
from .timing import BACKPRESSURED, clock


class Pacing(Role):
    """The pacing role of ``Process`` (producers and producer-consumers)."""

    # Its state (set by _init_pacing):
    rate: RateLimit | None
    _held: deque
    _held_count: int
    _release_at: float | None

    def _take_held(self) -> list:
        """Remove and return the events the rate limit holds back (accepted, not sent:
        no longer counted as accepted)."""
        made: list = []
        for _, events in self._held:
            made.extend(events)
        self.counters.accepted -= self._held_count
        self._held.clear()
        self._held_count = 0
        return made

    def _init_pacing(self, stage: Any) -> None:
        """The rate limit's window (fresh per run) and the deliveries it holds back."""
        rate = getattr(stage, "rate_limit", None)
        if rate is None or isinstance(rate, RateLimit):
            self.rate = rate  # (a shared gs.RateLimit: one window for all its stages)
        else:
            self.rate = RateLimit(*rate)
        self._held = deque()  # (subscription, events) the rate limit holds back
        self._held_count = 0
        self._release_at = None

    def _pace(self, deliveries: list) -> list:
        """``rate_limit=``: what may go now goes; the rest waits, in order, with the
        demand it answers (back-pressure), and goes when the window has room."""
        held, rate = self._held, self.rate
        assert rate is not None  # (only a stage with rate_limit= paces)
        for delivery in deliveries:
            held.append(delivery)
            self._held_count += len(delivery[1])
        now = clock()
        out = []
        while held:
            sub, events = held[0]
            j = rate.allow(now, len(events))
            if j == 0:
                break
            if j < len(events):
                out.append((sub, events[:j]))
                held[0] = (sub, events[j:])
                self._held_count -= j
                break
            held.popleft()
            self._held_count -= len(events)
            out.append((sub, events))
        if held:
            self.time.rest_as(now, BACKPRESSURED)  # waiting for the window: held back
            self._release_later(rate.next_free(now) - now)
        return out

    def _release_later(self, delay: float) -> None:
        at = clock() + delay
        if self._release_at is not None and self._release_at <= at:
            return  # a release is due sooner already
        self._release_at = at
        task_group = self.supervisor._tg
        if task_group is not None:
            task_group.start_soon(self._release_after, delay, at)

    async def _release_after(self, delay: float, at: float) -> None:
        await anyio.sleep(max(delay, 0.0))
        if self._release_at == at:
            self._release_at = None
            self.post(self._on_release)

    def _on_release(self, _: Any, __: Any) -> None:
        if not self.stopped and self._held:
            self._send([])
            if self.finishing:
                self._check_finished()


__all__ = ["Pacing"]
