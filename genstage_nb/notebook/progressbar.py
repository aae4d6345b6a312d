"""The live progress bar of a notebook (``p.progress()`` as a cell's last value,
``%pipeline progress``, and the dashboard's top row).

In the look of ``tqdm.notebook``: a bar (its length the fraction done, or a full
striped bar with no total), then the counts, the rate, the ETA and the state. While
the pipeline runs, a task on the kernel's event loop refreshes it every ``refresh``
seconds (reading counters only: nothing waits for it); it shows the run's end
(done in green, failed in red, paused or stopped in amber) and stops refreshing.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

import ipywidgets as w

from ..progress import Progress, duration, progress_of

#: Bar colours by state (ipywidgets bar styles).
STYLES = {"done": "success", "failed": "danger", "paused": "warning", "stopped": "warning"}


def describe(progress: Progress) -> str:
    """The text beside the bar (counts, rate, ETA, elapsed, state) as HTML."""
    if progress.fraction is not None:
        count = f"{progress.fraction:.0%} &nbsp; {progress.done:,}/{progress.total:,} events"
    else:
        count = f"{progress.done:,} events"
    timing = [f"{progress.rate:,.0f} {html.escape(progress.rate_label)}"]
    if progress.eta is not None and progress.state == "running":
        timing.append(f"ETA {duration(progress.eta)}")
    timing.append(f"{duration(progress.elapsed)} elapsed")
    state = html.escape(progress.state)
    return f"{count} &nbsp; [{', '.join(timing)}] &nbsp; <b>{state}</b>"


def refreshing(task: asyncio.Task | None, loop_fn: Any) -> asyncio.Task | None:
    """The task that refreshes a widget: ``task`` if it still runs, else a new one of
    ``loop_fn()`` on the running event loop (none without one: plain Python refreshes
    by calling ``update()``)."""
    if task is not None and not task.done():
        return task
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return task
    return loop.create_task(loop_fn())


class ProgressBar(w.HBox):
    """A live bar of ``pipeline``'s progress (see the module's docstring)."""

    def __init__(self, pipeline: Any, refresh: float = 0.5) -> None:
        self.pipeline = pipeline
        self.refresh = refresh
        name = pipeline.name or "pipeline"
        self.label = w.HTML(f"<b>{html.escape(name)}</b>")
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(flex="1 1 40%"))
        self.text = w.HTML(layout=w.Layout(flex="2 1 auto"))
        self._task: asyncio.Task | None = None
        self._closed = False
        super().__init__(
            [self.label, self.bar, self.text],
            layout=w.Layout(width="100%", flex_flow="row wrap", align_items="center"),
        )
        self.update()
        if pipeline.running:
            self.follow()

    def update(self) -> Progress:
        """Show the progress now; returns it."""
        progress = progress_of(self.pipeline)
        if progress.fraction is not None:
            self.bar.value = progress.fraction
            self.bar.bar_style = STYLES.get(progress.state, "")
        else:  # no total: a full bar, striped while it runs
            self.bar.value = 1.0
            self.bar.bar_style = STYLES.get(progress.state, "info")
        self.text.value = describe(progress)
        return progress

    def follow(self) -> None:
        """Refresh while the pipeline runs (a task on the running loop)."""
        self._task = refreshing(self._task, self._refresh_loop)

    async def _refresh_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.refresh)
            if self._closed:
                return
            self.update()
            if not self.pipeline.running:
                return

    def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().close()


__all__ = ["ProgressBar", "describe", "refreshing"]
