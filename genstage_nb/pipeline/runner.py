"""Running a pipeline: ``run``, ``run_sync``, ``stop``, ``wait`` (``start``: background.py).

``run()`` starts one task per stage in an anyio task group (with the metrics sampler
and the watchdog beside them) and returns when every stage has stopped; ``start()``
does the same in the background of a running asyncio loop (a notebook kernel). A new
run starts from fresh runtime state; the stages keep theirs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import anyio
import sniffio

from ..core.errors import PipelineError
from ..core.process import Process
from ..stalls import StallWatch, clear
from ..watchdog import Watchdog
from .parts import Part

if TYPE_CHECKING:
    from .pipeline import Pipeline


def running_loop() -> str | None:
    """The async library whose event loop runs this code (``"asyncio"``, ``"trio"``),
    or None in plain synchronous code: where ``run_sync()`` cannot be used."""
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


class Running(Part):
    """The runner role of ``Pipeline``: run, start, stop, wait, status."""

    @property
    def _label(self) -> str:
        return "pipeline" if self.name is None else f"pipeline {self.name}"

    @property
    def running(self) -> bool:
        """True from ``run()``/``start()`` until every stage has stopped."""
        return self._running

    @property
    def status(self) -> dict[str, str]:
        """Stage name -> ``"idle"``, ``"running"``, ``"done"``, ``"failed"``,
        ``"restarting"`` or ``"paused"`` (``on_failure="pause"``)."""
        return {name: proc.status for name, proc in self._procs.items()}

    async def run(self) -> None:
        """Run every stage until all have stopped; raise ``PipelineError`` if any stage
        failed for good.

        >>> import anyio, genstage_nb as gs
        >>> p = gs.Pipeline(); out = []
        >>> _ = p.link(p.add(gs.from_iterable("ab")), p.add(gs.consumer(out.extend)))
        >>> async def main():
        ...     await p.run()
        >>> anyio.run(main); out
        ['a', 'b']
        """
        if self._running:
            # Also while start() runs it in the background: a second set of stages
            # would take the same events again.
            raise RuntimeError(f"{self._label}: already running")
        self._check_consumers()
        await self._run()

    def _check_consumers(self) -> None:
        """run() refuses producers without a consumer (nothing would ever ask them for
        events, and for a producer-consumer nothing would drain its producers) and
        consumers without a producer (no event would ever come, and they never end)."""
        graph = self._graph
        for missing, degree, kinds in (
            ("consumer", graph.out_degree, ("producer", "producer_consumer")),
            ("producer", graph.in_degree, ("producer_consumer", "consumer")),
        ):
            alone = [
                f"{name!r} ({data['kind'].replace('_', '-')})"
                for name, data in graph.nodes(data=True)
                if data["kind"] in kinds and degree(name) == 0
            ]
            if alone:
                which = "has" if len(alone) == 1 else "have"
                raise ValueError(
                    f"{self._label}: {', '.join(alone)} {which} no {missing}, so run() would "
                    f"never end; link a {missing} to each (p.link) or remove it. p.start() "
                    f"runs such a pipeline in the background, where you may link later"
                )

    async def _run(self) -> None:
        self._begin()
        self._durable_begin()  # resume from the last complete checkpoint, or start over
        self.metrics.reset()
        self.metrics.sample()
        watchdog = None if self.slow_handler is None else Watchdog(self, self.slow_handler)
        if watchdog is not None:
            watchdog.start()
        try:
            await self._run_stages(watchdog)
            while self._durable_rewound():  # resume(rewind=True): again from a checkpoint
                await self._run_stages(watchdog)
            await self._durable_end()  # all done: the last checkpoint
        except BaseExceptionGroup as group:
            # An interrupt that reached the task group itself: raise it plainly.
            interrupt: BaseException | None = group.subgroup((KeyboardInterrupt, SystemExit))
            if interrupt is None:
                # Not a stage's failure (those are recorded by the stage): a task of the
                # run itself failed. Still a PipelineError, never a bare group.
                _task_failed(self, group)
                interrupt = None
            while isinstance(interrupt, BaseExceptionGroup):
                interrupt = interrupt.exceptions[0]
            if interrupt is not None:
                raise interrupt from None
        finally:
            self._starting = None
            self._held_asks = []
            if watchdog is not None:
                watchdog.stop()
            self.metrics.sample()
            self._end()
        if self._interrupt is not None:
            raise self._interrupt
        if self._fatal:
            self.error = PipelineError(self._fatal)
            raise self.error from self._first_fatal

    async def _run_stages(self, watchdog: Watchdog | None) -> None:
        """Run every stage, and the run's own tasks, until all have ended."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._starting = set(self._procs.values()) or None
            self._held_asks = []
            for name, proc in list(self._procs.items()):
                tg.start_soon(proc.main, name=f"genstage_nb stage {name}")
            if self.stopping:
                tg.start_soon(self._stop_within, self._stop_timeout)
            ended = self._ended
            assert ended is not None  # (set for the run above)
            if self.metrics_interval is not None:
                tg.start_soon(self.metrics.run, self.metrics_interval, ended)
            if watchdog is not None:
                tg.start_soon(watchdog.beat, ended)
            if self.stall_after is not None:
                self._stall_watch = StallWatch(self, self.stall_after)
                tg.start_soon(self._stall_watch.run, self._ended)
            for tuner in self._tuners:
                if not tuner._stopped:
                    tg.start_soon(tuner.run, self._ended)
            self._durable_start(tg, ended)

    def _begin(self) -> None:
        # A tuner serves one run: those of the runs before are forgotten (their marks
        # belong to those runs' plots).
        self._tuners = [tuner for tuner in self._tuners if not tuner._stopped]
        if any(p.running or p.stopped for p in self._procs.values()):
            self._fresh_processes()
        self._loop_thread = threading.get_ident()
        self._call_in_loop = _loop_caller()
        self._departed = []
        self._running = True
        self._fatal = {}
        self._first_fatal = None
        self._interrupt = None
        self.error = None
        self._alive = len(self._procs)
        self._run_clock = (time.perf_counter(), None)
        self._ended = anyio.Event()
        self._finished = anyio.Event()
        if not self._alive:
            self._ended.set()

    def _end(self) -> None:
        self._tg = None
        self._call_in_loop = None
        clear(self)  # a stall notice does not hold past the run
        self._running = False
        self._last_run = "stopped" if self.stopping else "done"
        self._run_clock = (self._run_clock[0], time.perf_counter())
        self.stopping = False
        self._background = None
        for name, data in list(self._graph.nodes(data=True)):
            if getattr(data["stage"], "_gs_one_run", False):
                self._remove(name)  # a stream serves one run
        if self._reset_at_end:
            self.reset()
        finished = self._finished
        if finished is not None:
            finished.set()
        self._wake_pause_waiters()

    def reset(self) -> None:
        """Empty the pipeline in place: every stage and link removed, the records of its
        runs forgotten (``failures``, ``warnings``, ``error``, metrics, tuners); its
        options stay, and so does the object (a notebook's ``p`` stays valid).
        ``%pipeline reset`` does this. A running pipeline is stopped at once (stop with
        timeout 0) and emptied as soon as its stages have stopped; adding a stage
        meanwhile is refused.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> _ = p.link(p.add(gs.from_iterable([1])), p.add(gs.consumer(print)))
        >>> p.reset()
        >>> p.stages, p.subscriptions
        ({}, [])
        """
        if self._running:
            self._reset_at_end = True
            self.stop(timeout=0)
            return
        self._reset_at_end = False
        for tuner in self._tuners:
            tuner.stop()
        self._tuners = []
        for name in list(self._graph):
            self._remove(name)
        self.failures = {}
        self.warnings = []
        self.error = None
        self._departed = []
        self.metrics.reset()
        self._last_run, self._run_clock = "", (0.0, None)

    def _fresh_processes(self) -> None:
        """A new run starts from new runtime state (stage objects keep theirs)."""
        for name, data in self._graph.nodes(data=True):
            proc = self._procs[name] = Process(data["stage"], self._whole)
            data["stage"]._process = proc
        for sub in self.subscriptions:
            sub._demand.pending = 0
            sub._demand.manual = False
            self._wire(sub)

    def run_sync(self, backend: str = "asyncio") -> None:
        """Run to completion from synchronous code (``anyio.run`` under the hood).

        For scripts and tests; ``backend`` is ``"asyncio"`` or ``"trio"``. Inside a
        running event loop (a notebook cell, async code) use ``await p.run()``, or
        ``p.start()`` to run in the background.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline(); out = []
        >>> _ = p.link(p.add(gs.from_iterable(range(3))), p.add(gs.consumer(out.extend)))
        >>> p.run_sync(backend="trio"); out
        [0, 1, 2]
        """
        running = running_loop()
        if running is not None:
            raise RuntimeError(
                f"{self._label}: run_sync() cannot run inside a running {running} event "
                "loop (a notebook cell or async code): use 'await p.run()', or p.start() "
                "to run in the background"
            )
        anyio.run(self.run, backend=backend)

    def stop(self, timeout: float | None = 5.0) -> _Stopping:
        """Stop gracefully: producers stop making events, what they made is delivered
        as far as demand allows within ``timeout`` seconds, then every stage is
        cancelled. Returns at once; ``await p.stop()`` waits until it has stopped.
        Stopping twice is harmless. Safe from any thread (a widget's callback, a signal
        handler, a thread of your own): from outside the event loop's thread the stop is
        handed to the loop and happens there (awaiting it is for the loop's own code).

        >>> import itertools, anyio, genstage_nb as gs
        >>> p = gs.Pipeline(); seen = []
        >>> _ = p.link(p.add(gs.from_iterable(itertools.count())), p.add(gs.consumer(seen.extend)))
        >>> async def main():
        ...     p.start()
        ...     await anyio.sleep(0.01)
        ...     await p.stop()
        >>> anyio.run(main)
        >>> p.status, seen == list(range(len(seen)))
        ({'from_iterable': 'done', 'extend': 'done'}, True)
        """
        if timeout is not None and (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not timeout >= 0  # (nan too)
        ):
            raise ValueError(f"stop: timeout must be a number of seconds >= 0, got {timeout!r}")
        caller = self._call_in_loop
        if caller is not None and threading.get_ident() != self._loop_thread:
            # Another thread: the stop happens in the loop's thread, where the task
            # group lives (nothing is changed here, so nothing is left half-stopped).
            with contextlib.suppress(RuntimeError):  # (the loop has closed: run over)
                caller(self._stop_now, timeout)
            return _Stopping(self._whole)
        self._stop_now(timeout)
        return _Stopping(self._whole)

    def _stop_now(self, timeout: float | None) -> None:
        if self._running and not self.stopping:
            self.stopping = True
            self._stop_timeout = timeout
            for proc in self._procs.values():
                proc.request_stop()
            if self._tg is not None:
                self._tg.start_soon(self._stop_within, timeout)

    async def _stop_within(self, timeout: float | None) -> None:
        with anyio.move_on_after(timeout):
            if self._ended is not None:
                await self._ended.wait()
        if self._tg is not None and self._alive:
            self._tg.cancel_scope.cancel()

    async def wait(self) -> None:
        """Wait until the pipeline has stopped; raise ``PipelineError`` if it failed.

        >>> import anyio, genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable([0]))
        >>> _ = p.link(src, p.add(gs.consumer(lambda e: 1 / e[0], name="inv")))
        >>> async def cell():
        ...     p.start()
        ...     try:
        ...         await p.wait()
        ...     except gs.PipelineError as error:
        ...         print(error)
        >>> anyio.run(cell)
        stage 'inv' failed: ZeroDivisionError: division by zero
        """
        if self._background is not None:
            await self._background
        elif self._running and self._finished is not None:
            await self._finished.wait()
        if self.error is not None:
            raise self.error


