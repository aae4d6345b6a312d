"""The pipeline's graph: stages added, linked and unlinked, every link checked.

A ``networkx.DiGraph`` whose nodes are stage names (attributes ``stage`` and ``kind``)
and whose edges carry the ``subscription``. ``link`` checks what a link needs (kinds,
partitions, selectors, no cycle) before it changes anything, and wires the
subscription to the stages' runtime (live, if the pipeline runs).
"""

from __future__ import annotations

import re
from typing import Any

import networkx as nx

from ..core.process import Process
from ..core.stage import Stage
from ..core.subscription import Subscription
from .parts import Part


class GraphBuilding(Part):
    """The graph role of ``Pipeline``: add, link, unlink, and what the graph holds."""

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
        """Add ``stage`` under ``name`` (default: its ``name`` option or its class name)
        and return the stage the pipeline now holds under that name. Works before and
        while the pipeline runs.

        A name the pipeline has already (a notebook cell run again) takes the new
        stage's place, saying which of two things was done: when the pipeline is not
        running, the new stage **replaces** the old one, in its links; when it runs,
        the old stage **takes the new one's code** in place (its class and hooks), keeping
        its state, buffer and links, and that old stage is returned (a paused one is
        resumed with its failed batch, as a re-run ``%%stage`` cell does). A running
        stage cannot change its kind or options in place (stop the pipeline first).

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> p.add(gs.from_iterable([1, 2]), name="numbers").name
        'numbers'
        >>> p.add(gs.consumer(print)).name  # the default: the function's name
        'print'
        >>> _ = p.link("numbers", "print")
        >>> p.add(gs.consumer(len), name="print").name  # the cell run again
        stage 'print' replaced (the pipeline is not running); its links kept
        'print'
        >>> p.graph.has_edge("numbers", "print")
        True
        """
        if not isinstance(stage, Stage):
            raise TypeError(
                f"Pipeline.add: expected a stage (Producer, ProducerConsumer, Consumer or "
                f"ConcurrentConsumer), got {stage!r}"
            )
        if stage._pipeline is not None:
            raise ValueError(f"stage {stage.name!r} is already in a pipeline")
        if self._reset_at_end:
            raise RuntimeError(
                f"{self._label}: it is being reset (its stages are stopping); add the stage "
                f"again in a moment"
            )
        name = self._name_for(stage, name)
        if name in self._graph:
            return self._add_again(name, stage)
        old_name, stage._name = stage._name, name
        try:
            proc = Process(stage, self._whole)  # checks what only a run would find (pickling)
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

    def _name_for(self, stage: Stage, name: str | None) -> str:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise TypeError(f"Pipeline.add: name must be a non-empty str, got {name!r}")
            return name
        return stage._name if stage._name is not None else self._default_name(stage)

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
                known = ", ".join(repr(n) for n in self._graph) or "none yet"
                raise ValueError(
                    f"{where}: no stage named {stage!r} in the pipeline (stages: {known})"
                )
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
        if consumer.name in self._graph and nx.has_path(self._graph, consumer.name, producer.name):
            path = nx.shortest_path(self._graph, consumer.name, producer.name)
            cycle = " -> ".join([*path, str(consumer.name)])
            raise ValueError(
                f"{where}: this link would close the cycle {cycle}; links must not form a "
                f"cycle (each stage would wait for the other's demand: a deadlock)"
            )
        self._check_subscription(where, producer, partition, selector)
        sub = Subscription(producer, consumer, max_demand, min_demand, cancel, partition, selector)
        self._graph.add_edge(producer.name, consumer.name, subscription=sub)
        self._wire(sub)
        return sub

    def _check_subscription(
        self, where: str, producer: Stage, partition: Any, selector: Any
    ) -> None:
        """The producer's dispatcher checks the new subscription's options (the
        Dispatcher protocol's ``check_subscription``; one without it takes neither)."""
        dispatcher = producer.dispatcher
        template = dispatcher() if isinstance(dispatcher, type) else dispatcher
        taken = {sub.partition: sub for sub in self._out_subs(producer)}
        check = getattr(template, "check_subscription", None)
        try:
            if check is not None:
                check(partition, selector, [p for p in taken if p is not None])
            elif partition is not None or selector is not None:
                raise ValueError(
                    f"{type(template).__name__} takes neither partition= nor selector="
                )
        except ValueError as exc:
            message = str(exc).replace("the producer uses", f"{producer.name!r} uses")
            if partition is not None and partition in taken and "already taken" in message:
                message += f" by {taken[partition].consumer.name!r}"
            raise ValueError(f"{where}: {message}") from None

    def _out_subs(self, producer: Stage) -> list[Subscription]:
        return [d["subscription"] for _, _, d in self._graph.out_edges(producer.name, data=True)]

    def _wire(self, sub: Subscription) -> None:
        sub._from = self._procs[str(sub.producer.name)]
        sub._to = to = self._procs[str(sub.consumer.name)]
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

    def _depart(self, name: str) -> None:
        """Take a stage that has ended out of the running pipeline at once (a closed
        stream: a notebook's run may never end, and streams opened by the thousand
        must not pile up). Its counts stay in the run's books (``_departed``: a small
        object per stream, not the stage, its process or its events)."""
        proc = self._procs.get(name)
        if proc is None or not proc.stopped:
            return
        # Its counters stay in the books: events sent to it before its producer learnt
        # that it ended still arrive (and are counted there as unhandled).
        self._departed.append(proc.counters)
        stage = self._graph.nodes[name]["stage"]
        self._graph.remove_node(name)  # and its links
        del self._procs[name]
        stage._pipeline = None
        stage._process = None

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


__all__ = ["GraphBuilding"]
