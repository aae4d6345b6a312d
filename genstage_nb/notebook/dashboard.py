"""``Pipeline.dashboard()``: watch and tune a running pipeline from a notebook.

Start and stop buttons, a status table, one ``IntSlider`` per subscription bound live to
its ``max_demand`` (with a second one for ``min_demand``), the graph drawn live (nodes
shaded by how busy each stage is, the bottleneck outlined, links labelled with
max_demand and pending demand) beside the metrics plots, and the explanation of what
limits the pipeline (``Pipeline.explain``) under them. A paused stage
(``on_failure="pause"``) shows with its traceback and Resume and Skip buttons. While
the pipeline runs, a task on the kernel's event loop refreshes the table and the plots
every ``refresh`` seconds (rendering takes a fraction of that, between two awaits); it
stops when the pipeline stops or the widget is closed.
"""

from __future__ import annotations

import asyncio
import html
import io
from typing import Any

import ipywidgets as w

from ..core.lifecycle import user_traceback
from ..core.subscription import Subscription
from ..executors import dask_dashboards
from ..watchdog import current_warnings
from .notices import describe


def _edge(sub: Subscription) -> str:
    return f"{sub.producer.name} → {sub.consumer.name}"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    return buf.getvalue()


def _markdown_html(text: str) -> str:
    """The explanation's Markdown (a table, a list, bold and code) as HTML."""
    import re

    def inline(line: str) -> str:
        line = html.escape(line)
        line = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", line)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", line)

    out: list[str] = []
    rows: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-:"):
                continue
            tag = "th" if not rows else "td"
            rows.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if rows:
            out.append("<table>" + "".join(rows) + "</table>")
            rows = []
        if line.startswith("- "):
            out.append(f"<div>&bull; {inline(line[2:])}</div>")
        elif line:
            out.append(f"<div>{inline(line)}</div>")
    if rows:
        out.append("<table>" + "".join(rows) + "</table>")
    return "".join(out)


class DemandSliders(w.HBox):
    """The sliders of one subscription: ``max_demand`` and ``min_demand``, live."""

    def __init__(self, sub: Subscription) -> None:
        self.subscription = sub
        self._adjusting = False
        top = max(1000, 4 * sub.max_demand)
        self.max_slider = w.IntSlider(
            value=sub.max_demand,
            min=1,
            max=top,
            description=_edge(sub),
            continuous_update=False,
            style={"description_width": "initial"},
            layout=w.Layout(width="60%"),
        )
        self.min_slider = w.IntSlider(
            value=sub.min_demand,
            min=0,
            max=max(sub.max_demand - 1, 0),
            description="min_demand",
            continuous_update=False,
            layout=w.Layout(width="40%"),
        )
        self.max_slider.observe(self._on_max, names="value")
        self.min_slider.observe(self._on_min, names="value")
        super().__init__([self.max_slider, self.min_slider])

    def follow(self) -> None:
        """Show the subscription's values if something else changed them (code, a
        tuner), without tuning it again."""
        sub = self.subscription
        if self.max_slider.value == sub.max_demand and self.min_slider.value == sub.min_demand:
            return
        self._adjusting = True
        try:
            if sub.max_demand > self.max_slider.max:
                self.max_slider.max = 2 * sub.max_demand
            self._following = True
            self.max_slider.value = sub.max_demand
            self.min_slider.max = max(sub.max_demand - 1, 0)
            self.min_slider.value = sub.min_demand
        finally:
            self._following = False
            self._adjusting = False

    def _on_max(self, change: dict) -> None:
        if getattr(self, "_following", False):
            return
        new_max = change["new"]
        sub = self.subscription
        sub.tune(max_demand=new_max)  # an explicit min_demand above it goes back to half
        self._adjusting = True
        top = max(new_max - 1, 0)
        try:
            # Widen before moving the value, narrow after, so it is never clamped.
            if top > self.min_slider.max:
                self.min_slider.max = top
            self.min_slider.value = sub.min_demand
            self.min_slider.max = top
        finally:
            self._adjusting = False

    def _on_min(self, change: dict) -> None:
        sub = self.subscription
        if not self._adjusting and change["new"] != sub.min_demand:
            sub.tune(min_demand=min(change["new"], sub.max_demand - 1))


