"""``gs.Flow``: the common tasks of a dataflow (map, partition by key, reduce per window,
joins) in one expression, built as an ordinary ``Pipeline`` of our stages.

A Flow is a recipe: each step returns a new Flow, and nothing runs until ``run()``,
``run_async()``, ``start()``, ``stream()`` or ``to_frame()``. The pipeline it builds
(``flow.pipeline``) is a plain one, so ``explain``, the metrics and plots, the
dashboard, pause/resume, autotune and executors all apply. How the steps become
stages (``docs/flow.md`` draws it):

- a source is a producer (``from_iterable``) or the user's own (``from_stages``);
- each per-event step is one producer-consumer (``Step``: one call per event in a C
  loop over the batch; with ``concurrency=``, ``executor=`` or an async function, a
  ``gs.map`` stage);
- ``partition(stages=N)`` makes N stages ``"partition[i]"``, fed through a
  ``PartitionDispatcher`` on the stage before (by ``hash(key(event)) % N``); the step
  right after the partition (a reduce, a per-event step) runs in them, later steps run
  once per partition (``"map[i]"``);
- ``reduce`` keeps one accumulator per key and window (``reducer.py``);
- the last stages feed one consumer, ``"results"``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.stage import Stage
from .stages import Collect
from .window import Window, WindowResult, check_window

#: The options of a per-event step that make it a ``gs.map`` stage (per-event jobs).
_JOB_OPTIONS = ("concurrency", "executor")


@dataclass(frozen=True)
class _Op:
    """One step of a recipe: its kind and what it takes."""

    kind: str  # "map", "flat_map", "filter", "map_batch", "partition", "reduce"
    args: dict = field(default_factory=dict)


def _check_fn(where: str, fn: Any, what: str = "a function") -> None:
    if not callable(fn):
        raise TypeError(f"Flow.{where}: expected {what}, got {fn!r}")


def _check_link(where: str, max_demand: Any) -> None:
    if max_demand is not None and (
        isinstance(max_demand, bool) or not isinstance(max_demand, int) or max_demand < 1
    ):
        raise ValueError(f"Flow.{where}: max_demand must be an int >= 1, got {max_demand!r}")


class Flow:
    """A dataflow recipe built on our stages (see the module doc and DESIGN section 8).

    >>> import genstage_nb as gs
    >>> lines = ["the cat", "The dog", "a cat"]
    >>> words = (
    ...     gs.Flow.from_iterable(lines)
    ...     .flat_map(str.split)
    ...     .map(str.lower)
    ...     .partition(key=lambda w: w, stages=2)
    ...     .reduce(lambda: 0, lambda n, w: n + 1)
    ... )
    >>> sorted(words.run())
    [('a', 1), ('cat', 2), ('dog', 1), ('the', 2)]
    """

    def __init__(self, source: tuple, ops: tuple[_Op, ...] = (), settings: dict | None = None):
        self._source = source  # ("iterable", it, options) | ("stages", stages) | ("join", ...)
        self._ops = ops
        self._settings = dict(settings or {})
        self._pipeline: Any = None
        self._ran = False
        self._collect: Collect | None = None
        self._windowed: list[Stage] = []
        self.results: list = []

    # -- sources -----------------------------------------------------------------------

    @classmethod
    def from_iterable(cls, iterable: Iterable | AsyncIterable, **options: Any) -> Flow:
        """A flow of the items of ``iterable`` (sync or async), read by one producer
        (``gs.from_iterable``; ``options`` as for it, e.g. ``buffer_size``).

        >>> Flow.from_iterable(range(5)).map(lambda x: x * x).run()
        [0, 1, 4, 9, 16]
        """
        if not isinstance(iterable, (Iterable, AsyncIterable)):
            raise TypeError(f"Flow.from_iterable: expected an iterable, got {iterable!r}")
        return cls(("iterable", iterable, options))

    @classmethod
    def from_stages(cls, *stages: Stage) -> Flow:
        """A flow of the events of the given producers (or producer-consumers), which
        the flow's pipeline takes in (a stage belongs to one pipeline).

        >>> import genstage_nb as gs
        >>> Flow.from_stages(gs.from_iterable("ab"), gs.from_iterable("cd")).map(str.upper).run()
        ['A', 'B', 'C', 'D']
        """
        if not stages:
            raise ValueError("Flow.from_stages: give at least one producer")
        for stage in stages:
            if not isinstance(stage, Stage) or stage.kind == "consumer":
                raise TypeError(
                    f"Flow.from_stages: expected producers or producer-consumers, got {stage!r}"
                )
        return cls(("stages", stages))

    @staticmethod
    def window_join(
        left: Flow,
        right: Flow,
        *,
        left_key: Callable[[Any], Any],
        right_key: Callable[[Any], Any],
        window: Window | None = None,
        how: str = "inner",
        stages: int = 1,
    ) -> Flow:
        """The pairs ``(left_event, right_event)`` with equal keys in the same window.

        ``how``: ``"inner"`` (only matches), ``"left"`` (every left event, with
        ``None`` where no right event matches), ``"right"``, ``"outer"``. ``window``:
        ``Window.all()`` (the default: the pairs come when both inputs end),
        ``Window.fixed(...)`` (a window's pairs come once both sides are past its end
        plus lateness; its ``time`` applies to the events of both sides) or
        ``Window.periodic(s)``. With ``stages=N`` the keys are split over N stages.

        >>> import genstage_nb as gs
        >>> people = gs.Flow.from_iterable([("ann", 1), ("bob", 2)])
        >>> cities = gs.Flow.from_iterable([(1, "Oslo"), (3, "Rome")])
        >>> gs.Flow.window_join(people, cities, left_key=lambda p: p[1],
        ...                     right_key=lambda c: c[0], how="left").run()
        [(('ann', 1), (1, 'Oslo')), (('bob', 2), None)]
        """
        from .reducer import Joiner

        for side, flow in (("left", left), ("right", right)):
            if not isinstance(flow, Flow):
                raise TypeError(f"Flow.window_join: {side} must be a Flow, got {flow!r}")
        _check_fn("window_join", left_key, "left_key= to be a function event -> key")
        _check_fn("window_join", right_key, "right_key= to be a function event -> key")
        window = Window.all() if window is None else check_window("Flow.window_join", window)
        if window.kind == "count" or window.every is not None or window.periodically:
            raise ValueError(
                "Flow.window_join: window must be Window.all(), Window.fixed(...) or "
                f"Window.periodic(s), without triggers; got {window!r}"
            )
        if how not in Joiner.HOW:
            raise ValueError(f"Flow.window_join: how must be one of {Joiner.HOW}, got {how!r}")
        _check_stages("window_join", stages)
        spec = {
            "left": left,
            "right": right,
            "left_key": left_key,
            "right_key": right_key,
            "window": window,
            "how": how,
            "stages": stages,
        }
        return Flow(("join", spec), (), left._settings)

    # -- steps -------------------------------------------------------------------------

    def _then(self, op: _Op) -> Flow:
        return Flow(self._source, (*self._ops, op), self._settings)

    def _step(self, kind: str, fn: Any, max_demand: Any, options: dict) -> Flow:
        _check_fn(kind, fn)
        _check_link(kind, max_demand)
        return self._then(_Op(kind, {"fn": fn, "max_demand": max_demand, "options": options}))

    def map(
        self, fn: Callable[[Any], Any], *, max_demand: int | None = None, **options: Any
    ) -> Flow:
        """``fn(event)`` for each event: its result goes on.

        ``fn`` may be sync or ``async``. Options as ``gs.map`` takes them:
        ``concurrency=``, ``executor=``, ``retry=``, ``rate_limit=``, ``ordered=`` (and
        any stage option); ``max_demand`` of the link into this step (default 1000).
        A call that raises fails the step at that event; resumed, it goes on from
        that event.

        >>> Flow.from_iterable([1, 2]).map(lambda x: x + 1).run()
        [2, 3]
        """
        return self._step("map", fn, max_demand, options)

    def flat_map(
        self, fn: Callable[[Any], Iterable], *, max_demand: int | None = None, **options: Any
    ) -> Flow:
        """``fn(event)`` returns an iterable: each of its items goes on.

        >>> Flow.from_iterable(["a b", "c"]).flat_map(str.split).run()
        ['a', 'b', 'c']
        """
        return self._step("flat_map", fn, max_demand, options)

    def filter(
        self, fn: Callable[[Any], Any], *, max_demand: int | None = None, **options: Any
    ) -> Flow:
        """Only the events for which ``fn(event)`` is true go on.

        >>> Flow.from_iterable(range(6)).filter(lambda x: x % 2).run()
        [1, 3, 5]
        """
        return self._step("filter", fn, max_demand, options)

    def map_batch(
        self, fn: Callable[[list], Any], *, max_demand: int | None = None, **options: Any
    ) -> Flow:
        """``fn(events)`` on each batch returns the events that go on (a list); sync or
        async, with the stage options (``concurrency=``, ``executor=``, ``retry=``,
        ``rate_limit=``, ...).

        >>> Flow.from_iterable(range(4)).map_batch(lambda batch: [sum(batch)]).run()
        [6]
        """
        return self._step("map_batch", fn, max_demand, options)

    def partition(
        self,
        *,
        key: Callable[[Any], Any] | None = None,
        hash: Callable[[Any], int | None] | None = None,  # noqa: A002 - Flow's name
        stages: int = 1,
        window: Window | None = None,
        max_demand: int | None = None,
        min_demand: int | None = None,
    ) -> Flow:
        """Split the events over ``stages`` stages: every event with the same ``key``
        goes to the same one, in order. ``hash(event)`` picks the stage itself (an int
        ``0 .. stages-1``, or None to discard the event). ``window`` splits the events
        of each stage for the ``reduce`` that follows (``gs.Window``).

        >>> flow = Flow.from_iterable(range(10)).partition(key=lambda x: x % 3, stages=2)
        >>> sorted(flow.reduce(lambda: 0, lambda a, x: a + x).run())
        [(0, 18), (1, 12), (2, 15)]
        """
        if key is not None:
            _check_fn("partition", key, "key= to be a function event -> key")
        if hash is not None:
            _check_fn("partition", hash, "hash= to be a function event -> stage index")
        _check_stages("partition", stages)
        if window is not None:
            check_window("Flow.partition", window)
        _check_link("partition", max_demand)
        args = {
            "key": key,
            "hash": hash,
            "stages": stages,
            "window": window,
            "max_demand": max_demand,
            "min_demand": min_demand,
        }
        return self._then(_Op("partition", args))

    def reduce(self, initial: Callable[[], Any], fn: Callable[[Any, Any], Any]) -> Flow:
        """One accumulator per key (and window): ``initial()`` makes it, ``fn(acc,
        event)`` returns the next. Without a window it emits ``(key, value)`` pairs when
        the input ends (the bare value when the partition has no key); with a window,
        ``gs.WindowResult`` records as windows fire.

        >>> Flow.from_iterable(range(5)).partition().reduce(lambda: 0, lambda a, x: a + x).run()
        [10]
        """
        _check_fn("reduce", initial, "initial to be a function () -> accumulator")
        _check_fn("reduce", fn, "fn to be a function (accumulator, event) -> accumulator")
        return self._then(_Op("reduce", {"initial": initial, "fn": fn}))

    def on_trigger(self, fn: Callable[[Any, Any, Any], Any]) -> Flow:
        """What the reduce before emits: ``fn(key, value, window)`` returns the events
        (an iterable, or None) instead of each record; ``window`` is ``(start, end)``,
        or None for a reduce without a window.

        >>> flow = Flow.from_iterable("abca").partition(key=str).reduce(
        ...     lambda: 0, lambda n, c: n + 1)
        >>> flow.on_trigger(lambda k, n, w: [f"{k}={n}"]).run()
        ['a=2', 'b=1', 'c=1']
        """
        _check_fn("on_trigger", fn, "a function (key, value, window) -> events")
        if not self._ops or self._ops[-1].kind != "reduce":
            raise ValueError("Flow.on_trigger: must come right after reduce() (or a helper)")
        last = self._ops[-1]
        if last.args.get("on_trigger") is not None:
            raise ValueError("Flow.on_trigger: the reduce before already has one")
        op = _Op("reduce", {**last.args, "on_trigger": fn})
        return Flow(self._source, (*self._ops[:-1], op), self._settings)

    # -- the common aggregations, on reduce --------------------------------------------

    def count(self) -> Flow:
        """The number of events per key (and window).

        >>> Flow.from_iterable("abca").partition(key=str).count().run()
        [('a', 2), ('b', 1), ('c', 1)]
        """
        return self.reduce(_zero, _count)

    def sum(self, value: Callable[[Any], Any] | None = None) -> Flow:
        """The sum of ``value(event)`` (the event itself by default) per key.

        >>> Flow.from_iterable([("a", 2), ("a", 3)]).partition(key=lambda e: e[0]).sum(
        ...     lambda e: e[1]).run()
        [('a', 5)]
        """
        if value is not None:
            _check_fn("sum", value)
        return self.reduce(_zero, _adder(value))

    def mean(self, value: Callable[[Any], Any] | None = None) -> Flow:
        """The mean of ``value(event)`` per key, skipping None and NaN (as pandas does;
        NaN when a key has no value).

        >>> Flow.from_iterable([("a", 2), ("a", None), ("a", 4)]).partition(
        ...     key=lambda e: e[0]).mean(lambda e: e[1]).run()
        [('a', 3.0)]
        """
        if value is not None:
            _check_fn("mean", value)
        flow = self.reduce(_pair, _averager(value))
        last = flow._ops[-1]
        op = _Op("reduce", {**last.args, "present": _mean})
        return Flow(flow._source, (*flow._ops[:-1], op), flow._settings)

    def top_k(self, k: int, *, by: Callable[[Any], Any] | None = None) -> Flow:
        """The ``k`` largest events by ``by(event)`` (the event itself by default), gathered
        in one stage, emitted largest first when the input ends (ties: the first seen).

        >>> counts = Flow.from_iterable("abcab").partition(key=str).count()
        >>> counts.top_k(2, by=lambda kv: kv[1]).run()
        [('a', 2), ('b', 2)]
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Flow.top_k: k must be an int >= 1, got {k!r}")
        if by is not None:
            _check_fn("top_k", by)
        keep = _TopK(k, by)
        flow = self.partition(stages=1).reduce(keep.initial, keep.push)
        return flow.on_trigger(keep.emit)

    # -- settings ----------------------------------------------------------------------

    def configure(self, **pipeline_options: Any) -> Flow:
        """The options of the pipeline the flow builds (``name``, ``on_failure``,
        ``metrics_interval``, as ``gs.Pipeline`` takes them).

        >>> Flow.from_iterable([1]).configure(name="numbers").pipeline.name
        'numbers'
        """
        allowed = {"name", "on_failure", "metrics_interval"}
        unknown = set(pipeline_options) - allowed
        if unknown:
            raise TypeError(
                f"Flow.configure: unknown option(s) {sorted(unknown)} (use {sorted(allowed)})"
            )
        return Flow(self._source, self._ops, {**self._settings, **pipeline_options})

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
        last = builder.flow(self)
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
        return [
            e for stage in self._windowed for e in stage._state.late if hasattr(stage, "_state")
        ]

    # -- running -----------------------------------------------------------------------

    def run(self, backend: str = "asyncio") -> list:
        """Run to the end (from a script) and return what the last step emitted.

        A step that fails raises ``gs.PipelineError`` (the failure in
        ``flow.pipeline.failures``). In a notebook use ``await flow.run_async()`` or
        ``flow.start()``.
        """
        import sniffio

        try:
            running = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            running = None
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
        results grow in ``flow.results``; ``flow.show()`` shows them live."""
        self._fresh("pause").start()
        return self

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

    def show(self, rows: int = 20, refresh: float = 0.5) -> Any:
        """A live table of the latest ``rows`` results in a notebook, refreshed every
        ``refresh`` seconds while the flow runs (``start()``), and once more at the end;
        it never blocks the kernel. Returns the display handle."""
        from .show import show

        return show(self, rows, refresh)

    # -- the pipeline's views, on the flow ---------------------------------------------

    def explain(self) -> Any:
        """``flow.pipeline.explain()``: where the flow's time goes, and why."""
        return self.pipeline.explain()

    def dashboard(self, refresh: float = 1.0) -> Any:
        """``flow.pipeline.dashboard()``: the live dashboard of the flow's stages."""
        return self.pipeline.dashboard(refresh)

    def __repr__(self) -> str:
        kinds = [self._source[0]] + [op.kind for op in self._ops]
        return f"<Flow {' -> '.join(kinds)}>"


