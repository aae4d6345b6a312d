"""``Pipeline.stream``: iterate over the events a stage emits (GenStage.stream).

A stream is a consumer stage with manual demand, driven by iteration. It never leaves
its producer waiting: closing it (``aclose()``, the end of an ``async with`` block),
breaking out of an ``async for`` over it, or dropping it unsubscribes at once (beyond
GenStage, whose stream is tied to the process that runs it). A stream serves one run.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import sniffio

from .core.demand import check_demand_options
from .core.stage import Consumer


class _StreamSink(Consumer):
    """The consumer behind an ``EventStream``: manual demand, driven by iteration.

    It holds its stream weakly, so a stream the user drops is freed (and closed)."""

    _default_name = "stream"
    _gs_one_run = True  # taken out of the pipeline when the run ends

    def __init__(self, stream: EventStream) -> None:
        super().__init__()
        self._stream = weakref.ref(stream)

    def handle_subscribe(self, subscription: Any) -> str:
        subscription.shares = True  # its share of a DemandDispatcher's events
        stream = self._stream()
        if stream is None or stream._ended:
            # Closed or dropped before the run reached it: leave at once.
            self._leave(subscription)
        else:
            stream._subscribed(subscription)
        return "manual"

    def handle_events(self, events: list) -> None:
        stream = self._stream()
        if stream is not None:
            stream._put(events)

    def handle_cancel(self, subscription: Any, reason: Any) -> None:
        stream = self._stream()
        if stream is not None:
            stream._cancelled(reason)

    def _gs_ended(self, process: Any) -> None:
        stream = self._stream()
        if stream is not None:
            stream._cancelled(process.stop_reason)
        pipeline = self._pipeline
        if pipeline is not None and pipeline.running:
            pipeline._depart(self.name)  # leaves the graph at once, not at the run's end

    def _leave(self, subscription: Any) -> None:
        """Unsubscribe and end this consumer (in the running pipeline)."""
        pipeline = self._pipeline
        edge = pipeline.graph.get_edge_data(subscription.producer.name, self.name)
        if edge is not None and edge["subscription"] is subscription:
            pipeline.unlink(subscription)
        process = self._process
        assert process is not None  # (a stream runs in its pipeline)
        process.post(process._on_stop_request)


class EventStream:
    """An async iterator over the events of one stage, with demand bounded by
    ``max_demand``; also an async context manager. Made by ``Pipeline.stream``.

    Use it with ``async for`` or ``async with p.stream(stage) as events:``. It ends
    when the stage finishes; ``aclose()``, leaving the ``async with`` block, breaking
    out of the loop or dropping the stream unsubscribes at once, so the producer is
    never left waiting for it.

    >>> import genstage_nb as gs, anyio
    >>> async def main():
    ...     p = gs.Pipeline()
    ...     src = p.add(gs.from_iterable(range(5)))
    ...     async with anyio.create_task_group() as tg, p.stream(src, max_demand=2) as events:
    ...         tg.start_soon(p.run)
    ...         return [e async for e in events]
    >>> anyio.run(main)
    [0, 1, 2, 3, 4]
    """

    def __init__(self, pipeline: Any, stage: Any, max_demand: int) -> None:
        where = f"stream {stage.name}"
        self._max, self._min = check_demand_options(where, max_demand, None)
        if not hasattr(stage, "emit"):
            raise TypeError(f"{where}: {stage.name!r} is a {stage.kind} and emits no events")
        self._pipeline = pipeline
        self._source = stage.name
        self._events: deque = deque()
        self._sub: Any = None
        self._consumed = 0
        self._ended = False
        self._error: BaseException | None = None
        self._wakeup: anyio.Event | None = None
        self._soon: Callable[[Callable[[], None]], None] | None = _call_soon()
        self._sink = pipeline.add(_StreamSink(self))
        self._link = pipeline.link(stage, self._sink, max_demand=max_demand)

    # -- from the sink (in the pipeline's task) ---------------------------------------

    def _subscribed(self, sub: Any) -> None:
        self._sub = sub
        if self._soon is None:
            self._soon = _call_soon()
        sub.ask(self._max)

    def _put(self, events: list) -> None:
        self._events.extend(events)
        self._wake()

    def _cancelled(self, reason: Any) -> None:
        if not self._ended:
            self._ended = True
            if isinstance(reason, BaseException):
                self._error = reason
            self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    # -- iteration -------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Any]:
        # A generator per loop: when a loop is left with break (or an error), the event
        # loop finalizes the generator, and its `finally` closes the stream.
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            while True:
                try:
                    event = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield event
        finally:
            self._close()

    async def __anext__(self) -> Any:
        while not self._events:
            if self._ended:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            if not self._pipeline.running:
                # A pipeline started with start_soon a moment ago gets to run first.
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
                    if self._pipeline.running:
                        break
                else:
                    raise RuntimeError(
                        f"stream of {self._source!r}: the pipeline is not running; start it "
                        f"(p.start() or p.run() in a task group) before iterating"
                    )
                continue  # events may have come meanwhile
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        event = self._events.popleft()
        self._consumed += 1
        if self._consumed >= self._max - self._min and self._sub is not None:
            n, self._consumed = self._consumed, 0
            if self._sub.active and self._pipeline.running:  # (ended: nobody to ask)
                self._sub.ask(n)
        return event

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop iterating: unsubscribe and finish the stream's consumer."""
        self._close()

    def _close(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._wake()
        pipeline, sink = self._pipeline, self._sink
        if sink._pipeline is not pipeline:
            return  # already taken out of the pipeline
        if pipeline.running:
            if sink._process is not None and sink._process.running:
                sink._leave(self._link)
            # Not started yet: it leaves when it subscribes (see _StreamSink).
        else:
            pipeline._remove(sink.name)

    def __del__(self) -> None:
        # Dropped without being closed: close it on the event loop's thread, between
        # two steps of the loop (never in the middle of whatever code dropped it).
        if getattr(self, "_ended", True):
            return  # ended, or __init__ failed
        soon = self._soon
        if soon is None:
            return  # never ran: the sink leaves when a run reaches it
        # RuntimeError: the event loop has closed, there is no run left to unblock.
        with contextlib.suppress(RuntimeError):
            soon(self._close)


def _call_soon() -> Callable[[Callable[[], None]], None] | None:
    """A thread-safe "run this soon on the current event loop", or None outside one."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None
    if library == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    loop = asyncio.get_running_loop()
    thread = threading.get_ident()

    def soon(fn: Callable[[], None]) -> None:
        if loop.is_closed():
            raise RuntimeError("event loop closed")
        if threading.get_ident() == thread:
            loop.call_soon(fn)
        else:
            loop.call_soon_threadsafe(fn)

    return soon
