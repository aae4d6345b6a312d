"""Random pipelines over the whole option space, and the checks every run must pass.

``pipelines()`` is a hypothesis strategy that draws a ``Spec``: a plain description of a
pipeline (topology, dispatchers, buffers, demand, hooks, options, faults, stops, streams),
so a failing case shrinks to a small, readable one. ``run_spec(spec)`` builds it, runs it
(bounded in time) and checks what the runtime promises, with books kept by the test
stages themselves (not by the runtime's counters):

- the run ends (a pause is resumed or skipped as the spec says) or else a stall notice
  names why; a failed run raises ``gs.PipelineError``, never a bare exception group;
- ``gs.check_balance`` holds; every failure the spec injected and the stage did not
  absorb (``retry=``) is in ``p.failures``, and nothing else is;
- no consumer gets an event twice, and no event of a demand or partition dispatcher
  reaches two consumers;
- along every path from a source, each consumer gets the events in order (unless a stage
  on the path is unordered by design: ``gs.map(ordered=False)``, a ConcurrentConsumer);
- a run without faults, stops, drops or streams delivers every event exactly where its
  dispatchers say: one consumer (demand), every consumer its selector accepts
  (broadcast), the consumer of its partition, or none (a discard).

An event is ``(source, seq, path)``: ``path`` lists the producer-consumers it went
through, so a consumer knows which producer sent it.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
from hypothesis import strategies as st

import genstage_nb as gs

#: Each run must end within this many seconds (its stall notice comes after 0.3 s).
BOUND = 20.0
EXPAND = 4  # an "expand" step makes up to this many events of one (seq * EXPAND + j)


class Injected(Exception):
    """The failure the generator injects."""


# -- the spec ------------------------------------------------------------------------


@dataclass
class Fault:
    hook: str  # init, handle_demand, handle_events, handle_event, handle_subscribe, ...
    at: int  # the call of that hook that raises first (1 = the first call)
    times: int  # how many calls in a row raise


@dataclass
class Node:
    name: str
    role: str  # source, pc, sink
    kind: str  # source: exact / less / more; pc: plain / map / batch / executor; sink: ...
    asynchronous: bool = False
    transform: str = "same"  # pc: same / filter / expand
    concurrency: int = 1
    ordered: bool = True
    dispatcher: str = "demand"  # demand / broadcast / partition
    discards: int = 0  # partition: every seq % discards == 0 is discarded (0: none)
    buffer_size: int | None = -1  # -1: the default
    buffer_keep: str = "last"
    rate: tuple | None = None
    restart: str = "temporary"
    retry: bool = False
    fault: Fault | None = None
    n: int = 0  # source: how many events
    accumulate: bool = False  # source: demand="accumulate", switched to forward later
    total: bool = False  # source: says its total (total=n), for the progress


@dataclass
class Link:
    producer: str
    consumer: str
    max_demand: int
    min_demand: int | None
    selector: int = 0  # broadcast: keep seq % selector != 0 (0: every event)
    partition: int | None = None


@dataclass
class Spec:
    nodes: list[Node]
    links: list[Link]
    on_failure: str = "stop"
    on_pause: str = "resume"  # resume / skip
    stop_after: int | None = None  # stop() once the consumers got this many events
    stop_timeout: float = 1.0
    stream: tuple | None = None  # (producer, after events, read, max_demand)
    late: tuple | None = None  # (producer, after events, unlink after events or None)
    peek: str | None = None  # a producer peeked at from before the run on
    checkpoint: float | None = None  # checkpoint_every (seconds), with checkpoint= on

    def node(self, name: str) -> Node:
        """The node of that name (a plain sink for one linked during the run)."""
        return next((n for n in self.nodes if n.name == name), Node(name, "sink", "plain"))

    def consumers_of(self, name: str) -> list[Link]:
        return [link for link in self.links if link.producer == name]

    def producers_of(self, name: str) -> list[Link]:
        return [link for link in self.links if link.consumer == name]


# -- drawing specs -------------------------------------------------------------------

HOOKS = {
    "source": ["init", "handle_demand", "handle_info"],
    "pc": ["init", "handle_events", "handle_subscribe", "handle_cancel"],
    "sink": ["init", "handle_events", "handle_subscribe", "handle_cancel"],
}


@st.composite
def pipelines(draw: Any, faults: bool = True) -> Spec:
    n_sources = draw(st.integers(1, 2))
    n_pcs = draw(st.integers(0, 3))
    n_sinks = draw(st.integers(1, 3))
    nodes: list[Node] = []
    for i in range(n_sources):
        nodes.append(
            Node(
                f"s{i}",
                "source",
                draw(st.sampled_from(["exact", "exact", "less", "more"])),
                asynchronous=draw(st.booleans()),
                n=draw(st.integers(0, 150)),
                accumulate=draw(st.integers(0, 7)) == 0,
            )
        )
        nodes[-1].total = nodes[-1].kind == "exact" and draw(st.booleans())
    for i in range(n_pcs):
        kind = draw(st.sampled_from(["plain", "plain", "map", "batch", "executor"]))
        node = Node(
            f"p{i}", "pc", kind, transform=draw(st.sampled_from(["same", "filter", "expand"]))
        )
        if kind == "plain":
            node.asynchronous = draw(st.booleans())
            node.concurrency = draw(st.sampled_from([1, 1, 2, 4])) if node.asynchronous else 1
        elif kind == "map":
            node.asynchronous = draw(st.booleans())
            node.concurrency = draw(st.sampled_from([1, 3, 8]))
            node.ordered = draw(st.sampled_from([True, True, False]))
            node.transform = draw(st.sampled_from(["same", "filter"]))  # one result per event
        elif kind == "executor":
            node.concurrency = draw(st.sampled_from([1, 2]))
        if draw(st.integers(0, 9)) == 0:
            node.rate = (draw(st.sampled_from([50, 200])), 0.01)
        nodes.append(node)
    for i in range(n_sinks):
        nodes.append(
            Node(
                f"c{i}",
                "sink",
                draw(st.sampled_from(["plain", "plain", "concurrent", "manual"])),
                asynchronous=draw(st.booleans()),
            )
        )
    # Links: each pc and sink takes one or two earlier producers.
    links: list[Link] = []
    producers = [n.name for n in nodes if n.role == "source"]
    for node in nodes:
        if node.role == "source":
            continue
        k = 1 if node.kind == "manual" else draw(st.integers(1, min(2, len(producers))))
        chosen = draw(st.permutations(producers))[:k]
        for name in chosen:
            links.append(_link(draw, name, node.name))
        if node.role == "pc":
            producers.append(node.name)
    sinks = [n.name for n in nodes if n.role == "sink" and n.kind != "manual"] or [
        n.name for n in nodes if n.role == "sink"
    ]
    for name in producers:
        if not any(link.producer == name for link in links):
            later = [
                n.name
                for n in nodes[[n.name for n in nodes].index(name) + 1 :]
                if n.role != "source" and n.kind != "manual"
            ]
            links.append(_link(draw, name, draw(st.sampled_from(later or sinks))))
    spec = Spec(nodes, links)
    for node in nodes:
        if node.kind == "manual" and len(spec.producers_of(node.name)) > 1:
            node.kind = "plain"  # (manual demand here asks on its one subscription)
    # Dispatchers, buffers.
    for name in producers:
        node = spec.node(name)
        outs = spec.consumers_of(name)
        node.dispatcher = draw(st.sampled_from(["demand", "demand", "broadcast", "partition"]))
        if node.dispatcher == "partition":
            node.discards = draw(st.sampled_from([0, 0, 3, 5]))
            for i, link in enumerate(outs):
                link.partition = i
        elif node.dispatcher == "broadcast":
            for link in outs:
                link.selector = draw(st.sampled_from([0, 0, 2, 3]))
        if draw(st.integers(0, 5)) == 0:
            node.buffer_size = draw(st.sampled_from([None, 5, 50, 10_000]))
            node.buffer_keep = draw(st.sampled_from(["first", "last"]))
    # Faults and what the pipeline does about them.
    if faults and draw(st.integers(0, 2)) == 0:
        node = draw(st.sampled_from([n for n in nodes if n.kind != "manual"]))
        hooks = list(HOOKS[node.role])
        if node.kind == "concurrent":
            hooks[hooks.index("handle_events")] = "handle_event"
        if node.kind == "map":
            hooks = ["handle_events"]  # its function, per event
        hook = draw(st.sampled_from(hooks))
        node.fault = Fault(hook, draw(st.integers(1, 3)), draw(st.integers(1, 2)))
        node.restart = draw(st.sampled_from(["temporary", "permanent"]))
        # A failed handle_info loses the rest of a "less" producer's demand unless retried
        # (by GenStage's rules a lost message is lost demand): it is always retried.
        node.retry = hook == "handle_info" or draw(st.booleans())
        spec.on_failure = draw(st.sampled_from(["stop", "continue", "pause"]))
        spec.on_pause = draw(st.sampled_from(["resume", "skip"]))
    if draw(st.integers(0, 5)) == 0:
        spec.stop_after = draw(st.integers(0, 200))
        spec.stop_timeout = draw(st.sampled_from([0.0, 0.05, 1.0]))
    if draw(st.integers(0, 5)) == 0:
        # (a stream takes no partition=: a partition producer refuses it, with an error)
        open_on = [name for name in producers if spec.node(name).dispatcher != "partition"]
        if open_on:
            spec.stream = (
                draw(st.sampled_from(open_on)),
                draw(st.integers(0, 100)),
                draw(st.integers(1, 20)),
                draw(st.sampled_from([1, 5, 100])),
            )
    peekable = [
        name
        for name in producers
        if spec.node(name).role == "source"
        or (spec.node(name).kind == "plain" and spec.node(name).concurrency == 1)
    ]
    if draw(st.integers(0, 3)) == 0:
        spec.peek = draw(st.sampled_from(peekable))
    if draw(st.integers(0, 3)) == 0:  # durable runs: checkpoints while it runs
        spec.checkpoint = draw(st.sampled_from([0.001, 0.01, 0.05]))
    if draw(st.integers(0, 5)) == 0:
        open_on = [name for name in producers if spec.node(name).dispatcher != "partition"]
        if open_on:
            spec.late = (
                draw(st.sampled_from(open_on)),
                draw(st.integers(0, 60)),
                draw(st.sampled_from([None, 0, 10])),
            )
    return spec


def _link(draw: Any, producer: str, consumer: str) -> Link:
    max_demand = draw(st.sampled_from([1, 2, 3, 10, 50, 1000]))
    min_demand = draw(st.sampled_from([None, 0, max_demand - 1])) if max_demand > 1 else 0
    return Link(producer, consumer, max_demand, min_demand)


# -- the stages ----------------------------------------------------------------------


class Faults:
    """Counts a stage's hook calls and raises where the spec says."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault
        self.calls: dict[str, int] = {}
        self.raised = 0

    def check(self, hook: str) -> None:
        fault = self.fault
        if fault is None or fault.hook != hook:
            return
        n = self.calls[hook] = self.calls.get(hook, 0) + 1
        if fault.at <= n < fault.at + fault.times:
            self.raised += 1
            raise Injected(f"{hook} call {n}")


