"""A stage's runtime state at one moment, as a named record (``Process.statistics()``,
``Pipeline.statistics()``): what the metrics sampler, ``check_balance``, ``explain``
and the stall watch read, instead of the runtime's attributes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StageStatistics:
    """One stage, now.

    - ``producing``: it has an output side (a producer or producer-consumer);
      ``copies``: its dispatcher sends each event to every consumer (a broadcast);
    - ``counts``: its counters (``Counters``: events in and out, made, handled, ...);
    - ``buffered``: events made and not sent (its buffer, its dispatcher, the rate
      limit, demand="accumulate"); ``in_buffer``: of those, in the buffer proper, whose
      bound is ``buffer_size``; ``growing``: the buffer grew past the size at which it is
      reported (logged once) and is still past it; ``held``: in the dispatcher and the rate
      limit; ``queued``: events received and not handled yet; ``queued_input``: of
      those, in a producer-consumer's input queue as lists;
    - ``outstanding``: the demand it has asked of its producers and not received;
    - ``at_work``: a hook runs (or an async one is in hand) now;
    - ``times``: its cumulative busy / back-pressured / idle seconds up to now.
    """

    name: str
    kind: str
    producing: bool
    copies: bool
    status: str
    running: bool
    stopped: bool
    paused: Any
    counts: Mapping[str, int]
    buffered: int
    in_buffer: int
    buffer_size: int | None
    growing: bool
    held: int
    queued: int
    queued_input: int
    outstanding: int
    at_work: bool
    times: tuple[float, float, float]


__all__ = ["StageStatistics"]
