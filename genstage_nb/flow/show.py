"""``Flow.show()``: a live table of a flow's latest results in a notebook.

The table is a display handle updated from a task on the kernel's event loop: each
turn renders at most ``rows`` rows (a small DataFrame) and sleeps, so the kernel is
never held; once the flow ends the table is drawn one last time with its state."""

from __future__ import annotations

from typing import Any


def _table(flow: Any, rows: int) -> Any:
    from .frames import frame_of

    results = flow.results
    frame = frame_of(results[-rows:], flow._shape())
    if len(results) > rows:
        frame.index = range(len(results) - len(frame), len(results))
    return frame


def _caption(flow: Any) -> str:
    pipeline = flow._pipeline
    state = "not started"
    if pipeline is not None:
        states = set(pipeline.status.values())
        if pipeline.running:
            state = "paused" if "paused" in states else "running"
        elif flow._ran:
            state = "failed" if "failed" in states else "done"
    late = len(flow.late)
    extra = f", {late} late" if late else ""
    return f"{len(flow.results)} results ({state}{extra})"


def show(flow: Any, rows: int, refresh: float) -> None:
    """Display the table; while the flow runs in the background, refresh it."""
    import asyncio

    from IPython.display import Markdown, display

    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"Flow.show: rows must be an int >= 1, got {rows!r}")
    if not isinstance(refresh, (int, float)) or refresh <= 0:
        raise ValueError(f"Flow.show: refresh must be a number of seconds > 0, got {refresh!r}")
    caption = display(Markdown(_caption(flow)), display_id=True)
    table = display(_table(flow, rows), display_id=True)
    pipeline = flow._pipeline
    if pipeline is None or not pipeline.running:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    async def refreshing() -> None:
        shown = -1
        while True:
            running = pipeline.running
            if len(flow.results) != shown or not running:
                shown = len(flow.results)
                caption.update(Markdown(_caption(flow)))
                table.update(_table(flow, rows))
            if not running:
                return
            await asyncio.sleep(refresh)

    flow._show_task = loop.create_task(refreshing())