def _task_failed(p: Running, group: BaseExceptionGroup) -> None:
    """A task of the run itself failed: the pipeline's fatal error (an interrupt among
    its leaves is raised as the group)."""
    for exc in _leaves(group):
        if isinstance(exc, Exception):
            p._fatal.setdefault(f"<{p._label} runtime>", exc)
            if p._first_fatal is None:
                p._first_fatal = exc
        else:
            raise group


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for exc in error.exceptions for leaf in _leaves(exc)]
    return [error]


def _loop_caller() -> Any:
    """A function that runs ``fn(*args)`` soon in the running event loop's thread,
    callable from any thread (asyncio's call_soon_threadsafe, trio's token)."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    return _asyncio_caller(asyncio.get_running_loop())


def _asyncio_caller(loop: Any) -> Any:
    """asyncio: run ``fn(*args)`` in a task of ``loop`` (anyio's calls need one)."""

    async def call(fn: Any, args: tuple) -> None:
        fn(*args)

    def soon(fn: Any, *args: Any) -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(call(fn, args)))

    return soon


class _Stopping:
    """What ``Pipeline.stop()`` returns: awaiting it waits until the pipeline stopped."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        p = self._pipeline
        if p._background is not None:
            with contextlib.suppress(PipelineError):
                await p._background
        elif p._running and p._finished is not None:
            await p._finished.wait()


__all__ = ["Running"]