class Dashboard(w.VBox):
    """The dashboard widget of one pipeline (see ``Pipeline.dashboard``)."""

    def __init__(self, pipeline: Any, refresh: float = 1.0) -> None:
        self.pipeline = pipeline
        self.refresh = refresh
        self.start_button = w.Button(description="Start", icon="play", button_style="success")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.auto = w.ToggleButton(
            value=False, description="auto", icon="magic", tooltip="let it tune max_demand"
        )
        self.auto.observe(self._on_auto, names="value")
        self.tuner: Any = None
        self.status = w.HTML()
        self.warnings = w.HTML()
        self.paused = w.VBox()  # a paused stage: its traceback, Resume and Skip
        self.pause_buttons: dict[str, tuple[w.Button, w.Button]] = {}
        self._paused_key: tuple = ()
        self.sliders = [DemandSliders(sub) for sub in pipeline.subscriptions]
        self.plot = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.graph = w.Image(format="png", layout=w.Layout(max_width="480px"))
        self.explanation = w.HTML()
        self.message = w.HTML()
        self.refreshes = 0
        self._task: asyncio.Task | None = None
        self._closed = False
        super().__init__(
            [
                w.HBox([self.start_button, self.stop_button, self.auto, self.message]),
                self.status,
                self.paused,
                self.warnings,
                w.VBox(self.sliders),
                w.HBox([self.graph, self.plot]),
                self.explanation,
            ]
        )
        pipeline._pause_listeners.append(self._on_pause)
        self.update()
        if pipeline.running:
            self._follow()

    # -- buttons -----------------------------------------------------------------

    def start(self) -> None:
        if self.pipeline.running:
            self.message.value = "already running"
            return
        try:
            self.pipeline.start()
        except RuntimeError as exc:
            self.message.value = html.escape(str(exc))
            return
        self.message.value = "running"
        self._follow()

    def stop(self) -> None:
        self.pipeline.stop()
        self.message.value = "stopping"

    def _on_auto(self, change: dict) -> None:
        """The "auto" toggle: a tuner (``Pipeline.autotune``) moves the sliders."""
        if change["new"]:
            self.tuner = self.pipeline.autotune()
            self.tuner.listeners.append(self._follow_tuner)
            self.message.value = "tuning max_demand"
        elif self.tuner is not None:
            self.tuner.stop()
            self.tuner = None
            self.message.value = "tuning stopped"

    def _follow_tuner(self, sub: Subscription, value: int) -> None:
        for sliders in self.sliders:
            if sliders.subscription is sub:
                sliders.follow()

    def _on_pause(self, pipeline: Any, name: str, failure: Any) -> None:
        self.update()  # at once, not at the next refresh
        self._follow()  # (a pipeline started elsewhere: refresh from now on)

    def _show_paused(self) -> None:
        """A row per paused stage: what failed, the user's traceback, Resume and Skip."""
        paused = self.pipeline.paused
        key = tuple((name, id(failure)) for name, failure in paused.items())
        if key == self._paused_key:
            return  # the same buttons stay (a click on them must not be lost)
        self._paused_key = key
        self.pause_buttons = {}
        rows = []
        for name, failure in paused.items():
            resume = w.Button(
                description=f"Resume {name}",
                icon="play",
                button_style="warning",
                tooltip=f"call {failure.hook} again with the stage's code as it is now",
                layout=w.Layout(width="auto"),
            )
            skip = w.Button(
                description=f"Skip {name}'s batch",
                icon="forward",
                tooltip="drop the failed batch (counted as failed) and go on",
                layout=w.Layout(width="auto"),
            )
            resume.on_click(lambda _, name=name: self._go_on("resume", name))
            skip.on_click(lambda _, name=name: self._go_on("skip", name))
            self.pause_buttons[name] = (resume, skip)
            text = describe(self.pipeline, name, failure, traceback=False)
            shown = w.HTML(
                f"<div style='color:#b8620b'>&#9888; {html.escape(text)}</div>"
                f"<pre style='font-size:85%'>{html.escape(user_traceback(failure.exception))}"
                f"</pre>"
            )
            rows.append(w.VBox([shown, w.HBox([resume, skip])]))
        self.paused.children = rows

    def _go_on(self, command: str, name: str) -> None:
        """The Resume or Skip button of a paused stage."""
        try:
            getattr(self.pipeline, command)(name)
        except (ValueError, RuntimeError) as exc:
            self.message.value = html.escape(str(exc))
            return
        done = "resumed" if command == "resume" else "skipped its failed batch"
        self.message.value = html.escape(f"{name}: {done}")
        self._show_paused()

    # -- refreshing --------------------------------------------------------------

    def _follow(self) -> None:
        """Refresh while the pipeline runs (a task on the running loop)."""
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (plain Python): refresh by calling update()
        self._task = loop.create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.refresh)
            if self._closed:
                return
            self.update()
            if not self.pipeline.running:
                self.message.value = "stopped"
                return

    def update(self) -> None:
        """Redraw the status table and the plots now."""
        self.refreshes += 1
        for sliders in self.sliders:  # a tuner or code may have changed a link
            sliders.follow()
        self.status.value = self._status_table()
        self._show_paused()
        links = "".join(
            f"<div>{html.escape(name)} runs on Dask: <a href='{html.escape(link)}' "
            f"target='_blank'>Dask dashboard</a></div>"
            for name, link in dask_dashboards(self.pipeline).items()
        )
        self.warnings.value = links + "".join(
            f"<div style='color:#b8620b'>&#9888; {html.escape(str(record))}</div>"
            for record in current_warnings(self.pipeline.warnings)
        )
        self.graph.value = _png(self.pipeline.draw(busy=True))
        if len(self.pipeline.metrics):
            self.plot.value = _png(self.pipeline.plot())
        self.explanation.value = _markdown_html(self.pipeline.explain()._repr_markdown_())

    def _status_table(self) -> str:
        totals = self.pipeline.metrics.totals()
        frame = self.pipeline.metrics.frame() if len(self.pipeline.metrics) else None
        rates: dict[str, float] = {}
        if frame is not None and not frame.empty:
            last = frame[frame["metric"] == "throughput"].groupby("stage")["value"].last()
            rates = last.to_dict()
        head = "".join(
            f"<th>{h}</th>" for h in ("stage", "kind", "status", "events", "events/s", "buffer")
        )
        rows = []
        for name, row in totals.iterrows():
            handled = row["events_out"] if row["kind"] == "producer" else row["events_in"]
            colour = {"failed": "#d9534f", "restarting": "#f0a63a", "paused": "#b8620b"}.get(
                row["status"], "inherit"
            )
            rows.append(
                f"<tr><td>{html.escape(str(name))}</td><td>{row['kind']}</td>"
                f"<td style='color:{colour}'>{row['status']}</td><td>{handled}</td>"
                f"<td>{rates.get(name, 0.0):.0f}</td><td>{row['buffer_size']}</td></tr>"
            )
        return f"<table><tr>{head}</tr>{''.join(rows)}</table>"

    def close(self) -> None:
        """Stop refreshing and close the widget."""
        self._closed = True
        if self._on_pause in self.pipeline._pause_listeners:
            self.pipeline._pause_listeners.remove(self._on_pause)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().close()
