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
  ``PartitionDispatcher`` on the stage before (by ``stable_hash(key(event)) % N``, the
  same in every process: ``core/keys.py``); the step right after the partition (a
  reduce, a per-event step) runs in them, later steps run once per partition
  (``"map[i]"``);
- ``reduce`` keeps one accumulator per key and window (``reducer.py``);
- the last stages feed one consumer, ``"results"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.stage import Stage
from .aggregations import Aggregations, check_fn
from .running import Running
from .stages import Collect
from .window import Window, check_window


@dataclass(frozen=True)
class _Op:
    """One step of a recipe: its kind and what it takes."""

    kind: str  # "map", "flat_map", "filter", "map_batch", "partition", "reduce"
    args: dict = field(default_factory=dict)


def _check_link(where: str, max_demand: Any) -> None:
    if max_demand is not None and (
        isinstance(max_demand, bool) or not isinstance(max_demand, int) or max_demand < 1
    ):
        raise ValueError(f"Flow.{where}: max_demand must be an int >= 1, got {max_demand!r}")


class Flow(Running, Aggregations):
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
        check_fn("window_join", left_key, "left_key= to be a function event -> key")
        check_fn("window_join", right_key, "right_key= to be a function event -> key")
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
        check_fn(kind, fn)
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
            check_fn("partition", key, "key= to be a function event -> key")
        if hash is not None:
            check_fn("partition", hash, "hash= to be a function event -> stage index")
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
        check_fn("reduce", initial, "initial to be a function () -> accumulator")
        check_fn("reduce", fn, "fn to be a function (accumulator, event) -> accumulator")
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
        check_fn("on_trigger", fn, "a function (key, value, window) -> events")
        if not self._ops or self._ops[-1].kind != "reduce":
            raise ValueError("Flow.on_trigger: must come right after reduce() (or a helper)")
        if self._ops[-1].args.get("on_trigger") is not None:
            raise ValueError("Flow.on_trigger: the reduce before already has one")
        return self._with_reduce(on_trigger=fn)

    def _with_reduce(self, **args: Any) -> Flow:
        """This flow with more arguments to its last step (a reduce)."""
        last = self._ops[-1]
        op = _Op("reduce", {**last.args, **args})
        return Flow(self._source, (*self._ops[:-1], op), self._settings)

    # -- settings ----------------------------------------------------------------------

    def configure(self, **pipeline_options: Any) -> Flow:
        """The options of the pipeline the flow builds (``name``, ``on_failure``,
        ``metrics_interval``, and the durable runs' ``checkpoint``, ``checkpoint_every``
        and ``checkpoint_mode``, as ``gs.Pipeline`` takes them). With ``checkpoint=``
        the reduces' accumulators, open windows and late events, the sources' positions
        and the results so far are saved; a run of the same flow resumes from there.

        >>> Flow.from_iterable([1]).configure(name="numbers").pipeline.name
        'numbers'
        """
        allowed = {
            "name",
            "on_failure",
            "metrics_interval",
            "checkpoint",
            "checkpoint_every",
            "checkpoint_mode",
        }
        unknown = set(pipeline_options) - allowed
        if unknown:
            raise TypeError(
                f"Flow.configure: unknown option(s) {sorted(unknown)} (use {sorted(allowed)})"
            )
        return Flow(self._source, self._ops, {**self._settings, **pipeline_options})

    def __repr__(self) -> str:
        kinds = [self._source[0]] + [op.kind for op in self._ops]
        return f"<Flow {' -> '.join(kinds)}>"


def _check_stages(where: str, stages: Any) -> None:
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ValueError(f"Flow.{where}: stages must be an int >= 1, got {stages!r}")


__all__ = ["Flow"]
