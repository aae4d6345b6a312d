"""What the parts of ``Pipeline`` share: its state, declared once, and the few
methods one part calls of another.

``Pipeline`` (``pipeline.py``) joins its parts: building the graph (``graph.py``),
running it (``runner.py``), running it in the background of a kernel
(``background.py``), taking a stage added again (``rerun.py``), supervising its
stages (``supervision.py``, the ``Supervisor`` protocol of ``core``) and the views a
user reads (``views.py``). ``Pipeline.__init__`` sets the state below; a part uses of
another only what is declared here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio
    import networkx as nx

    from ..core.counters import Counters
    from ..core.errors import Failure, PipelineError
    from ..core.process import Process
    from ..core.stage import Stage
    from ..core.subscription import Subscription
    from ..metrics import Metrics
    from ..stalls import Stall
    from ..watchdog import SlowHandler
    from .pipeline import Pipeline


class Part:
    """The base of every part of ``Pipeline``: its state, and the shared methods."""

    # Options and results (what a user reads and sets).
    name: str | None
    on_failure: str
    metrics_interval: float | None
    slow_handler: float | None
    stall_after: float | None
    metrics: Metrics
    warnings: list[SlowHandler | Stall]
    failures: dict[str, list[Failure]]
    error: PipelineError | None
    # The graph, and the processes of the run (graph.py, runner.py).
    _graph: nx.DiGraph
    _procs: dict[str, Process]
    _departed: list[Counters]  # the counters of stages that left this run
    _tuners: list[Any]  # Pipeline.autotune
    _stall_watch: Any
    _checkpoints: Any  # checkpoints.Checkpoints, with checkpoint= (durable runs)
    _rewinding: bool  # resume(stage, rewind=True): the run goes again from a checkpoint
    # Supervision (supervision.py): failures, pauses, the start gate.
    stopping: bool
    depth: int  # how deep stages serve each other inline (Mailbox.post)
    _pause_listeners: list[Any]
    _pause_waiters: list[anyio.Event]
    _starting: set[Process] | None
    _held_asks: list[tuple[Process, Subscription, int]]
    _fatal: dict[str, BaseException]
    _first_fatal: BaseException | None
    _interrupt: BaseException | None
    # A run (runner.py, background.py).
    _running: bool
    _tg: Any
    _alive: int
    _ended: anyio.Event | None
    _finished: anyio.Event | None
    _stop_timeout: float | None
    _background: Any
    _call_in_loop: Any  # runs a function in the loop's thread (stop)
    _loop_thread: int
    _reset_at_end: bool  # Pipeline.reset of a running pipeline: empty it once stopped
    _last_run: str  # how the last run ended: "done", "stopped" ("" before any)
    _run_clock: tuple[float, float | None]  # perf_counter at its start and its end

    @property
    def _whole(self) -> Pipeline:
        """The ``Pipeline`` this part is part of: the object itself (the parts are
        joined into one), typed as the whole for the calls that hand it on."""
        return self  # type: ignore[return-value]  # (every part object is a Pipeline)

    if TYPE_CHECKING:

        @property
        def _label(self) -> str: ...
        @property
        def running(self) -> bool: ...
        @property
        def status(self) -> dict[str, str]: ...
        @property
        def subscriptions(self) -> list[Subscription]: ...
        def _stage(self, where: str, stage: Stage | str) -> Stage: ...
        def _wire(self, sub: Subscription) -> None: ...
        def _remove(self, name: str) -> None: ...
        def _add_again(self, name: str, new: Stage) -> Stage: ...
        async def _run(self) -> None: ...
        def _fresh_processes(self) -> None: ...
        def _wake_pause_waiters(self) -> None: ...
        def _end(self) -> None: ...
        def _durable_begin(self) -> None: ...
        def _rewind(self, proc: Process) -> None: ...
        def _durable_rewound(self) -> bool: ...
        def _durable_start(self, tg: Any, ended: Any) -> None: ...
        async def _durable_end(self) -> None: ...


__all__ = ["Part"]