class Books:
    """What the test stages did, kept by themselves."""

    def __init__(self) -> None:
        self.emitted: dict[str, list] = {}  # producer -> events it made (before dispatch)
        self.received: dict[str, list] = {}  # consumer -> events handed to its hook

    def emit(self, name: str, events: list) -> list:
        self.emitted.setdefault(name, []).extend(events)
        return events

    def receive(self, name: str, events: Any) -> None:
        self.received.setdefault(name, []).extend(events)


def _options(node: Node) -> dict:
    options: dict[str, Any] = {"name": node.name, "restart": node.restart}
    if node.restart == "permanent":
        options["max_restarts"] = 10
    if node.retry and node.fault is not None:
        options["retry"] = gs.Retry(attempts=node.fault.times + 1, on=(Injected,), backoff=0)
    return options


def _producing(node: Node, spec: Spec) -> dict:
    options: dict[str, Any] = {}
    if node.dispatcher == "broadcast":
        options["dispatcher"] = gs.BroadcastDispatcher()
    elif node.dispatcher == "partition":
        k = len(spec.consumers_of(node.name))
        discards = node.discards

        def hash_(event: tuple, k: int = k, discards: int = discards) -> int | None:
            seq = event[1]
            if discards and seq % discards == 0:
                return None
            return (seq * 7 + len(event[2])) % k

        options["dispatcher"] = gs.PartitionDispatcher(partitions=k, hash=hash_)
    if node.buffer_size != -1:
        options["buffer_size"] = node.buffer_size
        options["buffer_keep"] = node.buffer_keep
    if node.rate is not None and node.role == "pc":
        options["rate_limit"] = node.rate
    return options