def _check_stages(where: str, stages: Any) -> None:
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ValueError(f"Flow.{where}: stages must be an int >= 1, got {stages!r}")


def _window_of(ops: tuple[_Op, ...]) -> Window | None:
    for op in reversed(ops):
        if op.kind == "partition":
            return op.args["window"]
    return None


def frame_of(results: list, shape: str) -> Any:
    import pandas as pd

    if shape == "records" and all(isinstance(r, WindowResult) for r in results):
        return pd.DataFrame(
            {
                "window_start": [r.window[0] for r in results],
                "window_end": [r.window[1] for r in results],
                "key": [r.key for r in results],
                "value": [r.value for r in results],
                "final": [r.final for r in results],
            }
        )
    if shape == "pairs":
        return pd.DataFrame(results, columns=["key", "value"])
    if shape == "join":
        return pd.DataFrame(results, columns=["left", "right"])
    if results and all(isinstance(r, dict) for r in results):
        return pd.DataFrame.from_records(results)
    return pd.DataFrame({"value": results})


# The helpers' functions: module-level (picklable, one call each).


def _zero() -> int:
    return 0


def _pair() -> tuple[int, float]:
    return (0, 0.0)


def _count(n: int, event: Any) -> int:
    return n + 1


def _adder(value: Callable[[Any], Any] | None) -> Callable[[Any, Any], Any]:
    if value is None:
        return lambda total, event: total + event
    return lambda total, event: total + value(event)


def _averager(value: Callable[[Any], Any] | None) -> Callable[[Any, Any], Any]:
    def add(acc: tuple[int, float], event: Any) -> tuple[int, float]:
        x = event if value is None else value(event)
        if x is None or x != x:  # None and NaN are skipped
            return acc
        return (acc[0] + 1, acc[1] + x)

    return add


def _mean(acc: tuple[int, float]) -> float:
    return acc[1] / acc[0] if acc[0] else math.nan


class _TopK:
    """The bounded heap of ``top_k``: ``(score, -seq, seq, event)``, smallest on top."""

    def __init__(self, k: int, by: Callable[[Any], Any] | None) -> None:
        self.k, self.by = k, by
        self.seq = itertools.count()

    def initial(self) -> list:
        return []

    def push(self, heap: list, event: Any) -> list:
        score = event if self.by is None else self.by(event)
        n = next(self.seq)
        item = (score, -n, n, event)
        if len(heap) < self.k:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
        return heap

    def emit(self, key: Any, heap: list, window: Any) -> list:
        return [item[3] for item in sorted(heap, reverse=True)]


__all__ = ["Flow", "frame_of"]
