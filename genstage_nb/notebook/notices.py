"""Where a notebook user learns that a stage paused: in the cell that runs, once.

A pipeline runs in the background of the kernel, so a stage fails while some other cell
runs, or while none does. Output printed from a background task lands under whichever
cell ran last (a notebook runner shows it nowhere), so the notice of a pause is shown:

- at once, in the output of the cell that is running when the stage pauses (printed in
  that cell's context: a kernel sends output to the cell the context names, and the
  stage's task carries the context of the cell that started the pipeline);
- otherwise in the output of the next cell the user runs (IPython's ``pre_run_cell``
  event), before that cell's own output, if the stage is still paused then;

once per pause. In a kernel the log record of a paused failure is left to the notice
(the same traceback, in the right cell). ``%pipeline status`` and the dashboard show paused stages
too, for as long as they are paused.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from ..core.errors import Failure
from ..core.lifecycle import user_traceback
from ..pipeline import default_pipeline
from ..pipeline.supervision import PAUSE_LISTENERS


def describe(pipeline: Any, name: str, failure: Failure, traceback: bool = True) -> str:
    """The notice of a paused stage: what failed, what is kept, what to do."""
    exc = failure.exception
    n = len(failure.events)
    kept = f"its batch of {n} event{'s' * (n != 1)} is kept" if n else "nothing is lost"
    hook = failure.hook or "its hook"
    if pipeline is default_pipeline():
        todo = (
            f"Fix it and run its %%stage cell again (or %pipeline resume {name}) to call "
            f"{hook} again; %pipeline skip {name} drops the batch."
        )
    else:
        todo = (
            f"Fix it (run its %%stage cell again, if it has one, or call .resume({name!r}) "
            f"on its pipeline) to call {hook} again; .skip({name!r}) drops the batch."
        )
    lines = [
        f"genstage_nb: stage {name!r} paused after a failure in {hook}: "
        f"{type(exc).__name__}: {exc} ({kept}; the stages before it wait).",
        todo,
    ]
    again = what_resume_repeats(pipeline, name, failure)
    if again:
        lines.append(again)
    if traceback:
        lines.append(user_traceback(exc))
    return "\n".join(lines)


def what_resume_repeats(pipeline: Any, name: str, failure: Failure) -> str:
    """What a resume runs again, said where it matters: a batch hook gets its whole batch
    again (a per-event hook goes on from the event that failed, and a batch of one
    repeats nothing that went before it)."""
    n = len(failure.events)
    stage = pipeline.stages.get(name)
    per_event = failure.hook == "handle_event" or getattr(stage, "_gs_map", None) is not None
    if per_event or n <= 1:
        return ""
    return (
        f"Resume calls {failure.hook} again with the whole batch of {n} events: what it did "
        f"before it raised (a count, a write) is done again for those events. If that "
        f"matters, undo it in the hook before raising, make it idempotent, or skip the batch."
    )


class PauseNotices:
    """Shows each pause once, in the output of the cell that runs (see the module doc)."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.cell_running = False
        self.cell_context: contextvars.Context | None = None
        self.pending: list[tuple[Any, str, Failure]] = []  # shown by the next cell
        self.shown = 0
        self._shown: dict[int, Failure] = {}  # the pauses shown (a pause shows once)

    def register(self) -> None:
        events = self.shell.events
        events.register("pre_run_cell", self.pre_run_cell)
        events.register("post_run_cell", self.post_run_cell)
        # One notice listener per kernel, whatever registered before (a reloaded module).
        PAUSE_LISTENERS[:] = [
            listener
            for listener in PAUSE_LISTENERS
            if getattr(listener, "__qualname__", "") != "PauseNotices.on_pause"
        ]
        PAUSE_LISTENERS.append(self.on_pause)
        if _in_a_kernel(self.shell):
            # A kernel shows a background log record under an old cell: the notice
            # carries the same traceback to the right one.
            logging.getLogger("genstage_nb").addFilter(_leave_pauses_to_notices)

    def unregister(self) -> None:
        events = self.shell.events
        events.unregister("pre_run_cell", self.pre_run_cell)
        events.unregister("post_run_cell", self.post_run_cell)
        if self.on_pause in PAUSE_LISTENERS:
            PAUSE_LISTENERS.remove(self.on_pause)
        logging.getLogger("genstage_nb").removeFilter(_leave_pauses_to_notices)

    def on_pause(self, pipeline: Any, name: str, failure: Failure) -> None:
        if self.cell_running and self.cell_context is not None:
            # Printed in the running cell's context: the kernel sends output to the
            # cell its context names (the stage's task has the one that started it).
            self.cell_context.run(self._show_once, pipeline, name, failure)
        elif all(f is not failure for _, _, f in self.pending):
            self.pending.append((pipeline, name, failure))

    def pre_run_cell(self, info: Any = None) -> None:
        self.cell_running = True
        self.cell_context = contextvars.copy_context()
        pending, self.pending = self.pending, []
        for pipeline, name, failure in pending:
            if pipeline.paused.get(name) is failure:  # (not if resumed or stopped since)
                self._show_once(pipeline, name, failure)

    def post_run_cell(self, result: Any = None) -> None:
        self.cell_running = False
        self.cell_context = None

    def _show_once(self, pipeline: Any, name: str, failure: Failure) -> None:
        if id(failure) in self._shown and self._shown[id(failure)] is failure:
            return  # (told twice of one pause: a listener registered again, say)
        if len(self._shown) > 1000:
            self._shown.clear()
        self._shown[id(failure)] = failure
        self._show(describe(pipeline, name, failure))

    def _show(self, text: str) -> None:
        self.shown += 1
        print(text, file=sys.stderr, flush=True)


def _in_a_kernel(shell: Any) -> bool:
    """A Jupyter kernel's shell (a terminal's IPython prints where it runs)."""
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def _leave_pauses_to_notices(record: logging.LogRecord) -> bool:
    return not getattr(record, "genstage_nb_paused", False)


_notices: PauseNotices | None = None


def install(shell: Any) -> PauseNotices:
    """Show pauses in ``shell``'s cells (once per kernel; ``%load_ext`` calls this)."""
    global _notices
    if _notices is not None and _notices.shell is not shell:
        _notices.unregister()
        _notices = None
    if _notices is None:
        _notices = PauseNotices(shell)
        _notices.register()
    return _notices


__all__ = ["PauseNotices", "describe", "install"]