def make_source(node: Node, spec: Spec, books: Books) -> gs.Stage:
    faults = Faults(node.fault)
    options = {**_options(node), **_producing(node, spec)}
    if node.accumulate:
        options["demand"] = "accumulate"
    if node.total:
        options["total"] = node.n

    class Source(gs.Producer):
        def init(self) -> None:
            faults.check("init")
            # A restart goes on where it was (a source reading from a position it keeps).
            self.next = getattr(self, "next", 0)

        def _take(self, k: int) -> list:
            stop = min(self.next + k, node.n)
            events = [(node.name, seq, ()) for seq in range(self.next, stop)]
            self.next = stop
            if self.next >= node.n:
                self.finish()
            return books.emit(node.name, events)

        def _demand(self, demand: int) -> list:
            faults.check("handle_demand")
            if node.kind == "more":
                return self._take(2 * demand)
            if node.kind == "less" and demand > 1:
                self.send(("more", demand - demand // 2))  # the rest, by handle_info
                return self._take(demand // 2)
            return self._take(demand)

        def handle_info(self, message: Any) -> list:
            faults.check("handle_info")
            return self._take(message[1])

    if node.asynchronous:

        async def handle_demand(self: Any, demand: int) -> list:
            await anyio.sleep(0)
            return self._demand(demand)

    else:

        def handle_demand(self: Any, demand: int) -> list:
            return self._demand(demand)

    Source.handle_demand = handle_demand
    stage = Source(**options)
    stage._faults = faults
    return stage


def transform(node: Node, events: list) -> list:
    out = []
    for src, seq, path in events:
        path = (*path, node.name)
        if node.transform == "same":
            out.append((src, seq, path))
        elif node.transform == "filter":
            if seq % 3:
                out.append((src, seq, path))
        else:
            out.extend((src, seq * EXPAND + j, path) for j in range(seq % EXPAND))
    return out


def make_pc(node: Node, spec: Spec, books: Books, executor: Any) -> list[gs.Stage]:
    """The stages of one producer-consumer of the spec (a batcher is two: the batcher and
    a flatten step that tags the events)."""
    faults = Faults(node.fault)
    options = {**_options(node), **_producing(node, spec)}
    name = node.name

    class Hooks:
        def init(self) -> None:
            faults.check("init")

        def handle_subscribe(self, subscription: Any) -> None:
            faults.check("handle_subscribe")

        def handle_cancel(self, subscription: Any, reason: Any) -> None:
            faults.check("handle_cancel")

    if node.kind == "map":

        def one(event: tuple) -> tuple | None:
            faults.check("handle_events")
            books.receive(name, [event])
            out = transform(node, [event])
            books.emit(name, out)
            return out[0] if out else None

        if node.asynchronous:

            async def fn(event: tuple) -> tuple | None:
                result = one(event)  # (recorded as called: calls at once end in any order)
                await anyio.sleep(0)
                return result

        else:
            fn = one
        if node.transform == "filter":
            # gs.map sends a result per event: the filtered ones go as None, dropped by a
            # plain step (of the same node, so its path is still this node's).
            pool = {} if node.asynchronous or node.concurrency == 1 else {"executor": executor}
            mapped = gs.map(
                fn, concurrency=node.concurrency, ordered=node.ordered, **_options(node), **pool
            )
            keep = gs.producer_consumer(
                lambda events: [e for e in events if e is not None],
                name=f"{name}~keep",
                **_producing(node, spec),
            )
            mapped._faults = faults
            return [mapped, keep]
        if not node.asynchronous and node.concurrency > 1:
            options["executor"] = executor  # a sync function: calls at once on a pool
        mapped = gs.map(fn, concurrency=node.concurrency, ordered=node.ordered, **options)
        mapped._faults = faults
        return [mapped]

    if node.kind == "batch":
        batcher = gs.batcher(3, timeout=0.01, name=f"{name}~batch")

        class Flatten(Hooks, gs.ProducerConsumer):
            def handle_events(self, lists: list) -> list:
                faults.check("handle_events")
                events = [e for batch in lists for e in batch]
                books.receive(name, events)
                return books.emit(name, transform(node, events))

        flatten = Flatten(**options)
        flatten._faults = faults
        return [batcher, flatten]

    if node.kind == "executor":

        def handle(events: list) -> list:
            faults.check("handle_events")
            books.receive(name, events)
            return books.emit(name, transform(node, events))

        class OnPool(Hooks, gs.ProducerConsumer):
            pass

        stage = OnPool(executor=executor, concurrency=node.concurrency, **options)
        stage.handle_events = handle  # a plain function: runs on the pool's threads
        stage._faults = faults
        return [stage]

    class Plain(Hooks, gs.ProducerConsumer):
        def _handle(self, events: list) -> list:
            faults.check("handle_events")
            books.receive(name, events)
            return books.emit(name, transform(node, events))

    if node.asynchronous:

        async def handle_events(self: Any, events: list) -> list:
            out = self._handle(events)  # (recorded as called: batches at once end in any order)
            await anyio.sleep(0)
            return out

        options["concurrency"] = node.concurrency
    else:

        def handle_events(self: Any, events: list) -> list:
            return self._handle(events)

    Plain.handle_events = handle_events
    stage = Plain(**options)
    stage._faults = faults
    return [stage]


def make_sink(node: Node, spec: Spec, books: Books) -> gs.Stage:
    faults = Faults(node.fault)
    options = _options(node)
    name = node.name

    if node.kind == "concurrent":

        class Each(gs.ConcurrentConsumer):
            def init(self) -> None:
                faults.check("init")

            def handle_subscribe(self, subscription: Any) -> None:
                faults.check("handle_subscribe")

            def handle_cancel(self, subscription: Any, reason: Any) -> None:
                faults.check("handle_cancel")

            async def handle_event(self, event: tuple) -> None:
                faults.check("handle_event")
                if node.asynchronous:
                    await anyio.sleep(0)
                books.receive(name, [event])

        stage = Each(**options)
        stage._faults = faults
        return stage

    class Sink(gs.Consumer):
        def init(self) -> None:
            faults.check("init")
            self.subscription = None

        def handle_subscribe(self, subscription: Any) -> str | None:
            faults.check("handle_subscribe")
            if node.kind == "manual":
                self.subscription = subscription
                subscription.ask(subscription.max_demand)
                return "manual"
            return None

        def handle_cancel(self, subscription: Any, reason: Any) -> None:
            faults.check("handle_cancel")

        def _handle(self, events: list) -> None:
            faults.check("handle_events")
            books.receive(name, events)
            if self.subscription is not None and self.subscription.active:
                self.subscription.ask(len(events))

    if node.asynchronous:

        async def handle_events(self: Any, events: list) -> None:
            await anyio.sleep(0)
            self._handle(events)

    else:

        def handle_events(self: Any, events: list) -> None:
            self._handle(events)

    Sink.handle_events = handle_events
    stage = Sink(**options)
    stage._faults = faults
    return stage


# -- running and checking ------------------------------------------------------------


@dataclass
class Outcome:
    pipeline: gs.Pipeline
    books: Books
    error: BaseException | None = None
    paused: list = field(default_factory=list)  # (stage, decision)
    stream_got: list = field(default_factory=list)
    stopped: bool = False
    stalls: list = field(default_factory=list)  # stall notices that ended the run
    late: bool = False  # a sink was linked during the run
    started: anyio.Event = field(default_factory=anyio.Event)


def build(spec: Spec, books: Books, executor: Any, folder: str = "") -> tuple[gs.Pipeline, dict]:
    durable = {}
    if spec.checkpoint is not None:
        durable = {
            "checkpoint": os.path.join(folder, "run.db"),
            "checkpoint_every": spec.checkpoint,
        }
    p = gs.Pipeline(on_failure=spec.on_failure, stall_after=0.1, metrics_interval=0.05, **durable)
    ends: dict[str, tuple[gs.Stage, gs.Stage]] = {}  # node -> (first stage, last stage)
    for node in spec.nodes:
        if node.role == "source":
            stages = [make_source(node, spec, books)]
        elif node.role == "pc":
            stages = make_pc(node, spec, books, executor)
        else:
            stages = [make_sink(node, spec, books)]
        for stage in stages:
            p.add(stage)
        for a, b in zip(stages, stages[1:], strict=False):
            p.link(a, b, max_demand=10)
        ends[node.name] = (stages[0], stages[-1])
    for link in spec.links:
        options: dict[str, Any] = {"max_demand": link.max_demand, "min_demand": link.min_demand}
        if link.partition is not None:
            options["partition"] = link.partition
        if link.selector:
            m = link.selector
            options["selector"] = lambda e, m=m: e[1] % m != 0
        p.link(ends[link.producer][1], ends[link.consumer][0], **options)
    if spec.peek is not None:
        assert p.peek(ends[spec.peek][1]) == []  # kept from now on
    return p, ends


async def run_spec(spec: Spec) -> Outcome:
    """Build ``spec``, run it within ``BOUND`` seconds, and check it (see the module doc)."""
    books = Books()
    with ThreadPoolExecutor(2) as executor, tempfile.TemporaryDirectory() as folder:
        p, ends = build(spec, books, executor, folder)
        outcome = Outcome(p, books)
        try:
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_run, outcome)
                    if spec.on_failure == "pause":
                        tg.start_soon(_go_on, outcome, spec)
                    if spec.stop_after is not None:
                        tg.start_soon(_stop_later, outcome, spec)
                    if spec.stream is not None:
                        tg.start_soon(_stream, outcome, spec, ends)
                    tg.start_soon(_watch_stalls, outcome, spec)
                    for node in spec.nodes:
                        if node.accumulate:
                            tg.start_soon(_forward_later, outcome, p.stages[node.name])
                    if spec.late is not None:
                        tg.start_soon(_link_later, outcome, spec, ends, books)
        except TimeoutError:
            stalls = [str(w) for w in p.warnings if isinstance(w, gs.Stall)]
            raise AssertionError(
                f"the run did not end within {BOUND} s; status {p.status}; stall notices: "
                f"{stalls or 'none'}"
            ) from None
        check(spec, outcome)
        _check_checkpoints(spec, outcome)
    return outcome


def _check_checkpoints(spec: Spec, outcome: Outcome) -> None:
    """With checkpoints: a run that ended with every stage done has its last checkpoint,
    which counts what every stage handled (a source: made)."""
    p = outcome.pipeline
    if spec.checkpoint is None or outcome.error is not None or outcome.stopped or outcome.late:
        return
    if p.failures or spec.stream is not None:
        return
    saved = p.checkpoints
    assert len(saved), "no checkpoint after a run that ended with every stage done"
    last = saved.iloc[-1]
    for name, proc in p._procs.items():
        column = f"{name} (stage)" if name in ("id", "time", "took", "size", "rows") else name
        done = proc.counters.made if proc.kind == "producer" else proc.counters.handled
        assert last[column] == done, (name, last[column], done)


async def _run(outcome: Outcome) -> None:
    outcome.started.set()  # (run() is running when the others look: it sets it at once)
    try:
        await outcome.pipeline.run()
    except gs.PipelineError as error:
        outcome.error = error
    except BaseException as error:  # noqa: BLE001 - a bare group is what we look for
        if isinstance(error, BaseExceptionGroup):
            raise AssertionError(f"run() raised a bare exception group: {error!r}") from error
        raise


async def _go_on(outcome: Outcome, spec: Spec) -> None:
    p = outcome.pipeline
    while True:
        failure = await p.wait_paused()
        if failure is None:
            return
        decision = spec.on_pause if failure.hook != "init" else "resume"
        outcome.paused.append((failure.stage, decision))
        getattr(p, decision)(failure.stage)
        await anyio.sleep(0)


async def _stop_later(outcome: Outcome, spec: Spec) -> None:
    p, books = outcome.pipeline, outcome.books
    await outcome.started.wait()
    while p.running:
        if sum(len(v) for v in books.received.values()) >= spec.stop_after:
            outcome.stopped = True
            await p.stop(timeout=spec.stop_timeout)
            return
        await anyio.sleep(0.001)


async def _forward_later(outcome: Outcome, stage: gs.Stage) -> None:
    """demand="accumulate": the demand is held until the mode goes to forward."""
    await outcome.started.wait()
    await anyio.sleep(0.002)
    if outcome.pipeline.running:
        stage.demand_mode = "forward"


async def _link_later(outcome: Outcome, spec: Spec, ends: dict, books: Books) -> None:
    """A sink linked while the pipeline runs (and unlinked again, then the run stopped:
    a consumer left without producer would wait for ever, as a notebook's may)."""
    p = outcome.pipeline
    name, after, unlink_after = spec.late
    await outcome.started.wait()
    while sum(len(v) for v in books.received.values()) < after:
        if not p.running:
            return
        await anyio.sleep(0.001)
    producer = ends[name][1]
    if not p.running or producer._process is None or producer._process.stopped:
        return
    late = p.add(gs.consumer(lambda events: books.receive("late", events), name="late"))
    sub = p.link(producer, late, max_demand=5)
    outcome.late = True
    if unlink_after is None:
        return
    start = len(books.received.get("late", []))
    while len(books.received.get("late", [])) - start < unlink_after and p.running:
        if late._process is None or late._process.stopped:
            return
        await anyio.sleep(0.001)
    if p.running and sub in p.subscriptions:
        outcome.stopped = True  # (the late sink is left without producer: a stall by design)
        p.unlink(sub)
        await p.stop(timeout=0.5)


async def _watch_stalls(outcome: Outcome, spec: Spec) -> None:
    """With on_failure="continue", a stage that failed for good may leave others that
    can never finish (a partition without its consumer): the stall notice names it, and
    the run is stopped. Any other stall fails the check."""
    p = outcome.pipeline
    await outcome.started.wait()
    while p.running and not outcome.stopped:
        stalls = [w for w in p.warnings if isinstance(w, gs.Stall) and w.active]
        if stalls:
            outcome.stalls.append(str(stalls[0]))
            await p.stop(timeout=0)
            return
        await anyio.sleep(0.01)


async def _stream(outcome: Outcome, spec: Spec, ends: dict) -> None:
    p, books = outcome.pipeline, outcome.books
    name, after, read, max_demand = spec.stream
    stage = ends[name][1]
    await outcome.started.wait()
    while sum(len(v) for v in books.received.values()) < after:
        if not p.running:
            return
        await anyio.sleep(0.001)
    if not p.running or stage._process is None or stage._process.stopped:
        return
    try:
        async with p.stream(stage, max_demand=max_demand) as events:
            async for event in events:
                outcome.stream_got.append(event)
                if len(outcome.stream_got) >= read:
                    break
    except Injected:
        pass  # the stage failed: its stream raises that failure


def check(spec: Spec, outcome: Outcome) -> None:
    p, books = outcome.pipeline, outcome.books
    if outcome.stalls:
        for_good = [
            name for name, records in p.failures.items() if any(not r.restarted for r in records)
        ]
        assert spec.on_failure == "continue" and for_good, f"stalled: {outcome.stalls}"
    gs.check_balance(p)
    _check_failures(spec, outcome)
    receivers = {name: list(events) for name, events in books.received.items()}
    for name, events in receivers.items():
        if _calls_repeat(spec.node(name), outcome):
            continue
        assert len(set(events)) == len(events), f"{name} got an event twice: {_twice(events)}"
    if outcome.stream_got:
        got = outcome.stream_got
        assert len(set(got)) == len(got), f"the stream got an event twice: {_twice(got)}"
    _check_order(spec, receivers, outcome)
    _check_one_consumer(spec, receivers, outcome)
    clean = (
        not any(node.fault for node in spec.nodes)
        and spec.stop_after is None
        and not outcome.stream_got
        and spec.stream is None
        and spec.late is None
        and not p.metrics.totals()["dropped"].fillna(0).sum()
    )
    if clean:
        assert outcome.error is None, f"a clean run failed: {outcome.error!r}"
        _check_exact(spec, receivers)
        _check_progress_and_peek(spec, outcome)


def _check_progress_and_peek(spec: Spec, outcome: Outcome) -> None:
    """A clean run: the progress counts what the sinks got and is done (with a total,
    the sum of the sources'); a peeked producer shows the last events it made."""
    p, books = outcome.pipeline, outcome.books
    progress = p.progress()
    sinks = [node.name for node in spec.nodes if node.role == "sink"]
    got = sum(len(books.received.get(name, [])) for name in sinks)
    assert progress.done == got, f"progress {progress}: the sinks got {got}"
    assert progress.state == "done", progress
    sources = [node for node in spec.nodes if node.role == "source"]
    if all(node.total for node in sources):
        total = sum(node.n for node in sources)
        assert (progress.total, progress.fraction) == (total, 1.0), f"{progress}: {total}"
    else:
        assert (progress.total, progress.fraction) == (None, None), progress
    if spec.peek is not None:
        made = books.emitted.get(spec.peek, [])
        assert p.peek(spec.peek, 5) == made[-5:], f"peek at {spec.peek}"


def _calls_repeat(node: Node, outcome: Outcome) -> bool:
    """A stage whose work goes out as jobs (gs.map, an executor, async concurrency)
    records calls, not deliveries: after a restart its jobs in flight are sent again,
    after a resume its failed job, so a call may repeat (its first result was dropped)."""
    jobs = node.kind in ("map", "executor") or node.concurrency > 1
    failed = node.name in outcome.pipeline.failures or any(
        stage == node.name for stage, _ in outcome.paused
    )
    return jobs and (failed or node.fault is not None and node.fault.hook == "handle_events")


def _twice(events: list) -> list:
    seen: set = set()
    return [e for e in events if e in seen or seen.add(e)][:5]


def _check_failures(spec: Spec, outcome: Outcome) -> None:
    p = outcome.pipeline
    for node in spec.nodes:
        faults = getattr(p.stages.get(node.name), "_faults", None)
        raised = faults.raised if faults is not None else 0
        records = p.failures.get(node.name, [])
        absorbed = 0
        if node.retry and _retried(node):
            absorbed = raised  # retried until it succeeds (attempts = times + 1)
        resumed = sum(
            1 for stage, decision in outcome.paused if stage == node.name and decision == "resume"
        )
        expected = raised - absorbed - resumed
        on_pool = node.kind == "executor" or (
            node.kind == "map" and not node.asynchronous and node.concurrency > 1
        )
        ended = outcome.stopped or any(not r.restarted and not r.paused for r in records)
        if on_pool and ended and len(records) < expected:
            # A call still running on the pool when its stage ended (failed for good, or
            # cancelled by a stop's timeout) is abandoned: its failure comes too late.
            expected = len(records)
        assert len(records) == expected, (
            f"{node.name}: {raised} failures injected ({absorbed} retried, {resumed} "
            f"resumed), {len(records)} recorded: {records}"
        )
        for record in records:
            assert isinstance(record.exception, Injected), f"{node.name}: {record.exception!r}"
    for name in p.failures:
        assert name in {n.name for n in spec.nodes}, f"an unexpected failure in {name}"
    for_good = [
        name
        for name, records in p.failures.items()
        if any(not r.restarted and not r.paused for r in records)
    ]
    if for_good:
        assert outcome.error is not None, f"{for_good} failed for good, run() did not raise"
        assert set(outcome.error.failures) == set(for_good), (outcome.error.failures, for_good)
    elif outcome.error is not None:
        raise AssertionError(f"run() raised with no failure for good: {outcome.error!r}")


def _retried(node: Node) -> bool:
    """Whether ``retry=`` covers the faulty hook (not the subscription hooks, not a
    call on an executor: a batch, or gs.map's function)."""
    hook = node.fault.hook if node.fault is not None else ""
    if hook in ("handle_subscribe", "handle_cancel"):
        return False
    on_pool = node.kind == "executor" or (
        node.kind == "map" and not node.asynchronous and node.concurrency > 1
    )
    return not (on_pool and hook == "handle_events")


def _ordered_path(spec: Spec, src: str, path: tuple, sink: str) -> bool:
    for name in (*path, sink):
        node = spec.node(name)
        if (node.kind == "map" and not node.ordered) or node.kind == "concurrent":
            return False
    return True


def _check_order(spec: Spec, receivers: dict, outcome: Outcome) -> None:
    for name, events in receivers.items():
        if _calls_repeat(spec.node(name), outcome):
            continue
        last: dict[tuple, int] = {}
        for src, seq, path in events:
            if not _ordered_path(spec, src, path, name):
                continue
            key = (src, path)
            if key in last:
                assert seq > last[key], (
                    f"{name} got {(src, seq, path)} after seq {last[key]} of the same path"
                )
            last[key] = seq


def _sender(event: tuple) -> str:
    src, _, path = event
    return path[-1] if path else src


def _check_one_consumer(spec: Spec, receivers: dict, outcome: Outcome) -> None:
    """An event of a demand or partition dispatcher reaches one consumer at most."""
    for node in spec.nodes:
        if node.role == "sink" or node.dispatcher == "broadcast":
            continue
        seen: dict[tuple, str] = {}
        takers = [link.consumer for link in spec.consumers_of(node.name)]
        streams = []
        if spec.stream and spec.stream[0] == node.name:
            streams.append(("<stream>", outcome.stream_got))
        if spec.late and spec.late[0] == node.name:
            streams.append(("late", receivers.get("late", [])))
        for taker, events in [(t, receivers.get(t, [])) for t in takers] + streams:
            if taker not in ("<stream>", "late") and _calls_repeat(spec.node(taker), outcome):
                events = list(dict.fromkeys(events))  # (a repeated call is not a delivery)
            for event in events:
                if _sender(event) != node.name:
                    continue
                assert event not in seen, (
                    f"{event} of {node.name} went to {seen[event]} and {taker}"
                )
                seen[event] = taker


def _check_exact(spec: Spec, receivers: dict) -> None:
    """Nothing lost: each event made went exactly where its dispatcher sends it."""
    for node in spec.nodes:
        if node.role == "sink":
            continue
        outs = spec.consumers_of(node.name)
        got = {
            link.consumer: {e for e in receivers.get(link.consumer, []) if _sender(e) == node.name}
            for link in outs
        }
        made = _made(spec, node, receivers)
        for event in made:
            takers = {link.consumer for link in outs if event in got[link.consumer]}
            if node.dispatcher == "demand":
                want = 1
                assert len(takers) == want, f"{event} of {node.name} reached {takers or 'nobody'}"
            elif node.dispatcher == "broadcast":
                wanted = {
                    link.consumer for link in outs if not link.selector or event[1] % link.selector
                }
                assert takers == wanted, f"{event} of {node.name} reached {takers}, not {wanted}"
            else:
                k = len(outs)
                seq = event[1]
                if node.discards and seq % node.discards == 0:
                    assert not takers, f"{event} of {node.name} was discarded, reached {takers}"
                else:
                    part = (seq * 7 + len(event[2])) % k
                    wanted = {link.consumer for link in outs if link.partition == part}
                    assert takers == wanted, (
                        f"{event} of {node.name} reached {takers}, not {wanted}"
                    )
        total = sum(len(v) for v in got.values())
        assert total <= len(made) * max(1, len(outs)), f"{node.name}: more received than made"


def _made(spec: Spec, node: Node, receivers: dict) -> list:
    """The events ``node`` made, from what it received (a pc) or its count (a source)."""
    if node.role == "source":
        return [(node.name, seq, ()) for seq in range(node.n)]
    return transform(node, receivers.get(node.name, []))


def describe(spec: Spec) -> str:
    lines = [
        f"on_failure={spec.on_failure} on_pause={spec.on_pause} stop_after={spec.stop_after} stream={spec.stream}",
        f"checkpoint_every={spec.checkpoint}",
    ]
    lines += [f"  {node}" for node in spec.nodes]
    lines += [f"  {link}" for link in spec.links]
    return "\n".join(lines)


__all__ = ["BOUND", "Spec", "describe", "pipelines", "run_spec"]
