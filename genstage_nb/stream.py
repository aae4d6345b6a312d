"""``Pipeline.stream``: iterate over the events a stage emits (GenStage.stream)."""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import anyio.lowlevel

from .core.demand import check_demand_options
from .core.stage import Consumer


class _StreamSink(Consumer):
    """The consumer behind an ``EventStream``: manual demand, driven by iteration."""

    _default_name = "stream"

    def __init__(self, stream: EventStream) -> None:
        super().__init__()
        self._stream = stream

    def handle_subscribe(self, subscription: Any) -> str:
        self._stream._subscribed(subscription)
        return "manual"

    def handle_events(self, events: list) -> None:
        self._stream._put(events)

    def handle_cancel(self, subscription: Any, reason: Any) -> None:
        self._stream._cancelled(reason)

    def _gs_ended(self, process: Any) -> None:
        self._stream._cancelled(process.stop_reason)


class EventStream:
    """An async iterator over the events of one stage, with demand bounded by
    ``max_demand``. Made by ``Pipeline.stream``; ``aclose()`` unsubscribes early.

    >>> import genstage_nb as gs, anyio
    >>> async def main():
    ...     p = gs.Pipeline()
    ...     src = p.add(gs.from_iterable(range(5)))
    ...     events = p.stream(src, max_demand=2)
    ...     async with anyio.create_task_group() as tg:
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
        self._sink = pipeline.add(_StreamSink(self))
        pipeline.link(stage, self._sink, max_demand=max_demand)

    def _subscribed(self, sub: Any) -> None:
        self._sub = sub
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

    def __aiter__(self) -> EventStream:
        return self

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
            if self._sub.active:
                self._sub.ask(n)
        return event

    async def aclose(self) -> None:
        """Stop iterating: unsubscribe and finish the stream's consumer."""
        if not self._ended:
            self._ended = True
            self._wake()
            sub = self._sub
            if sub is not None and sub.active and self._pipeline.running:
                self._pipeline.unlink(sub)
                self._sink._process.post(self._sink._process._on_stop_request)
