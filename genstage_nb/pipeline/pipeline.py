"""``Pipeline``: stages held as a networkx graph, linked, run and supervised.

The class is thin: it holds the options and the state its roles share, and joins the
roles, each a file of its own: ``graph.py`` (add, link, unlink), ``rerun.py`` (a
stage added again), ``runner.py`` (run,
start, stop, wait), ``supervision.py`` (what the stages' processes report) and
``views.py`` (streams, plots, the graph, the dashboard).
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import networkx as nx

from ..core.counters import Counters
from ..core.errors import Failure, PipelineError
from ..core.process import Process
from ..core.subscription import Subscription
from ..metrics import Metrics
from ..stalls import Stall
from ..watchdog import SlowHandler
from .background import Background
from .durable import Durable, checkpoint_options
from .graph import GraphBuilding
from .rerun import Rerunning
from .runner import Running
from .supervision import Supervision
from .views import Views

ON_FAILURE = ("stop", "continue", "pause")


def _check_seconds(option: str, value: Any, none_means: str) -> None:
    """A Pipeline option that is a number of seconds > 0, or None."""
    if value is not None and (
        not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0
    ):
        raise ValueError(
            f"Pipeline: {option} must be a number of seconds > 0 (or None: {none_means}), "
            f"got {value!r}"
        )


def _check_options(
    name: Any, on_failure: Any, metrics_interval: Any, slow_handler: Any, stall_after: Any
) -> None:
    """The options of ``Pipeline(...)`` (those of checkpoints: ``durable.py``)."""
    if on_failure not in ON_FAILURE:
        raise ValueError(
            f"Pipeline: on_failure must be 'stop', 'continue' or 'pause', got {on_failure!r}"
        )
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise (TypeError if not isinstance(name, str) else ValueError)(
            f"Pipeline: name must be a non-empty string or None, got {name!r}"
        )
    _check_seconds("metrics_interval", metrics_interval, "no sampling")
    _check_seconds("slow_handler", slow_handler, "no watchdog")
    _check_seconds("stall_after", stall_after, "no stall notices")


class Pipeline(GraphBuilding, Rerunning, Running, Background, Supervision, Durable, Views):
    """A graph of stages, run as one unit.

    >>> import genstage_nb as gs
    >>> p = gs.Pipeline()
    >>> src = p.add(gs.from_iterable(range(5)), name="numbers")
    >>> dbl = p.add(gs.producer_consumer(lambda events: [2 * e for e in events]), name="double")
    >>> out = []
    >>> sink = p.add(gs.consumer(out.extend), name="sink")
    >>> _ = p.link(src, dbl, max_demand=2)
    >>> _ = p.link(dbl, sink)
    >>> p.run_sync()
    >>> out, p.status
    ([0, 2, 4, 6, 8], {'numbers': 'done', 'double': 'done', 'sink': 'done'})

    Options: ``name``; ``on_failure`` (``"stop"``: a stage that fails for good stops the
    whole pipeline and ``run()`` raises ``PipelineError``; ``"continue"``: only its
    subscribers react, by their cancel mode, and ``run()`` raises at the end;
    ``"pause"``: it pauses, keeping its state, its failed batch and its input, until
    ``resume(stage)`` (the hook is called again) or ``skip(stage)`` (the batch is
    dropped); ``run()`` does not return meanwhile, ``stop()`` still stops it);
    ``metrics_interval`` (seconds between metric samples, default 0.25; ``None``
    samples only at the start and the end of a run); ``slow_handler`` (seconds a stage
    hook may hold the event loop before a ``SlowHandler`` warning names it in
    ``warnings`` and in the log, default 1.0; ``None`` turns the watchdog off);
    ``stall_after`` (seconds without any movement, while a link waits for events, before
    a ``Stall`` notice names where and why in ``warnings`` and in the log, default 5.0;
    ``None`` turns it off); ``checkpoint`` (a SQLite file: durable runs, below),
    ``checkpoint_every`` (seconds between checkpoints, default 5.0) and
    ``checkpoint_mode`` (``"resume"``, the default, or ``"fresh"``: start over).

    Durable runs: with ``checkpoint="run.db"``, every ``checkpoint_every`` seconds (and
    at the end of a run that completes) a consistent snapshot of every stage's state and
    each source's position is saved to that file. A run of the same graph (same stage
    names, kinds and links) with an existing file resumes from its last complete
    checkpoint: after a kernel restart, re-running the cells goes on where it stood. State
    inside the pipeline counts every event exactly once; a sink sees the events after the
    last checkpoint again (at least once) unless it is ``gs.to_sqlite``, whose rows are
    written in the checkpoint's own transaction (exactly once). ``checkpoints`` lists
    them; ``resumed`` says where this run started.

    After a run: ``failures`` (stage name -> list of ``Failure``), ``error`` (the
    ``PipelineError`` of the last run, or None) and ``warnings`` (``SlowHandler`` and
    ``Stall`` records, newest last). ``explain()`` and ``bottleneck()`` say what limits
    the pipeline now.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        on_failure: str = "stop",
        metrics_interval: float | None = 0.25,
        slow_handler: float | None = 1.0,
        stall_after: float | None = 5.0,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: float = 5.0,
        checkpoint_mode: str = "resume",
    ) -> None:
        _check_options(name, on_failure, metrics_interval, slow_handler, stall_after)
        self._checkpoints = checkpoint_options(self, checkpoint, checkpoint_every, checkpoint_mode)
        self._rewinding = False
        self.name = name
        self.stall_after = None if stall_after is None else float(stall_after)
        self._stall_watch: Any = None
        self._tuners: list[Any] = []  # Pipeline.autotune
        self.slow_handler = None if slow_handler is None else float(slow_handler)
        self.warnings: list[SlowHandler | Stall] = []
        self.on_failure = on_failure
        self.metrics_interval = None if metrics_interval is None else float(metrics_interval)
        self.metrics = Metrics(self)
        self._graph = nx.DiGraph()
        self._procs: dict[str, Process] = {}
        self._departed: list[Counters] = []  # the counters of stages that left this run
        self.failures: dict[str, list[Failure]] = {}
        self._pause_listeners: list[Any] = []  # called (pipeline, stage, failure) on a pause
        self._pause_waiters: list[anyio.Event] = []
        self.stopping = False
        self.depth = 0  # how deep stages are serving each other inline (see Process.post)
        # The start gate (see _hold_ask): stages still starting, and the asks held.
        self._starting: set[Process] | None = None
        self._held_asks: list[tuple[Process, Subscription, int]] = []
        self._running = False
        self._tg: Any = None
        self._fatal: dict[str, BaseException] = {}
        self._first_fatal: BaseException | None = None
        self._interrupt: BaseException | None = None
        self._alive = 0
        self._ended: anyio.Event | None = None
        self._finished: anyio.Event | None = None
        self._stop_timeout: float | None = 5.0
        self._background: Any = None
        self._call_in_loop: Any = None  # runs a function in the loop's thread (stop)
        self._loop_thread = 0
        self._reset_at_end = False
        self._last_run = ""
        self._run_clock = (0.0, None)
        self.error: PipelineError | None = None

    def __repr__(self) -> str:
        return (
            f"<Pipeline {self.name or ''} stages={len(self._procs)} "
            f"links={self._graph.number_of_edges()} running={self._running}>"
        )


_default: Pipeline | None = None


def default_pipeline() -> Pipeline:
    """The pipeline that ``%%stage`` cells add to unless told otherwise (made on first
    use; ``%pipeline reset`` replaces it). A stage of it that fails pauses
    (``on_failure="pause"``): fix its cell, re-run it, and it resumes.

    >>> import genstage_nb as gs
    >>> gs.default_pipeline() is gs.default_pipeline()
    True
    """
    global _default
    if _default is None:
        _default = Pipeline("default", on_failure="pause")
    return _default


def reset_default_pipeline() -> Pipeline:
    """Empty the default pipeline in place (``Pipeline.reset``) and return it: a
    notebook's ``p = gs.default_pipeline()`` stays valid."""
    p = default_pipeline()
    p.reset()
    return p


__all__ = ["ON_FAILURE", "Pipeline", "default_pipeline", "reset_default_pipeline"]
