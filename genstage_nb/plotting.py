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


#: The share-of-time panel: one stacked bar per stage (busy, back-pressured, idle).
TIME_COLOURS = (("busy", "#c0392b"), ("backpressured", "#e9a23b"), ("idle", "#9bbbd4"))
TIME_LABELS = {"busy": "busy", "backpressured": "back-pressured", "idle": "idle"}


def plot_metrics(
    frame: Any,
    stages: list[str],
    marks: list[float] | None = None,
    rate: str = "events/s",
    last: float | None = None,
) -> Figure:
    """Three panels over time (throughput, buffer size, outstanding demand), each with a
    legend naming every stage beside it, and a fourth: one stacked bar per stage of the
    shares of time it was busy, back-pressured and idle (over the run, or over the last
    ``last`` seconds). ``rate`` labels the throughput (the one events/s shown
    everywhere); ``marks``: times the autotuner changed max_demand (dotted lines)."""
    notebook_display()
    colours = stage_colours(stages)
    fig = Figure(figsize=(9, 2.3 * len(PANELS) + 0.8 + 0.35 * len(stages)), layout="constrained")
    heights = [1.0] * len(PANELS) + [0.35 + 0.12 * len(stages)]
    axes = fig.subplots(len(PANELS) + 1, 1, gridspec_kw={"height_ratios": heights})
    for ax, (metric, title, unit) in zip(axes[:-1], PANELS, strict=True):
        data = frame[frame["metric"] == metric]
        for name in stages:
            series = data[data["stage"] == name]
            if series.empty:
                continue
            ax.plot(series["time"], series["value"], label=name, color=colours[name])
        if metric == "throughput":
            unit = rate
            for i, t in enumerate(marks or ()):
                label = "max_demand tuned" if i == 0 else "_tuned"
                ax.axvline(t, color="#888888", linestyle=":", linewidth=1, label=label)
        ax.set_title(title, loc="left", fontsize="medium")
        ax.set_ylabel(unit)
        ax.set_xlabel("time (s)", fontsize="small")
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    if len(axes) > 1:
        for ax in axes[1:-1]:
            ax.sharex(axes[0])
    _time_panel(axes[-1], frame, stages, last)
    fig.suptitle("Pipeline metrics")
    return fig


def replot_metrics(
    fig: Figure, frame: Any, stages: list[str], marks: list[float], last: float | None
) -> None:
    """Give a figure of ``plot_metrics`` (the same stages) new data: each line its
    series, new tuner marks, each bar its shares; the axes rescale, the layout stays."""
    axes = fig.axes
    for ax, (metric, _, _) in zip(axes, PANELS, strict=False):
        data = frame[frame["metric"] == metric]
        for line in ax.get_lines():
            name = line.get_label()
            if name in stages:
                series = data[data["stage"] == name]
                line.set_data(series["time"].to_numpy(), series["value"].to_numpy())
        if metric == "throughput":
            drawn = sum(1 for line in ax.get_lines() if line.get_linestyle() == ":")
            for t in marks[drawn:]:
                ax.axvline(t, color="#888888", linestyle=":", linewidth=1, label="_tuned")
        ax.relim()
        ax.autoscale_view()
    shares = shares_of_time(frame, stages, last)
    names = list(reversed(stages))
    left = [0.0] * len(names)
    for i, bars in enumerate(axes[len(PANELS)].containers):  # (BarContainers)
        for j, (name, patch) in enumerate(zip(names, bars, strict=True)):
            width = shares[name][i]
            patch.set_x(left[j])
            patch.set_width(width)
            left[j] += width


