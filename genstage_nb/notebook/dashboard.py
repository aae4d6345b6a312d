"""``Pipeline.dashboard()``: watch and tune a running pipeline from a notebook.

From the top: start and stop buttons and the "auto" toggle (a tuner; it shows whether it
tunes, has settled and why), the progress bar, a status table (the one events/s, with
its window), a paused stage's traceback with Resume and Skip, warnings, one
``IntSlider`` per subscription bound live to its ``max_demand`` (and one for
``min_demand``), the graph (nodes shaded by how busy each stage is, the bottleneck
outlined, links labelled with max_demand and pending demand) beside the metrics panels
-- below them when the cell is narrow: the layout follows the cell's width and the
pictures scale to it -- a live table of the latest events of a stage chosen from a
list (``Pipeline.peek``), and the explanation of what limits the pipeline.

While the pipeline runs, a task on the kernel's event loop refreshes it: the text on
the loop (a few milliseconds), the pictures drawn in a worker thread
(``render.py``), spaced so that drawing takes at most 5% of the time. It stops when
the pipeline stops or the widget is closed.
"""

from __future__ import annotations

import asyncio
import html
import time
from typing import Any

import ipywidgets as w

from ..core.lifecycle import user_traceback
from ..core.peeking import stop_peeking
from ..core.subscription import Subscription
from ..executors import dask_dashboards
from ..metrics import rate_label, recent
from ..watchdog import current_warnings
from .notices import describe
from .progressbar import ProgressBar, refreshing
from .render import LivePictures, Throttle, snapshot


def _edge(sub: Subscription) -> str:
    return f"{sub.producer.name} → {sub.consumer.name}"


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
        super().__init__([self.max_slider, self.min_slider], layout=w.Layout(flex_flow="row wrap"))

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


#: Rows of the latest events table.
PEEK_ROWS = 10


