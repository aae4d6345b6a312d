"""What a stage counts, and what its hooks may return.

``Counters`` holds a stage's hot-path counts as plain ints (the metrics sampler reads
them); ``as_events`` turns a hook's result into the list of events it stands for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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
        "retried",  # hook calls made again (retry=)
    )

    events_in: int
    events_out: int
    made: int
    accepted: int
    handled: int
    demand_in: int
    demand_out: int
    dropped: int
    discarded: int
    failed: int
    unhandled_in: int
    unhandled_out: int
    batches: int
    restarts: int
    retried: int

    def __init__(self) -> None:
        for slot in self.__slots__:
            setattr(self, slot, 0)

    def snapshot(self) -> dict[str, int]:
        return {slot: getattr(self, slot) for slot in self.__slots__}


#: How the fused loop (pump.py) keeps each counter, for level ``{j}`` of a chain: the
#: side of the link whose stage counts it ("out": the level's producer, "in": its
#: consumer) and the loop's sums that make it.
ON_THE_LOOP = {
    "made": ("out", "sent{j}"),
    "accepted": ("out", "sent{j}"),
    "events_out": ("out", "sent{j}"),
    "demand_in": ("out", "asked{j} - posted{j}"),  # (posted asks are counted when served)
    "events_in": ("in", "sent{j}"),
    "handled": ("in", "sent{j} - unhandled{j}"),
    "batches": ("in", "count{j}"),
    "demand_out": ("in", "asked{j}"),
}
#: The counters that never move while the fused loop runs, and why.
OFF_THE_LOOP = {
    "dropped": "the loop runs only while the producer's buffer is empty",
    "discarded": "a PartitionDispatcher link is never in a chain",
    "failed": "a hook that raises leaves the loop; the message path records the failure",
    "unhandled_in": "counted when a stage stops, never inside the loop",
    "unhandled_out": "counted when a stage fails for good, never inside the loop",
    "restarts": "a restart happens on the stage's own task",
    "retried": "a stage with retry= is off the loop (options.py)",
}


def check_rules(slots: tuple[str, ...]) -> None:
    """Every counter says how the fused loop keeps it (and no rule names no counter):
    a counter the fused loop would not keep cannot exist."""
    unruled = set(slots) ^ (set(ON_THE_LOOP) | set(OFF_THE_LOOP))
    if unruled:
        raise ImportError(f"Counters: say how the fused loop keeps {sorted(unruled)} (counters.py)")


check_rules(Counters.__slots__)


def as_events(stage_name: str, hook: str, result: Any) -> list[Any]:
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


__all__ = ["Counters", "as_events"]