def shares_of_time(frame: Any, stages: list[str], last: float | None = None) -> dict:
    """Stage -> (busy, back-pressured, idle) averaged over the samples (the last
    ``last`` seconds of them, if given)."""
    data = frame[frame["metric"].isin([m for m, _ in TIME_COLOURS])]
    data = data[data["time"] > data["time"].min()] if len(data) else data  # (the first
    # sample closes no interval: it has no shares)
    if last is not None and len(data):
        data = data[data["time"] >= data["time"].max() - last]
    means = data.groupby(["stage", "metric"])["value"].mean()
    return {
        name: tuple(float(means.get((name, metric), 0.0)) for metric, _ in TIME_COLOURS)
        for name in stages
    }


def _time_panel(ax: Any, frame: Any, stages: list[str], last: float | None) -> None:
    shares = shares_of_time(frame, stages, last)
    names = list(reversed(stages))  # the first stage on top
    left = [0.0] * len(names)
    for i, (metric, colour) in enumerate(TIME_COLOURS):
        widths = [shares[name][i] for name in names]
        ax.barh(names, widths, left=left, color=colour, label=TIME_LABELS[metric], height=0.6)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    span = "over the run" if last is None else f"over the last {last:g} s"
    ax.set_title(f"Share of time {span}", loc="left", fontsize="medium")
    ax.set_xlabel("share of time")
    ax.set_xlim(0, 1)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def text_colour(fill: Any) -> str:
    """Black or white, whichever reads better on ``fill`` (WCAG relative luminance)."""
    from matplotlib.colors import to_rgb

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in to_rgb(fill))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # The contrast with black is (L + 0.05) / 0.05, with white 1.05 / (L + 0.05).
    return "#000000" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "#ffffff"


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
    columns, rows = _extent(graph)
    fig = Figure(figsize=(max(4.0, 2.4 * columns + 0.6), 1.2 * rows + 1.4), layout="constrained")
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
    for name, fill in zip(names, colours, strict=True):  # each label readable on its fill
        nx.draw_networkx_labels(
            graph,
            pos,
            labels={name: name},
            ax=ax,
            font_size=9,
            font_color=text_colour(fill),
            bbox={"facecolor": fill, "edgecolor": "none", "boxstyle": "round,pad=0.2"},
        )
    nx.draw_networkx_edges(graph, pos, ax=ax, arrows=True, arrowsize=18, node_size=1600)
    nx.draw_networkx_edge_labels(
        graph, pos, edge_labels=_edge_labels(graph, busy is not None), ax=ax, font_size=7
    )
    fig.legend(
        handles=_legend(busy is not None, bottleneck),
        loc="outside lower center",
        ncols=4,
        fontsize="small",
        frameon=False,
    )
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    return fig


def restyle_graph(
    fig: Figure,
    graph: nx.DiGraph,
    status: dict[str, str],
    busy: dict[str, float] | None,
    bottleneck: str | None,
) -> None:
    """Give a figure of ``draw_graph`` (the same nodes and links, a bottleneck or none
    as before) its new fills, outlines, label colours, link labels and bottleneck."""
    ax = fig.axes[0]
    names = list(graph.nodes)
    colours, edges, widths = _node_style(graph, names, status, busy, bottleneck)
    nodes = ax.collections[0]
    nodes.set_facecolor(colours)
    nodes.set_edgecolor(edges)
    nodes.set_linewidth(widths)
    texts = ax.texts
    for text, fill in zip(texts[: len(names)], colours, strict=True):
        text.set_color(text_colour(fill))
        patch = text.get_bbox_patch()
        if patch is not None:
            patch.set_facecolor(fill)
    labels = _edge_labels(graph, busy is not None)
    for text, label in zip(texts[len(names) :], labels.values(), strict=False):
        text.set_text(label)
    if bottleneck is not None and fig.legends:
        fig.legends[0].get_texts()[-1].set_text(f"bottleneck: {bottleneck}")


def _extent(graph: nx.DiGraph) -> tuple[int, int]:
    """Columns (generations) and rows (the widest generation) of the graph's layout."""
    try:
        generations = list(nx.topological_generations(graph))
    except nx.NetworkXUnfeasible:
        return len(graph), 1
    return len(generations), max(len(g) for g in generations)


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
