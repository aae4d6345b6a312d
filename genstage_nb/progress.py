"""``Pipeline.progress()``: how far a run has come, at a glance.

``done`` counts the events the sinks (the stages nothing is linked from) have handled;
``total`` is known when every producer knows its own (``from_iterable`` over something
with ``len()``, or the ``total=`` option of a producer). The rate is the one events/s
shown everywhere (``metrics.recent``); the ETA divides what is left by it. In a
notebook a ``Progress`` shows as a live bar (``notebook/progressbar.py``), in a terminal
as a line of text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .metrics import rate_label, recent

#: The states of a run, as ``Progress.state`` says them.
STATES = ("running", "paused", "done", "failed", "stopped")


@dataclass(frozen=True)
class Progress:
    """How far a pipeline's run has come (``Pipeline.progress()``).

    - ``done``: events the sinks have handled; ``total``: the sum of the producers'
      totals, when every producer knows its own (else None);
    - ``fraction``: ``done / total``, at most 1 (None without a total; where stages
      drop or multiply events it is the sinks' share of what the producers have in all);
    - ``rate``: events/s the sinks handled over the rate window (``rate_label`` says
      how long); ``eta``: seconds left at that rate (0 once done, None when unknown);
    - ``state``: ``"running"``, ``"paused"``, ``"done"``, ``"failed"`` or
      ``"stopped"``; ``elapsed``: seconds since the run started.

    ``str()`` is a text bar; in a notebook, the last value of a cell shows as a live bar.

    >>> import genstage_nb as gs
    >>> p = gs.Pipeline()
    >>> _ = p.link(p.add(gs.from_iterable(range(500))), p.add(gs.consumer(len)))
    >>> p.run_sync()
    >>> progress = p.progress()
    >>> progress.done, progress.total, progress.fraction, progress.state
    (500, 500, 1.0, 'done')
    >>> str(progress).split("]")[0]
    '[##############################'
    """

    done: int
    total: int | None
    fraction: float | None
    rate: float
    eta: float | None
    state: str
    elapsed: float
    rate_label: str = "events/s"
    pipeline: Any = field(default=None, repr=False, compare=False)

    def text(self, width: int = 30) -> str:
        """One line: a bar (with a total), the counts, the rate, the ETA, the state."""
        parts = []
        if self.fraction is not None:
            filled = int(width * self.fraction)
            parts.append(f"[{'#' * filled}{'-' * (width - filled)}] {self.fraction:4.0%}")
            parts.append(f"{self.done:,}/{self.total:,} events")
        else:
            parts.append(f"{self.done:,} events")
        parts.append(f"{self.rate:,.0f} {self.rate_label}")
        if self.eta is not None and self.state == "running":
            parts.append(f"ETA {duration(self.eta)}")
        parts.append(f"{duration(self.elapsed)} elapsed")
        parts.append(self.state)
        return "  ".join(parts)

    def __str__(self) -> str:
        return self.text()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.pipeline is None:
            print(self.text())
            return
        from .notebook.progressbar import ProgressBar

        display(ProgressBar(self.pipeline))


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def state_of(pipeline: Any) -> str:
    """The state of ``pipeline``'s run, one of ``STATES`` (a pipeline that has not run
    yet: ``"stopped"``)."""
    if pipeline.running:
        return "paused" if pipeline.paused else "running"
    if pipeline.error is not None or any(status == "failed" for status in pipeline.status.values()):
        return "failed"
    return pipeline._last_run or "stopped"


def progress_of(pipeline: Any) -> Progress:
    """The ``Progress`` of ``pipeline`` now."""
    graph = pipeline.graph
    stats = pipeline.statistics()
    sinks = [n for n in graph if graph.out_degree(n) == 0 and stats[n].kind != "producer"]
    done = sum(stats[name].counts["handled"] for name in sinks)
    totals: list[int | None] = [
        getattr(data["stage"], "_total", None)
        for _, data in graph.nodes(data=True)
        if data["kind"] == "producer"
    ]
    total = sum(t for t in totals if t is not None) if totals and None not in totals else None
    state = state_of(pipeline)
    started, ended = pipeline._run_clock
    now = time.perf_counter()
    elapsed = ((ended or now) - started) if started else 0.0
    rate = _rate(pipeline, sinks, done, elapsed)
    fraction = eta = None
    if total is not None:
        fraction = min(1.0, done / total) if total else 1.0
        if state == "done":
            fraction, eta = 1.0, 0.0
        elif rate > 0:
            eta = max(total - done, 0) / rate
    return Progress(
        done, total, fraction, rate, eta, state, elapsed, rate_label(pipeline), pipeline
    )


def _rate(pipeline: Any, sinks: list[str], done: int, elapsed: float) -> float:
    """Events/s the sinks took over the rate window (``metrics.recent``: what the status
    table and the explanation show), or over the whole run before two samples exist."""
    stages = recent(pipeline)
    if stages is not None:
        return sum(stages[name]["throughput"] for name in sinks if name in stages)
    return done / elapsed if elapsed > 0 else 0.0


__all__ = ["STATES", "Progress", "duration", "progress_of", "state_of"]
