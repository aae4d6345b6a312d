"""matplotlib figures: the metrics panels and the pipeline graph.

Figures are made with ``matplotlib.figure.Figure`` (not pyplot), so nothing is shown or
kept in pyplot's global state: notebooks display the returned figure, scripts save it.
A bare ``Figure`` shows as a picture in IPython only once pyplot's inline backend has
been loaded, so ``notebook_display`` registers the PNG formatter itself (keeping any
format the user chose).
"""

from __future__ import annotations

from typing import Any

import networkx as nx
from matplotlib.figure import Figure

#: Panels of ``Pipeline.plot``: (metric, title, unit).
PANELS = (
    ("throughput", "Throughput", "events/s"),
    ("buffer_size", "Buffer size", "events"),
    ("outstanding_demand", "Outstanding demand", "events"),
)

#: Node colours of ``Pipeline.draw`` by kind; a failed stage is drawn in red.
KIND_COLOURS = {
    "producer": "#4c9be8",
    "producer_consumer": "#f0a63a",
    "consumer": "#5cb85c",
}
FAILED_COLOUR = "#d9534f"
STATUS_EDGES = {"running": "#222222", "restarting": "#d9534f", "failed": FAILED_COLOUR}


def stage_colours(stages: list[str]) -> dict[str, Any]:
    """One colour per stage, the same in every panel and figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(stages)}


def notebook_display() -> None:
    """Make IPython show a returned ``Figure`` as a picture (a no-op outside IPython or
    when a figure format is already registered, e.g. after ``%matplotlib inline``)."""
    import sys

    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    formatters = shell.display_formatter.formatters
    for mime in ("image/png", "image/svg+xml", "application/pdf", "image/jpeg"):
        try:
            formatters[mime].lookup_by_type(Figure)
            return
        except KeyError:
            continue
    from IPython.core.pylabtools import select_figure_formats

    select_figure_formats(shell, {"png"})


#: The time panel of ``Pipeline.plot``: busy solid, back-pressured dashed, idle dotted.
TIME_STYLES = (("busy", "-"), ("backpressured", "--"), ("idle", ":"))


def plot_metrics(frame: Any, stages: list[str], marks: list[float] | None = None) -> Figure:
    """Four panels over time: throughput, buffer size, outstanding demand, and the
    shares of time each stage was busy, back-pressured and idle. ``marks``: times the
    autotuner changed max_demand, drawn as dotted lines on the throughput panel."""
    notebook_display()
    colours = stage_colours(stages)
    fig = Figure(figsize=(9, 9.5), layout="constrained")
    axes = fig.subplots(len(PANELS) + 1, 1, sharex=True)
    _time_panel(axes[-1], frame, stages, colours)
    for ax, (metric, title, unit) in zip(axes[:-1], PANELS, strict=True):
        data = frame[frame["metric"] == metric]
        for name in stages:
            series = data[data["stage"] == name]
            if series.empty:
                continue
            ax.plot(series["time"], series["value"], label=name, color=colours[name])
        if metric == "throughput":
            for i, t in enumerate(marks or ()):
                label = "max_demand tuned" if i == 0 else "_tuned"
                ax.axvline(t, color="#888888", linestyle=":", linewidth=1, label=label)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle("Pipeline metrics")
    return fig


def _time_panel(ax: Any, frame: Any, stages: list[str], colours: dict) -> None:
    for metric, style in TIME_STYLES:
        data = frame[frame["metric"] == metric]
        for name in stages:
            series = data[data["stage"] == name]
            if series.empty:
                continue
            label = name if metric == "busy" else f"_{name} {metric}"  # one legend entry
            ax.plot(series["time"], series["value"], style, label=label, color=colours[name])
    ax.set_title("Busy (solid), back-pressured (dashed), idle (dotted)")
    ax.set_ylabel("share of time")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    if ax.get_lines():
        ax.legend(loc="upper right", fontsize="small")


def _layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Left to right by topological generation (cycles fall back to one column each)."""
    try:
        generations = list(nx.topological_generations(graph))
    except nx.NetworkXUnfeasible:
        generations = [[n] for n in graph.nodes]
    pos = {}
    for x, generation in enumerate(generations):
        for y, name in enumerate(sorted(generation)):
            pos[name] = (float(x), -float(y) + (len(generation) - 1) / 2)
    return pos


