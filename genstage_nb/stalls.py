"""Stall notices: a pipeline that has stopped moving says where and why.

While a pipeline runs, a task checks every fraction of ``Pipeline(stall_after=5.0)``
seconds whether anything moved (events sent or handled, demand asked) or any hook is at
work. When nothing has for ``stall_after`` seconds while some link still waits for
events (demand asked, nothing received), it records a ``Stall`` in ``p.warnings`` and
logs it, once per stall: the stage whose events are awaited, the links that wait, and
why, as far as the state shows it. A notice, not an error: a producer may be waiting for
outside input. A pipeline that moves again may stall again later, and is noticed again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

log = logging.getLogger("genstage_nb")


@dataclass
class Stall:
    """A pipeline that stopped moving: ``time`` (seconds since the run started) it was
    noticed, ``stage`` (the stage whose events are awaited), ``subscriptions`` (the
    links waiting, as ``"producer -> consumer"``) and ``reason``.

    >>> import genstage_nb as gs
    >>> s = gs.Stall(6.0, "numbers", ["numbers -> sink"], "it was asked for 10 events")
    >>> s.stage, s.subscriptions
    ('numbers', ['numbers -> sink'])
    >>> str(s)[:56]
    "nothing has moved for a while: 'numbers' sends no events"
    """

    time: float
    stage: str
    subscriptions: list[str]
    reason: str
    seconds: float = field(default=0.0, compare=False)
    #: When it cleared (seconds since the run started): the pipeline moved again, or
    #: the run ended. None while it holds; ``%pipeline status`` and the dashboard show
    #: only the stalls that hold.
    cleared: float | None = field(default=None, compare=False)

    @property
    def active(self) -> bool:
        """True while the stall holds."""
        return self.cleared is None

    def __str__(self) -> str:
        if self.subscriptions:
            waiting = ", ".join(self.subscriptions)
            verb = "waits" if len(self.subscriptions) == 1 else "wait"
            text = (
                f"nothing has moved for a while: {self.stage!r} sends no events while "
                f"{waiting} {verb}: {self.reason}"
            )
        else:
            text = f"nothing has moved for a while: {self.reason}"
        if self.cleared is not None:
            text += f" (cleared at {self.cleared:.1f} s)"
        return text


def progress(pipeline: Any) -> tuple[int, bool]:
    """A number that grows whenever anything moves, and whether a hook is at work."""
    moved = 0
    working = False
    for stats in pipeline.statistics().values():
        c = stats.counts
        moved += sum(c[k] for k in ("events_in", "events_out", "handled", "made"))
        moved += c["demand_in"] + c["demand_out"]
        working |= stats.at_work  # (a stage that ended busy is at work no more)
    return moved, working


def diagnose(pipeline: Any) -> Stall | None:
    """The stall the pipeline is in now, if some link waits for events."""
    waiting = [sub for sub in pipeline.subscriptions if sub.active and sub.pending > 0]
    lonely = [
        name
        for name, data in pipeline.graph.nodes(data=True)
        if data["kind"] in ("producer", "producer_consumer")
        and pipeline.graph.out_degree(name) == 0
    ]
    if not waiting:
        if lonely:
            return _stall(pipeline, lonely[0], [], _no_consumer(lonely))
        return _nothing_waits(pipeline)
    # A paused stage holds up the links around it (events sent to it wait unread in
    # its mailbox, so its own input still looks awaited).
    paused = [
        stage
        for sub in waiting
        for stage in (sub.producer, sub.consumer)
        if stage._process is not None and stage._process.paused is not None
    ]
    if paused:
        producer = paused[0]
        subs = [sub for sub in waiting if producer in (sub.producer, sub.consumer)]
    else:
        # The root of the wait: a producer whose own input is not waiting.
        waiting_for = {sub.consumer.name for sub in waiting}
        roots = [sub for sub in waiting if sub.producer.name not in waiting_for] or waiting
        producer = roots[0].producer
        subs = [sub for sub in waiting if sub.producer is producer]
    reason = _reason(pipeline, producer, subs)
    if lonely:
        reason += "; " + _no_consumer(lonely)
    return _stall(pipeline, producer.name, subs, reason)


def _nothing_waits(pipeline: Any) -> Stall | None:
    """No link waits for events, yet stages still run: say which, and why none can
    move (every case in which a run would otherwise hang without a word)."""
    procs = [proc for proc in pipeline._procs.values() if proc.running and not proc.stopped]
    if not procs:
        return None
    for proc in procs:
        if proc.paused is not None:
            return _stall(
                pipeline, proc.name, [], f"{proc.name!r}: " + _reason(pipeline, proc.stage, [])
            )
    for proc in procs:
        if proc.kind != "producer" and not proc.producers:
            return _stall(
                pipeline,
                proc.name,
                [],
                f"{proc.name!r} has no producer (none linked, or unlinked), so no event "
                f"will come: link one (p.link) or stop the pipeline",
            )
    for proc in procs:
        manual = [sub for sub in proc.producers if sub.active and sub._demand.manual]
        if manual and all(sub.pending == 0 for sub in proc.producers if sub.active):
            links = ", ".join(f"{sub.producer.name} -> {sub.consumer.name}" for sub in manual)
            return _stall(
                pipeline,
                proc.name,
                [],
                f"{proc.name!r} has manual demand ({links}) and asks for no more events "
                f"(call subscription.ask(n) in it, or return None from handle_subscribe)",
            )
    for proc in procs:
        if proc.producing and not proc.consumers and proc.kind != "consumer":
            return _stall(
                pipeline,
                proc.name,
                [],
                f"{proc.name!r} has no consumer left (its consumers ended or failed), so "
                f"nothing asks it for events: link one (p.link) or stop the pipeline",
            )
    names = ", ".join(repr(proc.name) for proc in procs)
    return _stall(
        pipeline,
        procs[0].name,
        [],
        f"no link waits for events, and {names} still run: each waits for outside input "
        f"(send(), emit()) or for the pipeline to be stopped",
    )


def _stall(pipeline: Any, stage: str, subs: list, reason: str) -> Stall:
    now = time.perf_counter() - pipeline.metrics._started
    names = [f"{sub.producer.name} -> {sub.consumer.name}" for sub in subs]
    return Stall(round(now, 3), stage, names, reason)


def _no_consumer(names: list[str]) -> str:
    listed = ", ".join(repr(n) for n in names)
    verb = "has" if len(names) == 1 else "have"
    return f"{listed} {verb} no consumer (link one with p.link, or its producers wait for it)"


def _reason(pipeline: Any, producer: Any, subs: list) -> str:
    proc = producer._process
    asked = sum(sub.pending for sub in subs)
    if proc is None:
        return "it is not running"
    if proc.paused is not None:
        return (
            f"it is paused after a failure in {proc.paused.hook or 'a hook'}: fix it, then "
            f"resume({proc.name!r}) or skip({proc.name!r})"
        )
    if getattr(proc, "accumulating", False) and proc.accumulated:
        held = sum(v for kind, v in proc.accumulated if kind == "demand")
        return (
            f"its demand is held in demand='accumulate' mode ({held} events asked): set "
            f"stage.demand_mode = 'forward' to release it"
        )
    dispatcher = getattr(proc, "dispatcher", None)
    explain = getattr(dispatcher, "stall_reason", None)  # (the Dispatcher protocol)
    reason = explain(proc.consumers) if explain is not None else None
    if reason is not None:
        return reason
    if proc.pc:
        return f"it waits for events of its own producers ({asked} asked of it downstream)"
    if proc.finishing:
        return "it is finishing"
    return (
        f"it was asked for {asked} events and sends none: its handle_demand returned fewer "
        f"than asked (a producer that waits for outside input must emit() them when they "
        f"come)"
    )


def clear(pipeline: Any) -> None:
    """Mark every stall notice that holds as cleared (the pipeline moved, or ended)."""
    now = round(time.perf_counter() - pipeline.metrics._started, 3)
    for record in pipeline.warnings:
        if isinstance(record, Stall) and record.cleared is None:
            record.cleared = now


class StallWatch:
    """The task that notices stalls (see the module doc)."""

    def __init__(self, pipeline: Any, after: float) -> None:
        self.pipeline = pipeline
        self.after = after
        self.interval = min(max(after / 4, 0.01), 1.0)
        self.seen = anyio.Event()  # set at the first stall (tests wait on it)
        self._noticed = False

    async def run(self, ended: anyio.Event) -> None:
        pipeline = self.pipeline
        last, _ = progress(pipeline)
        since = time.monotonic()
        while not ended.is_set():
            with anyio.move_on_after(self.interval):
                await ended.wait()
            moved, working = progress(pipeline)
            now = time.monotonic()
            durable = getattr(pipeline, "_checkpoints", None)
            if durable is not None and durable._taking:
                working = True  # a checkpoint holds the sources while the rest settles
            if moved != last or working:
                last, since = moved, now
                if self._noticed:
                    self._noticed = False
                    clear(pipeline)  # it moves again: the notice no longer holds
                continue
            if self._noticed or now - since < self.after:
                continue
            stall = diagnose(pipeline)
            if stall is None:
                continue
            self._noticed = True
            stall.seconds = round(now - since, 3)
            pipeline.warnings.append(stall)
            log.warning("%s: %s", pipeline._label, stall)
            self.seen.set()


__all__ = ["Stall", "StallWatch", "clear", "diagnose"]
