"""The buffering role of ``Process``: what a producer makes beyond demand waits in its
buffer (``buffer.py``, the pure part), is served first when demand comes, and a buffer
that keeps growing is reported."""

from __future__ import annotations

import logging
from typing import Any

from .buffer import Buffer
from .roles import Role

log = logging.getLogger("genstage_nb")

#: A buffer without a bound is reported (once) past 10x its links' max_demand, within
#: these bounds: it keeps growing while its consumers take less than it makes.
GROWING_FLOOR, GROWING_CAP = 10_000, 100_000


class Buffering(Role):
    """The buffering role of ``Process`` (producers and producer-consumers)."""

    # Its state (set by _init_buffering):
    buffer_warned: bool
    buffer: Buffer

    def _init_buffering(self, stage: Any) -> None:
        """The buffer, empty (fresh per run)."""
        if self.producing:
            self.buffer = Buffer(stage.buffer_size, stage.buffer_keep)
        self.buffer_warned = False  # (a buffer that grew past its limit is logged once)

    def _take_from_buffer(self, n: int) -> int:
        """Dispatch up to ``n`` buffered events; return how many were taken."""
        if n <= 0 or not len(self.buffer):
            return 0
        events = self.buffer.take(n)
        self._dispatch(events, from_buffer=True)
        return len(events)

    def _buffer_behind(self, events: list) -> None:
        """New events while older ones wait in the buffer: they queue behind them, and
        the buffer is served as far as the dispatcher can send on now."""
        self._store(events)
        ready = self._ready()
        if self.pc:
            ready = max(ready, self.pc_demand)
        self._take_from_buffer(ready)

    def _store(self, events: list) -> None:
        """Buffer events; an overflow is counted and logged with the options, and a
        buffer that grows past ``growing_limit`` is logged once."""
        dropped = self.buffer.store(events)
        if len(self.buffer) > GROWING_FLOOR and not self.buffer_warned:
            self._check_growing()
        if dropped:
            self.counters.dropped += dropped
            log.warning(
                "stage %r discarded %d events from its buffer (buffer_size=%s, buffer_keep=%r)",
                self.name,
                dropped,
                self.buffer.size,
                self.buffer.keep,
            )

    def growing_limit(self) -> int:
        """Buffered events past which a buffer with no bound (or a larger bound) is
        reported: 10x the max_demand of its links, at least 10,000, at most 100,000."""
        asked = sum(sub.max_demand for sub in self.consumers)
        return min(GROWING_CAP, max(GROWING_FLOOR, 10 * asked))

    def _check_growing(self) -> None:
        size, held = self.buffer.size, len(self.buffer)
        limit = self.growing_limit()
        if held <= limit or (size is not None and size <= limit):
            return
        if getattr(self.stage, "_gs_flushes", False):
            return  # (a Flow's reduce or join: what it held in its state, flushed at once)
        self.buffer_warned = True
        log.warning(
            "stage %r holds %d events in its buffer (buffer_size=%s), more than %d: it makes "
            "more events than its consumers take; bound it with buffer_size= (buffer_keep= "
            "says which events to drop), or make fewer events per call",
            self.name,
            held,
            size,
            limit,
        )


__all__ = ["GROWING_CAP", "GROWING_FLOOR", "Buffering"]
