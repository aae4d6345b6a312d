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

    def __init__(self) -> None:
        for slot in self.__slots__:
            setattr(self, slot, 0)

    def snapshot(self) -> dict[str, int]:
        return {slot: getattr(self, slot) for slot in self.__slots__}


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


__all__ = ["Counters", "as_events"]
