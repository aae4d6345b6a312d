"""Running a Flow: the pipeline it builds, and ``run``, ``run_async``, ``start`` /
``stop``, ``stream``, ``to_frame``, ``show`` (the ``Running`` role of ``Flow``)."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flow import Flow

from .frames import frame_of


class Running:
    """What a Flow does with its recipe: build it into a pipeline and run it."""

    _source: tuple
    _ops: tuple
    _settings: dict
    _pipeline: Any
    _ran: bool
    _collect: Any
    _windowed: list
    results: list

    # -- what it builds ----------------------------------------------------------------

    @property
    def pipeline(self) -> Any:
        """The ``Pipeline`` of this flow (built once; a new one after a finished run)."""
        if self._pipeline is None:
            self._build()
        return self._pipeline

    def _build(self, on_failure: str | None = None) -> Any:
        from ..pipeline import Pipeline
        from .build import Builder

        settings = dict(self._settings)
        if on_failure is not None:
            settings.setdefault("on_failure", on_failure)
        settings.setdefault("name", "flow")
        pipeline = Pipeline(**settings)
        self.results = []
        builder = Builder(pipeline)
        last = builder.flow(self)  # type: ignore[arg-type]  # (self is a Flow)
        self._collect = builder.collect(last, self.results)
        self._windowed = builder.windowed
        self._pipeline = pipeline
        self._ran = False
        return pipeline

    def _fresh(self, on_failure: str) -> Any:
        if self._pipeline is None or self._ran:
            self._build(on_failure)
        elif "on_failure" not in self._settings:
            self._pipeline.on_failure = on_failure
        self._ran = True
        return self._pipeline

    @property
    def late(self) -> list:
        """The late events of the last run: they came for a window already closed
        (kept, never dropped silently; their count is the ``late`` metric)."""
        states = [getattr(stage, "_state", None) for stage in self._windowed]
        return [event for state in states if state is not None for event in state.late]

    # -- running -----------------------------------------------------------------------

    def run(self, backend: str = "asyncio") -> list:
        """Run to the end (from a script) and return what the last step emitted.

        A step that fails raises ``gs.PipelineError`` (the failure in
        ``flow.pipeline.failures``). In a notebook use ``await flow.run_async()`` or
        ``flow.start()``.
        """
        from ..pipeline.runner import running_loop

        running = running_loop()
        if running is not None:
            raise RuntimeError(
                f"Flow.run() cannot run inside a running {running} event loop (a notebook "
                "cell or async code): use 'await flow.run_async()', or flow.start() to run "
                "in the background"
            )
        self._fresh("stop").run_sync(backend=backend)
        return self.results

    async def run_async(self) -> list:
        """Run to the end in async code (a notebook cell: ``await flow.run_async()``)."""
        await self._fresh("stop").run()
        return self.results

    def start(self) -> Flow:
        """Run in the background of a notebook's event loop and return at once. A step
        that fails pauses there (``flow.pipeline.resume(name)`` after a fix). The
        results grow in ``flow.results``; ``flow.show()`` shows them live. In a notebook
        whose default pipeline is empty, ``%pipeline status`` (and the other commands)
        act on the flow started last."""
        self._fresh("pause").start()
        global _started
        _started = weakref.ref(self)
        return self  # type: ignore[return-value]  # (self is a Flow)

    def stop(self, timeout: float | None = 5.0) -> Any:
        """Stop a started flow gracefully (producers stop, what is in flight drains,
        the reduces emit what they hold); awaitable."""
        return self.pipeline.stop(timeout)

    async def wait(self) -> list:
        """Wait for a started flow to end; its results."""
        await self.pipeline.wait()
        return self.results

    async def stream(self) -> AsyncIterator[Any]:
        """The events the last step emits, as they come (an async iterator that runs the
        flow; breaking out of it stops the flow).

        >>> import anyio
        >>> from genstage_nb import Flow
        >>> async def main():
        ...     return [x async for x in Flow.from_iterable(range(3)).map(str).stream()]
        >>> anyio.run(main)
        ['0', '1', '2']
        """
        import anyio

        pipeline = self._fresh("stop")
        collect = self._collect
        assert collect is not None
        send, receive = anyio.create_memory_object_stream[list](1)
        collect.results = None  # (a stream does not keep them)
        collect.sink = send.send

        async def run() -> None:
            async with send:
                await pipeline.run()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                async with receive:
                    async for batch in receive:
                        for event in batch:
                            yield event
        except BaseExceptionGroup as group:  # (the task group's): the failure itself
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    def to_frame(self) -> Any:
        """The results as a pandas DataFrame (running the flow first if it has not
        run): ``WindowResult`` records as columns ``window_start``, ``window_end``,
        ``key``, ``value``, ``final``; ``(key, value)`` pairs of a reduce as ``key``,
        ``value``; dicts as their fields; a join's pairs as ``left``, ``right``;
        anything else as ``value``.

        >>> from genstage_nb import Flow
        >>> Flow.from_iterable("aab").partition(key=str).count().to_frame()
          key  value
        0   a      2
        1   b      1
        """
        if self._pipeline is None or not self._ran:
            self.run()
        return frame_of(self.results, self._shape())

    def _shape(self) -> str:
        if self._ops:
            last = self._ops[-1]
            if last.kind == "reduce" and last.args.get("on_trigger") is None:
                return "records" if _window_of(self._ops) is not None else "pairs"
            return "events"
        return "join" if self._source[0] == "join" else "events"

    def show(self, rows: int = 20, refresh: float = 0.5) -> None:
        """A live table of the latest ``rows`` results in a notebook, refreshed every
        ``refresh`` seconds while the flow runs (``start()``), and once more at the end;
        it never blocks the kernel."""
        from .show import show

        show(self, rows, refresh)

    # -- the pipeline's views, on the flow ---------------------------------------------

    def explain(self) -> Any:
        """``flow.pipeline.explain()``: where the flow's time goes, and why."""
        return self.pipeline.explain()

    def dashboard(self, refresh: float = 1.0) -> Any:
        """``flow.pipeline.dashboard()``: the live dashboard of the flow's stages."""
        return self.pipeline.dashboard(refresh)


_started: weakref.ref | None = None  # the flow started last (``start()``)


def started_flow() -> Any:
    """The flow started last with ``start()``, if it is still alive (else None)."""
    return _started() if _started is not None else None


def _window_of(ops: tuple) -> Any:
    for op in reversed(ops):
        if op.kind == "partition":
            return op.args["window"]
    return None


__all__ = ["Running", "started_flow"]
