"""The messages a stage's runtime passes: what each kind is, and the one way to ask which
events a message (or a whole stage) holds.

A mailbox entry is a triple ``(handler, a, b)``: the bound method of the receiving
process that serves it and its two arguments (a triple and a bound method, not a message
object: the hot path builds none). A producer-consumer's input queue holds triples
``(kind, subscription, payload)`` with ``kind`` one of ``EVENTS``, ``BATCHES``,
``CANCEL``. Everything else asks here which kind a mailbox entry is (``kind_of``) and
which events it carries (``events_in``, ``count_in``): nothing else compares handlers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Kinds of entries in a producer-consumer's input queue.
EVENTS, BATCHES, CANCEL = 0, 1, 2

#: Kinds of mailbox messages (``kind_of``); "other" for every message carrying no events
#: and needing no special handling when a stage stops.
ASK = "ask"
EVENTS_IN = "events"  # a list of events from a producer
BATCHES_IN = "batches"  # events already cut into (batch, ask) pairs
SUBSCRIBE = "subscribe"
EVENT_FAILED = "event_failed"  # a ConcurrentConsumer's event task failed
EVENT_DONE = "event_done"  # a ConcurrentConsumer's event task is done
CALL = "call"  # Stage.call(): a caller waits for the answer
OTHER = "other"

_KINDS: dict[Any, str] = {}


def bind(kinds: dict[Any, str]) -> None:
    """Say which handler function serves each kind (``process.py``, which joins the
    roles, does it once)."""
    _KINDS.update(kinds)


def kind_of(message: tuple[Any, Any, Any]) -> str:
    """The kind of a mailbox entry ``(handler, a, b)``."""
    return _KINDS.get(getattr(message[0], "__func__", None), OTHER)


def events_in(message: tuple[Any, Any, Any]) -> list[Any]:
    """The events a mailbox entry carries to its stage (none for most kinds)."""
    kind = kind_of(message)
    if kind == EVENTS_IN:
        return list(message[2])
    if kind == BATCHES_IN:
        return [event for batch, _ in message[2] for event in batch]
    return []


def count_in(message: tuple[Any, Any, Any]) -> int:
    """How many events a mailbox entry carries (``len(events_in(message))``, no copy)."""
    kind = kind_of(message)
    if kind == EVENTS_IN:
        return len(message[2])
    if kind == BATCHES_IN:
        return sum(len(batch) for batch, _ in message[2])
    return 0


def queued_events(entries: Iterable[tuple[Any, Any, Any]]) -> list[Any]:
    """The events in a producer-consumer's input queue entries."""
    out: list[Any] = []
    for kind, _, payload in entries:
        if kind == EVENTS:
            out.extend(payload)
        elif kind == BATCHES:
            out.extend(event for batch, _ in payload for event in batch)
    return out


def queued_count(entries: Iterable[tuple[Any, Any, Any]]) -> int:
    """How many events a producer-consumer's input queue entries hold."""
    n = 0
    for kind, _, payload in entries:
        if kind == EVENTS:
            n += len(payload)
        elif kind == BATCHES:
            n += sum(len(batch) for batch, _ in payload)
    return n


def events_waiting(proc: Any) -> int:
    """Events a stage has received and not handled yet: in its mailbox, its input queue,
    a list an async ``handle_events`` is at work on, concurrent events in flight, and
    batches at an executor or waiting for it."""
    n: int = sum(count_in(message) for message in proc.mailbox)
    n += queued_count(proc.pc_queue)
    if proc._rest is not None:
        batches, i = proc._rest
        n += sum(len(batch) for batch, _ in batches[i:])
    n += sum(state[1] for state in proc._in_flight.values())
    if proc.jobs:
        n += sum(len(job.batch) for job in (*proc._sent, *proc._waiting))
    return n


__all__ = [
    "ASK",
    "BATCHES",
    "BATCHES_IN",
    "CALL",
    "CANCEL",
    "EVENTS",
    "EVENTS_IN",
    "EVENT_DONE",
    "EVENT_FAILED",
    "OTHER",
    "SUBSCRIBE",
    "bind",
    "count_in",
    "events_in",
    "events_waiting",
    "kind_of",
    "queued_count",
    "queued_events",
]