def draw_graph(
    graph: nx.DiGraph,
    status: dict[str, str],
    busy: dict[str, float] | None = None,
    bottleneck: str | None = None,
) -> Figure:
    """The pipeline graph: kinds coloured, failed stages red, edges labelled with
    max_demand. With ``busy`` (stage -> share of time), nodes are shaded by it instead
    (white idle to deep red busy), the ``bottleneck`` is outlined, and edges also show
    the demand pending on them."""
    notebook_display()
    fig = Figure(figsize=(max(4, 2.6 * (len(graph) ** 0.5 + 1)), 3.5), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    if not len(graph):
        ax.set_title("(empty pipeline)")
        return fig
    pos = _layout(graph)
    names = list(graph.nodes)
    colours, edges, widths = _node_style(graph, names, status, busy, bottleneck)
    nx.draw_networkx_nodes(
        graph,
        pos,
        ax=ax,
        nodelist=names,
        node_color=colours,
        edgecolors=edges,
        node_size=1600,
        linewidths=widths,
    )
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=9)
    nx.draw_networkx_edges(graph, pos, ax=ax, arrows=True, arrowsize=18, node_size=1600)
    nx.draw_networkx_edge_labels(
        graph, pos, edge_labels=_edge_labels(graph, busy is not None), ax=ax, font_size=8
    )
    ax.legend(
        handles=_legend(busy is not None, bottleneck),
        loc="lower center",
        ncols=4,
        fontsize="small",
        frameon=False,
        bbox_to_anchor=(0.5, -0.15),
    )
    xs = [x for x, _ in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    return fig


def _node_style(
    graph: nx.DiGraph,
    names: list[str],
    status: dict[str, str],
    busy: dict[str, float] | None,
    bottleneck: str | None,
) -> tuple[list, list, list]:
    """Each node's fill (its kind, or how busy it is), outline colour (its status) and
    outline width (the bottleneck's is thick)."""
    colours: list[Any]
    if busy is None:
        colours = [
            FAILED_COLOUR
            if status.get(n) == "failed"
            else KIND_COLOURS.get(graph.nodes[n]["kind"], "#999999")
            for n in names
        ]
    else:
        from matplotlib import colormaps

        shade = colormaps["Reds"]
        colours = [shade(0.1 + 0.8 * min(max(busy.get(n, 0.0), 0.0), 1.0)) for n in names]
    edges = [STATUS_EDGES.get(status.get(n, "idle"), "#888888") for n in names]
    widths = [2.0] * len(names)
    if bottleneck in names:
        i = names.index(bottleneck)
        edges[i], widths[i] = "#000000", 4.5
    return colours, edges, widths


def _edge_labels(graph: nx.DiGraph, pending: bool) -> dict:
    labels = {}
    for a, b, d in graph.edges(data=True):
        sub = d["subscription"]
        label = f"max_demand={sub.max_demand}"
        if pending:
            label += f"\npending={sub.pending}"
        labels[a, b] = label
    return labels


def _legend(busy: bool, bottleneck: str | None) -> list:
    if not busy:
        return [_patch(colour, kind.replace("_", "-")) for kind, colour in KIND_COLOURS.items()] + [
            _patch(FAILED_COLOUR, "failed")
        ]
    from matplotlib import colormaps

    shade = colormaps["Reds"]
    handles = [_patch(shade(0.1), "idle"), _patch(shade(0.9), "busy")]
    if bottleneck is not None:
        handles.append(_patch("#ffffff", f"bottleneck: {bottleneck}"))
    return handles


def _patch(colour: Any, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, label=label)
