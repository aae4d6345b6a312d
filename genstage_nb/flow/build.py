"""How a Flow's recipe becomes the stages and links of a ``Pipeline`` (``Builder``).

The steps are taken in order, with the stages of the step before (its *layer*) in
hand: a per-event step makes one stage fed by the whole layer, or one per stage of the
layer after a partition; a partition makes N stages, fed through a
``PartitionDispatcher`` on each stage of the layer (a stage the flow did not make gets
a pass-through ``"route"`` stage for it, so its own dispatcher is left alone); the step
right after a partition runs in the partition's stages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any

from ..core.factories import MapStage, from_iterable, producer_consumer
from ..core.keys import stable_hash
from ..core.partition import PartitionDispatcher
from ..core.stage import ProducerConsumer, Stage
from .stages import Collect, Join, Reduce, Step, Tag

if TYPE_CHECKING:
    from .flow import Flow, _Op

#: The options of a per-event step that make it a ``gs.map`` stage (a job per event).
JOB_OPTIONS = ("concurrency", "executor", "ordered")
DEFAULT_DEMAND = 1000


class _Flat:
    """``flat_map``'s function as ``gs.map`` calls it: the items as a list."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, event: Any) -> list:
        return list(self.fn(event))


class _Keep:
    """``filter``'s function as ``gs.map`` calls it: ``[event]`` or ``[]``."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, event: Any) -> list:
        return [event] if self.fn(event) else []


def _per_event(kind: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    if kind == "map":
        return fn
    if iscoroutinefunction(fn):

        async def call(event: Any) -> list:
            result = await fn(event)
            if kind == "filter":
                return [event] if result else []
            return list(result)

        return call
    return _Flat(fn) if kind == "flat_map" else _Keep(fn)


class Builder:
    """Builds one flow (and the flows a join takes) into ``pipeline``."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.names: Counter[str] = Counter()
        self.made: list[tuple[Stage, str | None]] = []  # (None: the pipeline names it)
        self.links: list[tuple[Stage, Stage, dict]] = []
        self.windowed: list[Stage] = []
        self._own: set[int] = set()  # the stages this builder made (their dispatcher is ours)

    # -- names and stages --------------------------------------------------------------

    def _name(self, base: str) -> str:
        self.names[base] += 1
        n = self.names[base]
        return base if n == 1 else f"{base}_{n}"

    def _add(self, stage: Stage, name: str | None, own: bool = True) -> Stage:
        self.made.append((stage, name))
        if own:
            self._own.add(id(stage))
        return stage

    def _link(self, producer: Stage, consumer: Stage, demand: dict, partition: Any = None) -> None:
        options = dict(demand)
        if partition is not None:
            options["partition"] = partition
        self.links.append((producer, consumer, options))

    # -- a flow --------------------------------------------------------------------------

    def flow(self, flow: Flow) -> list[Stage]:
        """Make the stages of ``flow``; return its last layer."""
        layer = self._source(flow._source)
        parallel = len(layer) > 1 and flow._source[0] == "join"
        key = window = None
        pending: dict | None = None
        for op in flow._ops:
            if op.kind == "partition":
                if pending is not None:
                    layer, parallel = self._partition(layer, pending, None), True
                pending = op.args
                key, window = op.args["key"], op.args["window"]
                continue
            if pending is not None:
                layer, parallel = self._partition(layer, pending, (op, key, window)), True
                pending = None
                continue
            demand = _demand(op.args)
            if parallel:
                name = self._name(op.kind)
                made = [self._stage(op, key, window, f"{name}[{i}]") for i in range(len(layer))]
                for before, stage in zip(layer, made, strict=True):
                    self._link(before, stage, demand)
            else:
                stage = self._stage(op, key, window, self._name(op.kind))
                for before in layer:
                    self._link(before, stage, demand)
                made = [stage]
            layer = made
        if pending is not None:
            layer = self._partition(layer, pending, None)
        return layer

    def _source(self, source: tuple) -> list[Stage]:
        kind = source[0]
        if kind == "iterable":
            _, iterable, options = source
            options = dict(options)
            name = options.pop("name", None) or self._name("from_iterable")
            return [self._add(from_iterable(iterable, **options), name)]
        if kind == "stages":
            return [self._add(stage, stage.name, own=False) for stage in source[1]]
        return self._join(source[1])

    def _join(self, spec: dict) -> list[Stage]:
        sides = []
        for side, flow in enumerate((spec["left"], spec["right"])):
            last = self.flow(flow)
            tag = self._add(Tag(side), self._name("join_left" if side == 0 else "join_right"))
            for stage in last:
                self._link(stage, tag, {"max_demand": DEFAULT_DEMAND})
            sides.append(tag)
        n = spec["stages"]
        base = self._name("join")
        joins: list[Stage] = []
        for i in range(n):
            join: Stage = Join(spec["left_key"], spec["right_key"], spec["window"], spec["how"])
            self._add(join, base if n == 1 else f"{base}[{i}]")
            joins.append(join)
        self.windowed.extend(joins)
        for tag, key in zip(sides, (spec["left_key"], spec["right_key"]), strict=True):
            if n > 1:
                tag.dispatcher = PartitionDispatcher(n, hash=_tagged_hash(key, n))
            for i, join in enumerate(joins):
                self._link(tag, join, {"max_demand": DEFAULT_DEMAND}, i if n > 1 else None)
        return joins

    def _partition(self, layer: list[Stage], args: dict, first: tuple | None) -> list[Stage]:
        """The N stages of a partition, hosting ``first`` (the step after it, with the
        partition's key and window), or passing events through."""
        n = args["stages"]
        # A reduce right after a keyed partition of several stages gets (key, event)
        # pairs: the key is computed once, by the dispatcher.
        paired = n > 1 and args["hash"] is None and args["key"] is not None
        paired = paired and first is not None and first[0].kind == "reduce"
        base = self._name("partition")
        stages = []
        for i in range(n):
            name = f"{base}[{i}]"
            if first is None:
                stages.append(self._add(ProducerConsumer(), name))
            else:
                op, key, window = first
                stages.append(self._stage(op, key, window, name, paired))
        demand = _demand(args)
        if n == 1:
            for before in layer:
                self._link(before, stages[0], demand)
            return stages
        hash_of = args["hash"] or _key_hash(args["key"], n)
        for before in layer:
            if id(before) not in self._own:
                route = self._add(ProducerConsumer(), self._name("route"))
                self._link(before, route, {"max_demand": DEFAULT_DEMAND})
                before = route
            before.dispatcher = (
                KeyedPartition(n, args["key"]) if paired else PartitionDispatcher(n, hash=hash_of)
            )
            for i, stage in enumerate(stages):
                self._link(before, stage, demand, i)
        return stages

    def _stage(self, op: _Op, key: Any, window: Any, name: str, paired: bool = False) -> Stage:
        args = op.args
        if op.kind == "reduce":
            reduce = Reduce(
                args["initial"],
                args["fn"],
                key=key,
                window=window,
                present=args.get("present"),
                on_trigger=args.get("on_trigger"),
                paired=paired,
            )
            self.windowed.append(reduce)
            return self._add(reduce, name)
        fn, options = args["fn"], dict(args["options"])
        options["name"] = name  # (so that an option's error names the stage)
        if op.kind == "map_batch":
            return self._add(producer_consumer(fn, **options), name)
        if any(option in options for option in JOB_OPTIONS) or iscoroutinefunction(fn):
            mapped = MapStage(_per_event(op.kind, fn), **options)
            mapped._gs_flat = op.kind != "map"
            return self._add(mapped, name)
        return self._add(Step(op.kind, fn, **options), name)

    # -- the end ------------------------------------------------------------------------

    def collect(self, last: list[Stage], results: list) -> Collect:
        """The sink of the flow's results; then every stage and link goes in."""
        sink = Collect(results)
        self._add(sink, self._name("results"))
        for stage in last:
            self._link(stage, sink, {"max_demand": DEFAULT_DEMAND})
        pipeline = self.pipeline
        for stage, name in self.made:
            pipeline.add(stage, name=name)
        for producer, consumer, options in self.links:
            pipeline.link(producer, consumer, **options)
        return sink


