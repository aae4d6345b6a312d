"""``Pipeline.peek``: the last events a stage emitted, kept only while someone looks.

A stage nobody peeks at pays nothing: its process's ``_dispatch`` is the class's own.
The first peek gives the process a ring (a bounded ``deque``) and an instance
``_dispatch`` that copies what the stage emits into it before dispatching as before;
the stage leaves the fused loop meanwhile (the loop hands lists on without
``_dispatch``). Taking nothing: the ring holds references to the events the
consumers get anyway. ``stop_peeking`` puts the class's ``_dispatch`` back.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .process import Process

#: Events a ring keeps at least (a peek of more widens it).
RING = 100


def ring(proc: Process, n: int) -> deque:
    """The ring of ``proc`` (made at the first call), keeping at least ``n`` events."""
    kept: deque | None = proc.__dict__.get("_peek_ring")
    if kept is not None and kept.maxlen is not None and kept.maxlen >= n:
        return kept
    kept = deque(kept or (), maxlen=max(RING, n))
    dispatch = type(proc)._dispatch

    def peeked_dispatch(events: list, from_buffer: bool = False) -> None:
        if not from_buffer:  # (events from the buffer were kept when they were made)
            kept.extend(events)
        dispatch(proc, events, from_buffer)

    proc.__dict__["_peek_ring"] = kept
    proc._dispatch = peeked_dispatch  # type: ignore[method-assign]
    proc.fits_loop = proc.fusable = False  # every list goes through _dispatch
    return kept


def stop_peeking(proc: Process) -> None:
    """Drop ``proc``'s ring; it dispatches (and fuses) as before."""
    if proc.__dict__.pop("_peek_ring", None) is None:
        return
    del proc._dispatch
    from .process import fits_loop

    proc.fits_loop = fits_loop(proc.stage)
    proc.fusable = proc.kind == "producer" and proc.fits_loop


def last(proc: Process, n: int) -> list[Any]:
    """The last ``n`` events ``proc``'s stage emitted since the first peek, oldest first."""
    kept = ring(proc, n)
    return list(kept)[-n:] if n else []


__all__ = ["RING", "last", "ring", "stop_peeking"]
