"""``Pipeline``: stages held as a networkx graph, linked, run and supervised.

The graph's nodes are stage names (attributes ``stage`` and ``kind``), its edges carry
the ``subscription``. ``run()`` starts one task per stage in an anyio task group and
returns when every stage has stopped; ``start()`` does the same in the background of a
running asyncio loop (a notebook kernel). Failures are recorded per stage; a stage that
fails for good stops the pipeline (``on_failure="stop"``) or only its subscribers react
(``on_failure="continue"``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Generator
from typing import Any

import anyio
import networkx as nx
import sniffio

from .core.dispatchers import BroadcastDispatcher, PartitionDispatcher
from .core.errors import Failure, PipelineError
from .core.process import Process
from .core.stage import Stage
from .core.subscription import Subscription
from .metrics import Metrics
from .watchdog import SlowHandler, Watchdog, blocking_stage

log = logging.getLogger("genstage_nb")

ON_FAILURE = ("stop", "continue")


def _check_seconds(option: str, value: Any, none_means: str) -> None:
    """A Pipeline option that is a number of seconds > 0, or None."""
    if value is not None and (
        not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0
    ):
        raise ValueError(
            f"Pipeline: {option} must be a number of seconds > 0 (or None: {none_means}), "
            f"got {value!r}"
        )


class Pipeline:
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
    subscribers react, by their cancel mode, and ``run()`` raises at the end);
    ``metrics_interval`` (seconds between metric samples, default 0.25; ``None``
    samples only at the start and the end of a run); ``slow_handler`` (seconds a stage
    hook may hold the event loop before a ``SlowHandler`` warning names it in
    ``warnings`` and in the log, default 1.0; ``None`` turns the watchdog off).

    After a run: ``failures`` (stage name -> list of ``Failure``), ``error`` (the
    ``PipelineError`` of the last run, or None) and ``warnings`` (``SlowHandler``
    records, newest last).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        on_failure: str = "stop",
        metrics_interval: float | None = 0.25,
        slow_handler: float | None = 1.0,
    ) -> None:
        if on_failure not in ON_FAILURE:
            raise ValueError(
                f"Pipeline: on_failure must be 'stop' or 'continue', got {on_failure!r}"
            )
        _check_seconds("metrics_interval", metrics_interval, "no sampling")
        _check_seconds("slow_handler", slow_handler, "no watchdog")
        self.name = name
        self.slow_handler = None if slow_handler is None else float(slow_handler)
        self.warnings: list[SlowHandler] = []
        self.on_failure = on_failure
        self.metrics_interval = None if metrics_interval is None else float(metrics_interval)
        self.metrics = Metrics(self)
        self._graph = nx.DiGraph()
        self._procs: dict[str, Process] = {}
        self.failures: dict[str, list[Failure]] = {}
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
        self.error: PipelineError | None = None

    # -- building ------------------------------------------------------------------

    @property
    def graph(self) -> nx.DiGraph:
        """The stages and subscriptions as a ``networkx.DiGraph`` (do not mutate).

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable([1]), name="src")
        >>> _ = p.link(src, p.add(gs.consumer(len), name="sink"))
        >>> list(p.graph.edges), p.graph.nodes["src"]["kind"]
        ([('src', 'sink')], 'producer')
        """
        return self._graph

    @property
    def stages(self) -> dict[str, Stage]:
        """Stage name -> stage, in the order they were added.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> _ = p.add(gs.from_iterable([1]), name="src")
        >>> list(p.stages)
        ['src']
        """
        return {name: data["stage"] for name, data in self._graph.nodes(data=True)}

    @property
    def subscriptions(self) -> list[Subscription]:
        """Every subscription (edge) of the pipeline.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable([1]), name="src")
        >>> _ = p.link(src, p.add(gs.consumer(len), name="sink"))
        >>> p.subscriptions  # doctest: +ELLIPSIS
        [<Subscription src -> sink max_demand=1000 min_demand=500 ...>]
        """
        return [data["subscription"] for _, _, data in self._graph.edges(data=True)]

    def add(self, stage: Stage, name: str | None = None) -> Stage:
        """Add ``stage`` under a unique ``name`` (default: its ``name`` option or its class
        name) and return it. Works before and while the pipeline runs.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> p.add(gs.from_iterable([1, 2]), name="numbers").name
        'numbers'
        >>> p.add(gs.consumer(print)).name  # the default: the function's name
        'print'
        """
        if not isinstance(stage, Stage):
            raise TypeError(
                f"Pipeline.add: expected a stage (Producer, ProducerConsumer, Consumer or "
                f"ConcurrentConsumer), got {stage!r}"
            )
        if stage._pipeline is not None:
            raise ValueError(f"stage {stage.name!r} is already in a pipeline")
        if name is not None:
            if not isinstance(name, str) or not name:
                raise TypeError(f"Pipeline.add: name must be a non-empty str, got {name!r}")
        elif stage._name is not None:
            name = stage._name
        else:
            name = self._default_name(stage)
        if name in self._graph:
            raise ValueError(f"Pipeline.add: duplicate stage name {name!r}")
        old_name, stage._name = stage._name, name
        try:
            proc = Process(stage, self)  # checks what only a run would find (pickling)
        except BaseException:
            stage._name = old_name
            raise
        stage._pipeline = self
        self._graph.add_node(name, stage=stage, kind=stage.kind)
        self._procs[name] = proc
        stage._process = proc
        if self._running:
            self._alive += 1
            if self._tg is not None:
                self._tg.start_soon(proc.main, name=f"genstage_nb stage {name}")
        return stage

    def _default_name(self, stage: Stage) -> str:
        base = getattr(stage, "_default_name", None) or re.sub(
            r"(?<!^)(?=[A-Z])", "_", type(stage).__name__
        ).lower().lstrip("_")
        name, n = base, 1
        while name in self._graph:
            n += 1
            name = f"{base}_{n}"
        return name

    def _stage(self, where: str, stage: Stage | str) -> Stage:
        if isinstance(stage, str):
            if stage not in self._graph:
                raise ValueError(f"{where}: no stage named {stage!r} in the pipeline")
            return self._graph.nodes[stage]["stage"]
        if not isinstance(stage, Stage):
            raise TypeError(f"{where}: expected a stage or a stage name, got {stage!r}")
        if stage._pipeline is not self:
            raise ValueError(
                f"{where}: stage {stage.name or type(stage).__name__!r} is not in the pipeline "
                f"(add it first with Pipeline.add)"
            )
        return stage

    def link(
        self,
        producer: Stage | str,
        consumer: Stage | str,
        *,
        max_demand: int = 1000,
        min_demand: int | None = None,
        cancel: str = "permanent",
        partition: Any = None,
        selector: Any = None,
    ) -> Subscription:
        """Subscribe ``consumer`` to ``producer`` and return the ``Subscription``.

        ``max_demand``/``min_demand`` bound the events in flight (``min_demand``
        defaults to half of ``max_demand``); ``cancel`` says what the consumer does when
        the producer ends (``"permanent"``: stop with it, ``"transient"``: stop only if it
        failed, ``"temporary"``: never); ``partition`` picks a PartitionDispatcher's
        partition, ``selector(event) -> bool`` filters a BroadcastDispatcher's events.
        Works before and while the pipeline runs.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src, sink = p.add(gs.from_iterable(range(10))), p.add(gs.consumer(print))
        >>> sub = p.link(src, sink, max_demand=4)
        >>> sub.max_demand, sub.min_demand, sub.cancel
        (4, 2, 'permanent')
        """
        where = "link"
        producer = self._stage(where, producer)
        consumer = self._stage(where, consumer)
        where = f"link {producer.name} -> {consumer.name}"
        if not hasattr(producer, "emit"):
            raise TypeError(
                f"{where}: {producer.name!r} is a {producer.kind} and cannot be used as a producer"
            )
        if not hasattr(consumer, "handle_events") and not hasattr(consumer, "handle_event"):
            raise TypeError(
                f"{where}: {consumer.name!r} is a {consumer.kind} and cannot be used as a consumer"
            )
        if producer is consumer:
            raise ValueError(f"{where}: a stage cannot subscribe to itself")
        if self._graph.has_edge(producer.name, consumer.name):
            raise ValueError(f"{where}: these stages are already linked")
        if consumer.name in self._graph and nx.has_path(
            self._graph, consumer.name, producer.name
        ):
            path = nx.shortest_path(self._graph, consumer.name, producer.name)
            cycle = " -> ".join([*path, consumer.name])
            raise ValueError(
                f"{where}: this link would close the cycle {cycle}; links must not form a "
                f"cycle (each stage would wait for the other's demand: a deadlock)"
            )
        dispatcher = producer.dispatcher
        is_partition = isinstance(dispatcher, PartitionDispatcher)
        if is_partition:
            try:
                dispatcher.check_partition(partition)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            for sub in self._out_subs(producer):
                if sub.partition == partition:
                    raise ValueError(
                        f"{where}: partition {partition!r} is already taken by "
                        f"{sub.consumer.name!r}"
                    )
        elif partition is not None:
            raise ValueError(
                f"{where}: partition= needs a producer with a PartitionDispatcher; "
                f"{producer.name!r} uses {getattr(dispatcher, '__name__', dispatcher)!r}"
            )
        if (
            selector is not None
            and dispatcher is not BroadcastDispatcher
            and not isinstance(dispatcher, BroadcastDispatcher)
        ):
            raise ValueError(f"{where}: selector= needs a producer with a BroadcastDispatcher")
        sub = Subscription(producer, consumer, max_demand, min_demand, cancel, partition, selector)
        self._graph.add_edge(producer.name, consumer.name, subscription=sub)
        self._wire(sub)
        return sub

    def _out_subs(self, producer: Stage) -> list[Subscription]:
        return [d["subscription"] for _, _, d in self._graph.out_edges(producer.name, data=True)]

    def _wire(self, sub: Subscription) -> None:
        sub._from = self._procs[sub.producer.name]
        sub._to = to = self._procs[sub.consumer.name]
        sub.active = False
        if to.running:
            to.post(to._on_link, sub)
        else:
            to.producers[sub] = None

    def unlink(self, sub: Subscription) -> None:
        """Remove a subscription; while running, the consumer cancels it (reason
        ``"unlinked"``) and keeps running.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> sub = p.link(p.add(gs.from_iterable([1])), p.add(gs.consumer(print)))
        >>> p.unlink(sub)
        >>> p.subscriptions
        []
        """
        if not isinstance(sub, Subscription):
            raise TypeError(f"unlink: expected a Subscription, got {sub!r}")
        edge = self._graph.get_edge_data(sub.producer.name, sub.consumer.name)
        if edge is None or edge["subscription"] is not sub:
            raise ValueError(f"unlink: {sub!r} is not in the pipeline")
        self._graph.remove_edge(sub.producer.name, sub.consumer.name)
        to = sub._to
        if to.running:
            to.post(to._on_unlink, sub, "unlinked")
        else:
            to.producers.pop(sub, None)

    def _remove(self, name: str) -> None:
        """Take a stage and its links out of an idle pipeline."""
        if self._running:
            raise RuntimeError(f"cannot remove stage {name!r} while the pipeline runs")
        for sub in [d["subscription"] for *_, d in self._graph.in_edges(name, data=True)]:
            self.unlink(sub)
        for sub in [d["subscription"] for *_, d in self._graph.out_edges(name, data=True)]:
            self.unlink(sub)
        stage = self._graph.nodes[name]["stage"]
        self._graph.remove_node(name)
        del self._procs[name]
        stage._pipeline = None
        stage._process = None

    # -- running -------------------------------------------------------------------

    @property
    def _label(self) -> str:
        return "pipeline" if self.name is None else f"pipeline {self.name}"

    @property
    def running(self) -> bool:
        """True from ``run()``/``start()`` until every stage has stopped."""
        return self._running

    @property
    def status(self) -> dict[str, str]:
        """Stage name -> ``"idle"``, ``"running"``, ``"done"``, ``"failed"`` or
        ``"restarting"``."""
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
        if self._running and self._background is None:
            raise RuntimeError(f"{self._label}: already running")
        self._check_consumers()
        await self._run()

    def _check_consumers(self) -> None:
        """run() refuses producers without a consumer: nothing would ever ask them for
        events, and (for a producer-consumer) nothing would drain its producers."""
        lonely = [
            f"{name!r} ({data['kind'].replace('_', '-')})"
            for name, data in self._graph.nodes(data=True)
            if data["kind"] in ("producer", "producer_consumer")
            and self._graph.out_degree(name) == 0
        ]
        if lonely:
            which = "has" if len(lonely) == 1 else "have"
            raise ValueError(
                f"{self._label}: {', '.join(lonely)} {which} no consumer, so run() would "
                f"never end; link a consumer to each (p.link) or remove it. p.start() runs "
                f"such a pipeline in the background, where you may link later"
            )

    async def _run(self) -> None:
        self._begin()
        self.metrics.reset()
        self.metrics.sample()
        watchdog = None if self.slow_handler is None else Watchdog(self, self.slow_handler)
        if watchdog is not None:
            watchdog.start()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._starting = set(self._procs.values()) or None
                self._held_asks = []
                for name, proc in list(self._procs.items()):
                    tg.start_soon(proc.main, name=f"genstage_nb stage {name}")
                if self.stopping:
                    tg.start_soon(self._stop_within, self._stop_timeout)
                if self.metrics_interval is not None:
                    tg.start_soon(self.metrics.run, self.metrics_interval, self._ended)
                if watchdog is not None:
                    tg.start_soon(watchdog.beat, self._ended)
        except BaseExceptionGroup as group:
            # An interrupt that reached the task group itself: raise it plainly.
            interrupt = group.subgroup((KeyboardInterrupt, SystemExit))
            if interrupt is None:
                raise
            while isinstance(interrupt, BaseExceptionGroup):
                interrupt = interrupt.exceptions[0]
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

    def _begin(self) -> None:
        if any(p.running or p.stopped for p in self._procs.values()):
            self._fresh_processes()
        self._running = True
        self._fatal = {}
        self._first_fatal = None
        self._interrupt = None
        self.error = None
        self._alive = len(self._procs)
        self._ended = anyio.Event()
        self._finished = anyio.Event()
        if not self._alive:
            self._ended.set()

    def _end(self) -> None:
        self._tg = None
        self._running = False
        self.stopping = False
        self._background = None
        for name, data in list(self._graph.nodes(data=True)):
            if getattr(data["stage"], "_gs_one_run", False):
                self._remove(name)  # a stream serves one run
        finished = self._finished
        if finished is not None:
            finished.set()

    def _fresh_processes(self) -> None:
        """A new run starts from new runtime state (stage objects keep theirs)."""
        for name, data in self._graph.nodes(data=True):
            proc = self._procs[name] = Process(data["stage"], self)
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
        try:
            running = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            running = None
        if running is not None:
            raise RuntimeError(
                f"{self._label}: run_sync() cannot run inside a running {running} event "
                "loop (a notebook cell or async code): use 'await p.run()', or p.start() "
                "to run in the background"
            )
        anyio.run(self.run, backend=backend)

    def start(self) -> Pipeline:
        """Run in the background of the running asyncio loop and return at once.

        For notebooks: the kernel's loop keeps running the pipeline while the user
        works. Use ``await p.wait()`` or ``p.stop()`` later.

        >>> import anyio, genstage_nb as gs
        >>> p = gs.Pipeline(); out = []
        >>> _ = p.link(p.add(gs.from_iterable(range(3))), p.add(gs.consumer(out.extend)))
        >>> async def cell():  # what a notebook cell does
        ...     p.start()          # returns at once
        ...     await p.wait()
        >>> anyio.run(cell); out
        [0, 1, 2]
        """
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "Pipeline.start() needs a running asyncio event loop (as in a notebook); "
                "in a script use run_sync(), or await run() in a task group"
            ) from None
        if self._running:
            raise RuntimeError("Pipeline.start(): the pipeline is already running")
        if any(p.running or p.stopped for p in self._procs.values()):
            self._fresh_processes()
        self._running = True
        self._background = loop.create_task(self._run_in_background())
        return self

    async def _run_in_background(self) -> None:
        try:
            await self._run()
        except KeyboardInterrupt:
            # The kernel was interrupted while a stage's hook ran: the pipeline is
            # stopped, the kernel carries on.
            print(
                f"genstage_nb: {self._label} interrupted: every stage stopped",
                file=sys.stderr,
            )
        except PipelineError as exc:
            # Nobody awaits a background run: say it here (in a notebook, stderr shows
            # in the cell output; the tracebacks were logged as each stage failed).
            print(
                f"genstage_nb: {self._label} stopped: {exc} "
                f"(tracebacks above; details in .failures)",
                file=sys.stderr,
            )

    def stop(self, timeout: float | None = 5.0) -> _Stopping:
        """Stop gracefully: producers stop making events, what they made is delivered
        as far as demand allows within ``timeout`` seconds, then every stage is
        cancelled. Returns at once; ``await p.stop()`` waits until it has stopped.
        Stopping twice is harmless.

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
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0
        ):
            raise ValueError(f"stop: timeout must be a number of seconds >= 0, got {timeout!r}")
        if self._running and not self.stopping:
            self.stopping = True
            self._stop_timeout = timeout
            for proc in self._procs.values():
                proc.request_stop()
            if self._tg is not None:
                self._tg.start_soon(self._stop_within, timeout)
        return _Stopping(self)

    async def _stop_within(self, timeout: float | None) -> None:
        with anyio.move_on_after(timeout):
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

    # -- supervision (called by the stage processes) -------------------------------

    def _record_failure(self, proc: Process, failure: Failure) -> None:
        self.failures.setdefault(proc.name, []).append(failure)

    def _stage_failed(self, proc: Process, exc: BaseException) -> None:
        self._fatal[proc.name] = exc
        if self._first_fatal is None:
            self._first_fatal = exc
        if self.on_failure == "stop" and self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _hold_ask(self, producer: Process, sub: Subscription, n: int) -> bool:
        """The start gate: while the stages of a new run are starting, hold the first
        asks (and return True) until every stage has run ``init`` and announced its
        subscriptions. So every producer knows all its consumers before it makes an
        event: a broadcast reaches every subscriber from the first event on, whatever
        order the stages start in (GenStage leaves that to start order, and a late
        subscriber misses what was sent before it)."""
        if self._starting is None:
            return False
        self._held_asks.append((producer, sub, n))
        return True

    def _started(self, proc: Process) -> None:
        """``proc`` has started (or ended before it could); when it is the last, open
        the start gate: the held asks go out in the order they were made."""
        starting = self._starting
        if starting is None:
            return
        starting.discard(proc)
        if not starting:
            self._starting = None
            held, self._held_asks = self._held_asks, []
            for producer, sub, n in held:
                producer.post(producer._on_ask, sub, n)

    def _interrupted(self, proc: Process, exc: BaseException) -> None:
        """A KeyboardInterrupt (or SystemExit) was raised in ``proc``'s hook: stop
        every stage now; ``run()`` raises it once they have all ended."""
        if self._interrupt is None:
            self._interrupt = exc
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            found = blocking_stage(tb.tb_frame if tb is not None else None)
            where = found[0].name if found is not None else proc.name
            log.warning("%s: interrupted in stage %r", self._label, where)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _stage_ended(self, proc: Process) -> None:
        self._alive -= 1
        if self._alive <= 0:
            # Every stage has stopped: the run is over (stages added from now on wait
            # for the next run).
            self._running = False
            if self._ended is not None:
                self._ended.set()

    # -- streams -------------------------------------------------------------------

    def stream(self, stage: Stage | str, *, max_demand: int = 1000) -> Any:
        """An async iterator over the events ``stage`` emits (GenStage.stream).

        It subscribes to ``stage`` like a consumer, asking ``max_demand`` events at a
        time as you iterate; it ends when the stage finishes. Open it before or while
        the pipeline runs, and iterate while it runs.

        >>> import anyio, genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> sq = p.add(gs.producer_consumer(lambda events: [e * e for e in events]), name="sq")
        >>> _ = p.link(p.add(gs.from_iterable(range(4))), sq)
        >>> async def main():
        ...     events = p.stream("sq", max_demand=2)
        ...     async with anyio.create_task_group() as tg:
        ...         tg.start_soon(p.run)
        ...         return [e async for e in events]
        >>> anyio.run(main)
        [0, 1, 4, 9]
        """
        from .stream import EventStream

        return EventStream(self, self._stage("stream", stage), max_demand)

    # -- pictures --------------------------------------------------------------------

    def plot(self) -> Any:
        """A matplotlib Figure: throughput, buffer size and outstanding demand over
        time, one line per stage (same colour in every panel). Never calls plt.show.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> _ = p.link(p.add(gs.from_iterable(range(100))), p.add(gs.consumer(len)))
        >>> p.run_sync()
        >>> fig = p.plot(); [ax.get_title() for ax in fig.axes]
        ['Throughput', 'Buffer size', 'Outstanding demand']
        >>> fig.savefig("metrics.png")  # doctest: +SKIP
        """
        from .plotting import plot_metrics

        return plot_metrics(self.metrics.frame(), list(self._procs))

    def draw(self) -> Any:
        """A matplotlib Figure of the graph, left to right by topological generation:
        nodes coloured by kind (a failed stage in red), edges labelled with
        max_demand.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable([1]), name="src")
        >>> _ = p.link(src, p.add(gs.consumer(len), name="sink"))
        >>> p.draw()  # doctest: +ELLIPSIS
        <Figure size ... with 1 Axes>
        """
        from .plotting import draw_graph

        return draw_graph(self._graph, self.status)

    def dashboard(self, refresh: float = 1.0) -> Any:
        """An ipywidgets dashboard: start/stop buttons, a status table, a slider per
        subscription bound live to its ``max_demand`` (and ``min_demand``), and the
        metrics plots, refreshed every ``refresh`` seconds while the pipeline runs.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable([1]), name="src")
        >>> _ = p.link(src, p.add(gs.consumer(len), name="sink"))
        >>> dash = p.dashboard()  # the last value of a notebook cell: it shows itself
        >>> [s.max_slider.description for s in dash.sliders]
        ['src → sink']
        >>> dash.close()
        """
        from .notebook.dashboard import Dashboard

        return Dashboard(self, refresh=refresh)

    def __repr__(self) -> str:
        return (
            f"<Pipeline {self.name or ''} stages={len(self._procs)} "
            f"links={self._graph.number_of_edges()} running={self._running}>"
        )


_default: Pipeline | None = None


def default_pipeline() -> Pipeline:
    """The pipeline that ``%%stage`` cells add to unless told otherwise (made on first
    use; ``%pipeline reset`` replaces it).

    >>> import genstage_nb as gs
    >>> gs.default_pipeline() is gs.default_pipeline()
    True
    """
    global _default
    if _default is None:
        _default = Pipeline("default")
    return _default


def reset_default_pipeline() -> Pipeline:
    """Replace the default pipeline with a new, empty one and return it."""
    global _default
    _default = Pipeline("default")
    return _default


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