class PeekTable(w.VBox):
    """The latest events of a stage chosen from a list (``Pipeline.peek``)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        producing = [n for n, d in pipeline.graph.nodes(data=True) if d["kind"] != "consumer"]
        self.choice = w.Dropdown(
            options=["(none)", *producing],
            value="(none)",
            description="latest events of",
            style={"description_width": "initial"},
        )
        self.table = w.HTML()
        self.choice.observe(lambda _: self.update(), names="value")
        super().__init__([self.choice, self.table], layout=w.Layout(width="100%"))

    def update(self) -> None:
        name = self.choice.value
        if name == "(none)" or name not in self.pipeline.stages:
            self.table.value = ""
            return
        events = self.pipeline.peek(name, PEEK_ROWS)
        rows = "".join(
            f"<tr><td>{i}</td><td><code>{html.escape(_short(event))}</code></td></tr>"
            for i, event in enumerate(reversed(events), 1)
        )
        note = "" if events else "<i>none yet: it keeps them from now on</i>"
        self.table.value = (
            f"<table><tr><th>#</th><th>{html.escape(name)}: newest first</th></tr>{rows}"
            f"</table>{note}"
        )

    def close(self) -> None:
        for proc in self.pipeline._procs.values():
            stop_peeking(proc)
        super().close()


def _short(event: Any, width: int = 120) -> str:
    text = repr(event)
    return text if len(text) <= width else text[: width - 1] + "…"


class Dashboard(w.VBox):
    """The dashboard widget of one pipeline (see ``Pipeline.dashboard``)."""

    def __init__(self, pipeline: Any, refresh: float = 1.0) -> None:
        self.pipeline = pipeline
        self.refresh = refresh
        self.throttle = Throttle(refresh)
        self.pictures = LivePictures()
        self.start_button = w.Button(description="Start", icon="play", button_style="success")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.auto = w.ToggleButton(
            value=False, description="auto: off", icon="magic", tooltip="let it tune max_demand"
        )
        self.auto.observe(self._on_auto, names="value")
        self.tuner: Any = None
        self.progress = ProgressBar(pipeline)
        self.status = w.HTML(layout=w.Layout(overflow="auto", max_width="100%"))
        self.warnings = w.HTML()
        self.paused = w.VBox()  # a paused stage: its traceback, Resume and Skip
        self.pause_buttons: dict[str, tuple[w.Button, w.Button]] = {}
        self._paused_key: tuple = ()
        self.sliders = [DemandSliders(sub) for sub in pipeline.subscriptions]
        # Each picture at its own size, or narrower (scaled, never cropped) when the cell
        # is; side by side when they fit, the metrics below the graph when not.
        picture = {"flex": "0 1 auto", "min_width": "0", "max_width": "100%", "height": "auto"}
        self.graph = w.Image(format="png", layout=w.Layout(**picture))
        self.plot = w.Image(format="png", layout=w.Layout(**picture))
        self.peek = PeekTable(pipeline)
        self.explanation = w.HTML()
        self.message = w.HTML()
        self.refreshes = 0
        self.loop_seconds: list[float] = []  # how long each refresh held the loop
        self.draw_seconds: list[float] = []  # how long each drawing took (its thread)
        self._task: asyncio.Task | None = None
        self._closed = False
        row = {"display": "flex", "flex_flow": "row wrap", "width": "100%"}
        super().__init__(
            [
                w.HBox(
                    [self.start_button, self.stop_button, self.auto, self.message],
                    layout=w.Layout(align_items="center", **row),
                ),
                self.progress,
                self.status,
                self.paused,
                self.warnings,
                w.VBox(self.sliders, layout=w.Layout(width="100%")),
                w.Box([self.graph, self.plot], layout=w.Layout(align_items="flex-start", **row)),
                self.peek,
                self.explanation,
            ],
            layout=w.Layout(width="100%", max_width="100%", overflow="hidden"),
        )
        pipeline._pause_listeners.append(self._on_pause)
        self._refresh_now()
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
        self._show_tuner()

    def _show_tuner(self) -> None:
        """The toggle says what the tuner does: off, tuning, settled (and why)."""
        tuner = self.tuner
        state = "off" if tuner is None else tuner.state
        self.auto.description = f"auto: {state}"
        self.auto.button_style = {"tuning": "info", "settled": "success"}.get(state, "")
        self.auto.tooltip = (tuner.reason if tuner is not None else "") or "let it tune max_demand"

    def _follow_tuner(self, sub: Subscription, value: int) -> None:
        for sliders in self.sliders:
            if sliders.subscription is sub:
                sliders.follow()

    def _on_pause(self, pipeline: Any, name: str, failure: Any) -> None:
        self._refresh_now()  # at once, not at the next refresh
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
        self._task = refreshing(self._task, self._refresh_loop)

    async def _refresh_loop(self) -> None:
        """The text every ``refresh`` seconds, on the loop; the pictures drawn in a
        worker thread meanwhile, as often as the throttle allows."""
        loop = asyncio.get_running_loop()
        drawing: asyncio.Future | None = None
        next_pictures = 0.0
        while not self._closed:
            await asyncio.sleep(self.refresh)
            if self._closed:
                return
            held = time.perf_counter()
            self._update_text()
            if drawing is None and held >= next_pictures:
                drawing = loop.run_in_executor(None, self._draw, snapshot(self.pipeline))
            self.loop_seconds.append(time.perf_counter() - held)
            if drawing is not None and (drawing.done() or not self.pipeline.running):
                self._show_pictures(await drawing)
                drawing = None
                next_pictures = time.perf_counter() + self.throttle.pause()
            if not self.pipeline.running:
                shot = snapshot(self.pipeline)
                self._show_pictures(await loop.run_in_executor(None, self._draw, shot))
                if self.pipeline.running:
                    continue  # started again while the last pictures were drawn
                self._update_text()
                self.message.value = "stopped"
                return

    def _draw(self, shot: Any) -> tuple[bytes, bytes | None]:
        """Draw ``shot`` (in a worker thread); the throttle learns how long it took."""
        began = time.perf_counter()
        try:
            return self.pictures.render(shot)
        finally:
            self.throttle.took = time.perf_counter() - began
            self.draw_seconds.append(self.throttle.took)

    def _refresh_now(self) -> None:
        """The text now; the pictures drawn in a worker thread when an event loop runs
        here (a kernel: drawing must not hold it), else now."""
        self._update_text()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._show_pictures(self.pictures.render(snapshot(self.pipeline)))
            return
        drawing = loop.run_in_executor(None, self._draw, snapshot(self.pipeline))
        drawing.add_done_callback(
            lambda done: (
                None if self._closed or done.exception() else self._show_pictures(done.result())
            )
        )

    def update(self) -> None:
        """Refresh everything now, pictures included (drawn here, in the caller's thread)."""
        self._update_text()
        self._show_pictures(self.pictures.render(snapshot(self.pipeline)))

    def _update_text(self) -> None:
        """The table, the bar, the sliders, the notices and the explanation (cheap)."""
        self.refreshes += 1
        for sliders in self.sliders:  # a tuner or code may have changed a link
            sliders.follow()
        explanation = self.pipeline.explain()  # (takes the latest sample first)
        self.status.value = self._status_table()
        self.progress.update()
        self._show_tuner()
        self._show_paused()
        links = "".join(
            f"<div>{html.escape(name)} runs on Dask: <a href='{html.escape(link)}' "
            f"target='_blank'>Dask dashboard</a></div>"
            for name, link in dask_dashboards(self.pipeline).items()
        )
        notices = self.tuner.notices[-3:] if self.tuner is not None else []
        resumed = self.pipeline.resumed  # a durable run: where it started
        self.warnings.value = (
            links
            + (f"<div>&#8635; {html.escape(resumed)}</div>" if resumed else "")
            + "".join(
                f"<div style='color:#b8620b'>&#9888; {html.escape(str(record))}</div>"
                for record in current_warnings(self.pipeline.warnings)
            )
            + "".join(f"<div>autotune: {html.escape(text)}</div>" for text in notices)
        )
        self.peek.update()
        self.explanation.value = _markdown_html(explanation._repr_markdown_())

    def _show_pictures(self, pictures: tuple[bytes, bytes | None]) -> None:
        graph, plot = pictures
        self.graph.value = graph
        if plot is not None:
            self.plot.value = plot

    def _status_table(self) -> str:
        """A row per stage: kind, status, events handled, the one events/s, buffer."""
        totals = self.pipeline.metrics.totals()
        rates = {name: row["throughput"] for name, row in (recent(self.pipeline) or {}).items()}
        columns = ("stage", "kind", "status", "events", rate_label(self.pipeline), "buffer")
        head = "".join(f"<th>{html.escape(h).replace(' (', '<br>(')}</th>" for h in columns)
        rows = []
        for name, row in totals.iterrows():
            handled = row["events_out"] if row["kind"] == "producer" else row["events_in"]
            colour = {"failed": "#d9534f", "restarting": "#f0a63a", "paused": "#b8620b"}.get(
                row["status"], "inherit"
            )
            rows.append(
                f"<tr><td>{html.escape(str(name))}</td><td>{row['kind'].replace('_', '-')}</td>"
                f"<td style='color:{colour}'>{row['status']}</td><td>{handled:,}</td>"
                f"<td>{rates.get(name, 0.0):,.0f}</td><td>{row['buffer_size']:,}</td></tr>"
            )
        return f"<table><tr>{head}</tr>{''.join(rows)}</table>"

    def close(self) -> None:
        """Stop refreshing and close the widget (and what it peeks at)."""
        self._closed = True
        self.peek.close()
        self.progress.close()
        if self._on_pause in self.pipeline._pause_listeners:
            self.pipeline._pause_listeners.remove(self._on_pause)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().close()