class KeyedPartition(PartitionDispatcher):
    """A ``PartitionDispatcher`` by ``stable_hash(key(event)) % N`` that sends each event on
    as ``(key, event)``, so the reduce after it does not compute the key again."""

    def __init__(self, partitions: int, key: Callable[[Any], Any]) -> None:
        super().__init__(partitions)
        self._key = key

    def fresh(self) -> KeyedPartition:
        return KeyedPartition(len(self.names), self._key)

    def _sort_by_index(self, events: list) -> list[tuple[Any, list]]:
        n = len(self.names)
        lists: list[list] = [[] for _ in range(n)]
        appends = [bucket.append for bucket in lists]
        key = self._key
        for event in events:
            k = key(event)
            appends[stable_hash(k) % n]((k, event))
        return list(zip(self.names, lists, strict=True))


def _demand(args: dict) -> dict:
    demand = {"max_demand": args.get("max_demand") or DEFAULT_DEMAND}
    if args.get("min_demand") is not None:
        demand["min_demand"] = args["min_demand"]
    return demand


def _key_hash(key: Callable[[Any], Any] | None, n: int) -> Callable[[Any], int] | None:
    if key is None:
        return None
    return lambda event: stable_hash(key(event)) % n


def _tagged_hash(key: Callable[[Any], Any], n: int) -> Callable[[Any], int]:
    return lambda tagged: stable_hash(key(tagged[1])) % n


__all__ = ["Builder", "JOB_OPTIONS"]
