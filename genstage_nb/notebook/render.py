"""The dashboard's pictures, drawn off the event loop.

Drawing the metrics panels and the graph with matplotlib takes a tenth of a second or
more, far too long to hold the kernel's event loop (the stages run there). So the
dashboard takes a ``Snapshot`` on the loop -- copies of what the pictures show, which
is quick -- and ``LivePictures.render`` draws it in a worker thread. ``Throttle`` spaces the
refreshes so that drawing takes at most ``SHARE`` of the time: what the dashboard
watches keeps (nearly) all of it.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ..metrics import frame_of, rate_label, rate_window, recent

#: Seconds of history the live panels show (the whole run is ``p.plot()``).
SPAN = 120.0
#: The most of the time drawing may take: the pictures are spaced to keep to it (the
#: drawing thread holds the interpreter most of the time it draws).
SHARE = 0.06


@dataclass
class Snapshot:
    """What the pictures show, copied on the event loop."""

    samples: list
    interval: float | None
    window: float
    rate: str
    stages: list[str]
    marks: list[float]
    graph: nx.DiGraph
    status: dict[str, str]
    busy: dict[str, float]
    bottleneck: str | None
    run: float  # when its run started (a new run: new figures)


def snapshot(pipeline: Any) -> Snapshot:
    """Copy what the pictures of ``pipeline`` show now (on the loop: cheap)."""
    from ..explain import find_bottleneck

    samples = pipeline.metrics.samples  # (a copy)
    if samples:
        t_last = samples[-1][0]
        samples = [s for s in samples if t_last - s[0] <= SPAN]
    stages = recent(pipeline) or {}
    graph = nx.DiGraph()
    for name, data in pipeline.graph.nodes(data=True):
        graph.add_node(name, **data)
    for a, b, data in pipeline.graph.edges(data=True):
        sub = data["subscription"]
        graph.add_edge(a, b, subscription=_Link(sub.max_demand, sub.pending))
    return Snapshot(
        samples=samples,
        interval=pipeline.metrics_interval,
        window=rate_window(pipeline),
        rate=rate_label(pipeline),
        stages=list(pipeline.graph.nodes),
        marks=sorted({row[0] for tuner in pipeline._tuners for row in tuner._rows}),
        graph=graph,
        status=dict(pipeline.status),
        busy={name: row["busy"] for name, row in stages.items()},
        bottleneck=find_bottleneck(pipeline, stages or None),
        run=pipeline._run_clock[0],
    )


@dataclass(frozen=True)
class _Link:
    """A link's numbers as the graph shows them (copied: the link changes meanwhile)."""

    max_demand: int
    pending: int


class LivePictures:
    """The dashboard's two figures, kept between refreshes: each refresh gives the
    artists their new data (lines, bars, node fills, link labels) and draws again,
    instead of building the figures anew; the layout (the expensive part) is worked
    out when a figure is built: when the stages change, and every ``REBUILD``
    refreshes (ticks grow wider as counts grow). One render at a time (a lock)."""

    #: Refreshes between two builds of a figure from scratch.
    REBUILD = 20

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plot: Any = None
        self._plot_key: tuple = ()
        self._graph: Any = None
        self._graph_key: tuple = ()
        self._draws = 0

    def render(self, shot: Snapshot) -> tuple[bytes, bytes | None]:
        """The graph and the metrics panels as PNG (no metrics yet: None). Any thread."""
        with self._lock:
            self._draws += 1
            fresh = self._draws % self.REBUILD == 0
            graph = self._graph_figure(shot, fresh)
            if not shot.samples:
                return graph, None
            return graph, self._plot_figure(shot, fresh)

    def _graph_figure(self, shot: Snapshot, fresh: bool) -> bytes:
        from ..plotting import draw_graph, restyle_graph

        key = (tuple(shot.graph.nodes), tuple(shot.graph.edges), shot.bottleneck is None)
        if fresh or self._graph is None or key != self._graph_key:
            self._graph = draw_graph(shot.graph, shot.status, shot.busy, shot.bottleneck)
            self._graph_key = key
            return _built(self._graph)
        restyle_graph(self._graph, shot.graph, shot.status, shot.busy, shot.bottleneck)
        return _png(self._graph)

    def _plot_figure(self, shot: Snapshot, fresh: bool) -> bytes:
        from ..plotting import plot_metrics, replot_metrics

        frame = frame_of(shot.samples, shot.interval, shot.window)
        key = (tuple(shot.stages), shot.rate, shot.run)
        if fresh or self._plot is None or key != self._plot_key:
            self._plot = plot_metrics(frame, shot.stages, shot.marks, shot.rate, last=shot.window)
            self._plot_key = key
            return _built(self._plot)
        replot_metrics(self._plot, frame, shot.stages, shot.marks, last=shot.window)
        return _png(self._plot)


def _built(fig: Any) -> bytes:
    """A new figure's first PNG: drawn with its layout engine, which is then switched
    off, so that later draws keep that layout (working it out is the costly part)."""
    png = _png(fig)
    fig.set_layout_engine("none")
    return png


def _png(fig: Any) -> bytes:
    """The figure as a PNG at 72 dpi, drawn once (its own Agg canvas, no pyplot: safe
    in a worker thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
        fig.set_dpi(72)
    buf = io.BytesIO()
    fig.canvas.print_png(buf)
    return buf.getvalue()


class Throttle:
    """Spaces refreshes: at least ``refresh`` seconds apart, and far enough apart that
    drawing (``took`` seconds the last time) stays within ``SHARE`` of the time."""

    def __init__(self, refresh: float) -> None:
        self.refresh = refresh
        self.took = 0.0

    def pause(self) -> float:
        """Seconds to wait before the next refresh."""
        return max(self.refresh, self.took / SHARE - self.took)


__all__ = ["SHARE", "SPAN", "LivePictures", "Snapshot", "Throttle", "snapshot"]
