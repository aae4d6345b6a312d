"""What a pipeline shows of itself: streams of events, plots, the graph, the dashboard.

Each face imports what it draws with only when it is asked for (matplotlib, ipywidgets),
so that importing genstage_nb stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .parts import Part

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..core.stage import Stage
    from ..core.statistics import StageStatistics
    from ..explain import Explanation
    from ..notebook.dashboard import Dashboard
    from ..progress import Progress
    from ..stream import EventStream
    from ..tuning import Tuner


class Views(Part):
    """The faces of ``Pipeline``: stream, bottleneck, explain, plot, draw, dashboard."""

    def statistics(self) -> dict[str, StageStatistics]:
        """Every stage's runtime state now, by name: its counts, what it buffers, holds
        and has queued, the demand it has outstanding, whether a hook is at work and its
        busy / back-pressured / idle seconds (``StageStatistics``; the metrics, explain,
        the stall watch and the tuner read these).

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> _ = p.link(p.add(gs.from_iterable(range(5)), name="src"), p.add(gs.consumer(len)))
        >>> p.run_sync()
        >>> p.statistics()["src"].counts["events_out"], p.statistics()["src"].status
        (5, 'done')
        """
        return {name: proc.statistics() for name, proc in list(self._procs.items())}

    def stream(self, stage: Stage | str, *, max_demand: int = 1000) -> EventStream:
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
        from ..stream import EventStream

        return EventStream(self, self._stage("stream", stage), max_demand)

    def bottleneck(self) -> str | None:
        """The name of the stage that limits throughput now: the busiest in its own
        hooks over the last second or so (or a producer waiting for outside input when
        none is busy); None before two metric samples exist.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> _ = p.link(p.add(gs.from_iterable(range(10))), p.add(gs.consumer(len)))
        >>> p.bottleneck() is None  # not run yet
        True
        """
        from ..explain import find_bottleneck, recent

        if self.running:
            self.metrics.sample()
        return find_bottleneck(self, recent(self))

    def explain(self) -> Explanation:
        """An ``Explanation`` of what limits the pipeline now: ``.bottleneck``,
        ``.stages`` (busy, backpressured, idle and throughput per stage), ``.advice``
        (what to change, naming the stage and the option) and ``.stalls``. Markdown in
        a notebook, text by ``str()``; ``%pipeline explain`` shows it.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline(metrics_interval=None)
        >>> _ = p.link(p.add(gs.from_iterable(range(10))), p.add(gs.consumer(len)))
        >>> p.run_sync()
        >>> list(p.explain().stages.columns)
        ['kind', 'busy', 'backpressured', 'idle', 'throughput']
        """
        from ..explain import explain

        return explain(self)

    def autotune(self, *, target_latency: float = 1.0, max_in_flight: int = 100_000) -> Tuner:
        """Let the pipeline tune its ``max_demand`` (a ``Tuner``): on a running
        pipeline, or before ``start``/``run`` (it starts with the run).

        It grows ``max_demand`` (and ``min_demand`` at half) of the links through the
        bottleneck while the end-to-end throughput grows, keeps the events in flight
        within ``max_in_flight`` and within what the pipeline handles in
        ``target_latency`` seconds, then settles; ``tuner.history``, ``tuner.settled``,
        ``tuner.stop()``. It tunes with ``Subscription.tune``, like the sliders, and
        serves one run (the one running, or the next).

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> _ = p.link(p.add(gs.from_iterable(range(10))), p.add(gs.consumer(len)))
        >>> tuner = p.autotune(target_latency=0.5)
        >>> tuner.settled, list(tuner.history.columns)
        (False, ['time', 'link', 'max_demand', 'throughput'])
        """
        from ..tuning import Tuner

        tuner = Tuner(self, target_latency=target_latency, max_in_flight=max_in_flight)
        self._tuners.append(tuner)
        if self._running and self._tg is not None and self._ended is not None:
            self._tg.start_soon(tuner.run, self._ended)
        return tuner

    def plot(self) -> Figure:
        """A matplotlib Figure: throughput (the events/s of the status table, over the
        same window), buffer size and outstanding demand over time, each with a legend
        naming every stage (one colour per stage in every panel), and one stacked bar
        per stage of the shares of time it was busy, back-pressured and idle over the
        run. Never calls plt.show.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> _ = p.link(p.add(gs.from_iterable(range(100))), p.add(gs.consumer(len)))
        >>> p.run_sync()
        >>> fig = p.plot(); [ax.get_title(loc="left") for ax in fig.axes][:3]
        ['Throughput', 'Buffer size', 'Outstanding demand']
        >>> fig.axes[3].get_title(loc="left")
        'Share of time over the run'
        >>> fig.savefig("metrics.png")  # doctest: +SKIP
        """
        from ..metrics import rate_label
        from ..plotting import plot_metrics

        marks = sorted({row[0] for tuner in self._tuners for row in tuner._rows})
        return plot_metrics(self.metrics.frame(), list(self._procs), marks, rate_label(self))

    def draw(self, busy: bool = False) -> Figure:
        """A matplotlib Figure of the graph, left to right by topological generation:
        nodes coloured by kind (a failed stage in red), edges labelled with
        max_demand. ``busy=True`` shades the nodes by how busy each stage is now,
        outlines the bottleneck and shows each link's pending demand (the dashboard's
        live graph).

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable([1]), name="src")
        >>> _ = p.link(src, p.add(gs.consumer(len), name="sink"))
        >>> p.draw()  # doctest: +ELLIPSIS
        <Figure size ... with 1 Axes>
        """
        from ..plotting import draw_graph

        if not busy:
            return draw_graph(self._graph, self.status)
        from ..explain import find_bottleneck, recent

        stages = recent(self) or {}
        shares = {name: row["busy"] for name, row in stages.items()}
        return draw_graph(self._graph, self.status, shares, find_bottleneck(self, stages))

    def progress(self) -> Progress:
        """How far the run has come: a ``gs.Progress`` (``done``: events the sinks
        handled; ``total``, ``fraction`` and ``eta`` when every producer knows its total
        -- ``from_iterable`` over something with ``len()``, or ``total=``; ``rate``: the
        events/s of the status table; ``state``). A live bar as a notebook cell's last
        value (``%pipeline progress``), a text bar by ``str()``.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> _ = p.link(p.add(gs.from_iterable(range(10))), p.add(gs.consumer(len)))
        >>> p.progress().state  # before the run
        'stopped'
        >>> p.run_sync()
        >>> p.progress().done, p.progress().fraction, p.progress().state
        (10, 1.0, 'done')
        """
        from ..progress import progress_of

        return progress_of(self)

    def peek(self, stage: Stage | str, n: int = 10) -> list:
        """The last ``n`` events ``stage`` emitted (oldest first), taking nothing from
        its consumers. The first peek at a stage starts keeping its events (a ring of at
        least 100, or ``n``): peek again to see what it has emitted since. A stage
        nobody peeks at keeps nothing and pays nothing; a new run starts afresh.

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable(range(100)), name="numbers")
        >>> double = p.add(gs.map(lambda x: 2 * x, name="double"))
        >>> _ = p.link(src, double); _ = p.link(double, p.add(gs.consumer(len)))
        >>> p.peek("double")  # from now on it keeps them
        []
        >>> p.run_sync()
        >>> p.peek("double", 3)
        [194, 196, 198]
        """
        from ..core.peeking import last

        target = self._stage("peek", stage)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"peek: n must be an int >= 0, got {n!r}")
        if target.kind == "consumer":
            raise ValueError(
                f"peek: stage {target.name!r} is a consumer: it emits no events (peek at a "
                f"stage it subscribes to)"
            )
        return last(self._procs[str(target.name)], n)

    def dashboard(self, refresh: float = 1.0) -> Dashboard:
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
        from ..notebook.dashboard import Dashboard

        return Dashboard(self, refresh=refresh)


__all__ = ["Views"]
