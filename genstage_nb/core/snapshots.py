"""A stage's state at a checkpoint: what to save, whether it can be saved now, and how a
new run takes it back (DESIGN.md section 9).

A checkpoint is a cut of the stream taken while nothing moves: the sources hold (their
demand is kept, as ``demand="accumulate"`` keeps it), the events already made finish
moving (mailboxes empty, no hook at work, calls in flight in ``gs.map`` and executors
done, ``rate_limit``'s held events sent), and then every stage's state is taken in one
synchronous step on the event loop. Every event the sources made before the cut is then
either inside some stage's state (its hook's attributes, a producer-consumer's input
queue, a producer's buffer) or fully handled, and none made after it is anywhere: the
same cut aligned barriers give, with no barrier to align (all stages share one loop).

What a stage's state holds (``take``):

- ``user``: what its ``snapshot()`` hook returns (by default the attributes ``init()``
  set: ``Stage.snapshot``), pickled by the caller;
- ``out``: events it made and has not sent (buffer, a partition's queue, events kept
  back by the accumulate mode), oldest first;
- ``queue``: a producer-consumer's input received and not handled yet;
- ``counters``: its counters, so that progress goes on from where it stood.

A new run gets it back with ``put`` before the stage starts: ``init()`` runs as always
(opening files, clients), then ``restore(state)``, then the events come back where they
were (``Process._start`` calls ``resume``).
"""

from __future__ import annotations

from typing import Any

from .messages import BATCHES, queued_events


class _Restored:
    """The subscription a restored input queue names: nobody to ask (its demand was
    settled in the run that saved it)."""

    producer = consumer = None
    max_demand = 1000

    def __repr__(self) -> str:
        return "<restored input>"


RESTORED = _Restored()


def unsettled(proc: Any) -> str | None:
    """Why ``proc`` is not at rest for a checkpoint now (None: it is). ``"paused"`` and
    ``"failed"`` mean no checkpoint can be taken until that changes."""
    if not proc.running:
        return None  # ended (or not started): its state is what it left
    if proc.paused is not None or proc.status == "paused":
        return "paused"
    if proc.status in ("failed", "restarting"):
        return "failed"
    if proc.mailbox:
        return "has messages to serve"
    # (A ConcurrentConsumer's current_hook names its last event's hook: its events at
    # work are counted in _in_flight, below.)
    hook = proc.current_hook and not proc.concurrent
    if hook or proc._rest is not None or proc._resume is not None:
        return "is at work in a hook"
    if proc.producing and proc._demand_in_hand:
        return "is at work in handle_demand"
    if proc.jobs and (proc._sent or proc._waiting):
        return "has calls in flight"
    if proc.concurrent and any(state[1] for state in proc._in_flight.values()):
        return "has events at work"
    if proc.producing and proc._held_count:
        return "holds events back (rate_limit)"
    return None


def between_steps(proc: Any) -> bool:
    """True when ``proc`` is not in the middle of a step (a hook, a demand being served,
    a replay of kept demand): a source may be held there (``Checkpoints._settle``);
    messages waiting in its mailbox are served after, as held."""
    return not (
        proc.current_hook
        or proc._rest is not None
        or proc._resume is not None
        or (proc.producing and proc._demand_in_hand)
    )


def take(proc: Any) -> dict[str, Any]:
    """``proc``'s whole state now (it must be at rest: ``unsettled`` said None)."""
    stage = proc.stage
    out: list = []
    if proc.producing:
        dispatcher = proc.dispatcher
        for part in getattr(dispatcher, "_parts", {}).values():  # a partition's queues
            out.extend(part.queue)
        out.extend(proc.buffer.events())
        for kind, value in proc.accumulated:
            if kind == "dispatch":
                out.extend(value)
    return {
        "user": stage.snapshot(),
        "out": out,
        "queue": queued_events(proc.pc_queue) if proc.pc else [],
        "counters": proc.counters.snapshot(),
    }


def put(proc: Any, state: dict[str, Any]) -> None:
    """Give a process that has not started yet the state a checkpoint saved
    (``Process._start`` takes it back after ``init()``)."""
    proc._restored = state


def resume(proc: Any) -> None:
    """Take back the saved state, after ``init()`` (the stage's ``restore`` hook, then
    the events where they were). Called once per run, by ``Process._start``."""
    state, proc._restored = proc._restored, None
    proc.stage.restore(state["user"])
    counters = proc.counters
    for name, value in state["counters"].items():
        setattr(counters, name, value)
    if state["out"]:
        proc.buffer.store(list(state["out"]))
    queue = state["queue"]
    if queue:
        size = max((sub.max_demand for sub in proc.producers), default=1000)
        batches = [(queue[i : i + size], 0) for i in range(0, len(queue), size)]
        proc.pc_queue.append((BATCHES, RESTORED, batches))


__all__ = ["RESTORED", "between_steps", "put", "resume", "take", "unsettled"]
