"""Slow-handler detection: a handler that holds the event loop is named, not suffered.

Every stage of a pipeline runs on one event loop (in a notebook: the kernel's). A sync
handler that computes for seconds freezes all of them, and the notebook with them. While
a pipeline runs, a heartbeat task on the loop notes the time every few milliseconds and a
watchdog thread checks the note. When the loop has not beaten for ``threshold`` seconds,
the thread looks at what the loop's thread is executing (``sys._current_frames``: no cost
on the hot path), finds the innermost stage hook on that stack, records a
``SlowHandler`` in ``Pipeline.warnings`` and logs a warning right away (in a notebook it
shows while the cell is still frozen). The record's ``seconds`` grow while the block
lasts and are final when the loop beats again.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from inspect import CO_COROUTINE
from types import FrameType
from typing import Any

import anyio

from .core import pump
from .core.process import Process
from .core.stage import HOOKS, Stage

log = logging.getLogger("genstage_nb")

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
MAX_WARNINGS = 100  # older records are dropped; a soak run must not grow without bound


@dataclass
class SlowHandler:
    """A stage hook that held the event loop for ``seconds`` (so far, while
    ``ongoing``); ``started`` is in seconds since the run started, ``where`` the file
    and line of the stage's own code that was running when it was caught.

    ``Pipeline.warnings`` keeps them (``Pipeline(slow_handler=seconds)`` sets the limit):

    >>> import genstage_nb as gs
    >>> w = gs.SlowHandler("parse", "handle_events", "cell.py:3", started=0.5, seconds=2.0)
    >>> str(w)  # doctest: +ELLIPSIS
    "stage 'parse' is blocking the event loop for 2.0 s in handle_events at cell.py:3; ..."
    """

    stage: str
    hook: str
    where: str
    started: float
    seconds: float
    ongoing: bool = True
    _since: float = field(default=0.0, repr=False, compare=False)
    #: The hook is ``async def`` and computes without awaiting.
    asynchronous: bool = field(default=False, compare=False)

    @property
    def active(self) -> bool:
        """True while the hook still holds the event loop."""
        return self.ongoing

    def __str__(self) -> str:
        state = "is blocking" if self.ongoing else "blocked"
        if self.asynchronous:
            fix = (
                "the hook is async but does not await while it computes: await the slow "
                "part in a thread (await anyio.to_thread.run_sync(...)), or give the stage "
                "an executor="
            )
        else:
            fix = (
                "make the hook async and await the slow part (anyio.to_thread.run_sync), "
                "or give the stage an executor="
            )
        return (
            f"stage {self.stage!r} {state} the event loop for {self.seconds:.1f} s in "
            f"{self.hook} at {self.where}; every stage waits meanwhile: {fix}"
        )


def _ours(code: Any) -> bool:
    return code.co_filename.startswith(_PACKAGE)


def _where(frame: FrameType) -> str:
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno}"


def blocking_stage(frame: FrameType | None) -> tuple[Stage, str, str, bool] | None:
    """The stage whose hook is innermost on the stack that ``frame`` ends: the stage,
    the hook's name, where the stage's own code is (the outermost frame inside the
    hook that is not the runtime's), and whether that code is ``async def``."""
    chain: list[FrameType] = []
    while frame is not None:
        chain.append(frame)
        frame = frame.f_back
    for i, f in enumerate(chain):
        code = f.f_code
        hook_lines = pump.HOOK_LINES.get(code)
        if hook_lines is not None and i > 0:  # the fused loop, calling a stage's hook
            obj = f.f_locals.get(hook_lines.get(f.f_lineno, ""))
        elif code.co_argcount and code.co_varnames[0] == "self":
            obj = f.f_locals.get("self")
        else:
            continue
        if isinstance(obj, Stage):  # a hook defined on a Stage subclass
            if code.co_name not in HOOKS and _ours(code):
                continue  # the runtime's own method of a stage, not a hook
            inner = chain[: i + 1]
            hook = code.co_name
        elif isinstance(obj, Process) and i > 0:  # the runtime calling a hook (a plain function)
            if _ours(chain[i - 1].f_code):
                # The runtime calling more of itself (telling the pipeline of a pause,
                # which draws a dashboard, say): no stage's hook runs there.
                continue
            inner = chain[:i]
            hook = chain[i - 1].f_code.co_name
            obj = obj.stage
        else:
            continue
        user = next(
            (g for g in reversed(inner) if not g.f_code.co_filename.startswith(_PACKAGE)), inner[-1]
        )
        return obj, hook, _where(user), bool(user.f_code.co_flags & CO_COROUTINE)
    return None


def latest_per_stage(warnings: list[Any]) -> list[Any]:
    """The newest record of each kind and stage, in order of first appearance."""
    latest: dict[tuple[str, str], Any] = {}
    for record in warnings:
        latest[type(record).__name__, record.stage] = record
    return list(latest.values())


def current_warnings(warnings: list[Any]) -> list[Any]:
    """What to show now, once each (the newest record per kind and stage): slow
    handlers (in the past tense once the loop beats again) and the stalls that hold
    (a stall that cleared is left out). What ``%pipeline status`` and the dashboard
    show; ``Pipeline.warnings`` keeps the history."""
    return [
        record
        for record in latest_per_stage(warnings)
        if isinstance(record, SlowHandler) or record.active
    ]


class Watchdog:
    """The heartbeat (a task on the pipeline's loop) and its watcher (a thread)."""

    def __init__(self, pipeline: Any, threshold: float) -> None:
        self.pipeline = pipeline
        self.threshold = threshold
        self.interval = min(max(threshold / 10, 0.005), 0.1)
        self._beat = time.monotonic()
        self._t0 = self._beat
        self._loop_thread = threading.get_ident()
        self._open: SlowHandler | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching from the loop's own thread, before any stage runs (a stage
        may block before the heartbeat task first runs)."""
        self._loop_thread = threading.get_ident()
        self._t0 = self._beat = time.monotonic()
        self._thread = threading.Thread(
            target=self._watch, name=f"genstage_nb watchdog {self.pipeline.name or ''}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the thread ends within one interval)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self._tick()

    async def beat(self, ended: anyio.Event) -> None:
        """The heartbeat: note the time every ``interval`` until ``ended``."""
        while not ended.is_set():
            self._tick()
            with anyio.move_on_after(self.interval):
                await ended.wait()

    def _tick(self) -> None:
        now = time.monotonic()
        self._beat = now
        if self._open is not None:
            with self._lock:
                record, self._open = self._open, None
                record.seconds = now - record._since
                record.ongoing = False

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            beat = self._beat
            lag = time.monotonic() - beat
            if lag <= self.threshold:
                continue
            with self._lock:
                if beat != self._beat:
                    continue  # it beat meanwhile
                if self._open is not None:
                    self._open.seconds = lag
                    continue
                found = blocking_stage(sys._current_frames().get(self._loop_thread))
                if found is None:
                    continue  # blocked outside any stage (a notebook cell, say): not ours
                stage, hook, where, asynchronous = found
                record = SlowHandler(
                    str(stage.name),
                    hook,
                    where,
                    beat - self._t0,
                    lag,
                    _since=beat,
                    asynchronous=asynchronous,
                )
                self._open = record
                warnings = self.pipeline.warnings
                warnings.append(record)
                del warnings[:-MAX_WARNINGS]
            log.warning("%s", record)
