"""The dashboard in a real browser: JupyterLab served on 127.0.0.1, driven in headless
Chromium (Debian's package) by playwright.

The test opens tutorial 04 (a copy), runs all its cells, then checks in the page that
the dashboard renders (status table, one max_demand slider per subscription, a plot
that changes between refreshes once the pipeline runs again), that moving a slider
changes max_demand in the kernel (read back through a new cell), and that the stop
button stops the pipeline. Then a new pipeline whose stage fails pauses: the dashboard
shows its traceback and a Resume button, which (after the fix) resumes it with every
event once. Screenshots go to ``build/browser/``; on failure the
browser's console log is printed.

Outside CI the test skips where Chromium is absent; in CI (``CI`` set) it never skips.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("GENSTAGE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "browser"
NOTEBOOK = "04_tuning_live.ipynb"

pytestmark = pytest.mark.browser

#: Chromium flags for a closed network and no display (no sandbox: CI runs as root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def needs(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser test)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 with a token, in a directory of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log: list[str] = []
        self._ready = threading.Event()
        home = root / ".jupyter-home"
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.open_browser=False",
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append(line.rstrip())
            if f"127.0.0.1:{self.port}/lab" in line:
                self._ready.set()
        self._ready.set()  # the server ended: let wait_ready report it

    def wait_ready(self, timeout: float = 120) -> None:
        if not self._ready.wait(timeout) or self.process.poll() is not None:
            raise AssertionError("JupyterLab did not start:\n" + "\n".join(self.log[-40:]))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def lab(tmp_path):
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, tmp_path / NOTEBOOK)
    server = JupyterLab(tmp_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def run_in_new_cell(page, code: str, expect: str, timeout: float = 60_000) -> str:
    """Add a cell at the end of the notebook, run it, and return its output once
    ``expect`` (a regular expression) shows in it."""
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    index = cells.count()  # the new cell's place among the code cells
    page.locator(".jp-Notebook .jp-Cell").last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below, in edit mode after Enter
    page.keyboard.press("Enter")
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")  # runs it (and adds an empty cell after it)
    cell = cells.nth(index)
    output = cell.locator(".jp-OutputArea-output")
    output.filter(has_text=re.compile(expect)).first.wait_for(timeout=timeout)
    return "\n".join(output.all_inner_texts())


#: The dashboard's layout as the page lays it out: its output area's box, whether
#: anything in it overflows sideways, and each picture's box and natural size.
LAYOUT = """(el) => {
  const out = el.closest('.jp-OutputArea-output') || el.parentElement;
  const box = out.getBoundingClientRect();
  const pictures = [...el.querySelectorAll('img')].map((img) => {
    const r = img.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
            width: r.width, height: r.height,
            naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight};
  });
  return {left: box.left, right: box.right, scrollWidth: out.scrollWidth,
          clientWidth: out.clientWidth, pictures};
}"""

#: True once the pictures fit the output area at the current width (after a reflow).
FITS = """(el) => {
  const out = el.closest('.jp-OutputArea-output') || el.parentElement;
  const right = out.getBoundingClientRect().right;
  const imgs = [...el.querySelectorAll('img')];
  return imgs.length === 2 && imgs.every((i) => i.naturalWidth > 0
    && i.getBoundingClientRect().right <= right + 1);
}"""


def check_layout(page, dashboard, width: int, name: str) -> dict:
    """At a viewport ``width``: nothing of the dashboard overflows its cell, each
    picture is shown whole (scaled, never cropped or squashed: every legend in it is
    seen), and the screenshot goes to ``build/browser/``."""
    page.set_viewport_size({"width": width, "height": 1000})
    page.wait_for_function(FITS, arg=dashboard.element_handle(), timeout=60_000)
    dashboard.scroll_into_view_if_needed()
    layout = dashboard.evaluate(LAYOUT)
    assert layout["scrollWidth"] <= layout["clientWidth"] + 1, (name, layout)
    for picture in layout["pictures"]:
        assert layout["left"] - 1 <= picture["left"] and picture["right"] <= layout["right"] + 1
        assert 0 < picture["width"] <= picture["naturalWidth"] + 1, (name, picture)
        shown = picture["width"] / picture["height"]
        drawn = picture["naturalWidth"] / picture["naturalHeight"]
        assert abs(shown - drawn) / drawn < 0.02, (name, picture)  # not squashed
    dashboard.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    return layout


#: A pipeline whose consumer fails at event 30 while ``BUG`` is set: it pauses (typed
#: into a new cell; the dashboard is shown in its output).
PAUSING = """\
b = gs.Pipeline("browser", on_failure="pause")
BUG, got = True, []
def check(events):
    if BUG and 30 in events:
        raise ValueError("a bug at 30")
    got.extend(events)
b.link(b.add(gs.from_iterable(range(100)), name="src"), b.add(gs.consumer(check)), max_demand=5)
bdash = b.dashboard(refresh=0.2)
display(bdash)
b.start()
await b.wait_paused("check")
print("paused", b.status["check"])"""


@pytest.mark.timeout(900)
def test_the_dashboard_works_in_jupyterlab(lab):
    needs(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console: list[str] = []

    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.set_default_timeout(60_000)
        try:
            page.goto(lab.url(f"lab/tree/{NOTEBOOK}"))
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
            # The kernel is up when its status shows idle: "Run All Cells" before that
            # runs nothing on a busy machine (the cells stay unrun, the kernel idle).
            page.get_by_text(re.compile(r"\(ipykernel\) \| Idle")).first.wait_for(timeout=120_000)
            page.locator(".jp-Notebook").first.click()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()

            # The last cell checks the books once the pipeline has stopped.
            last = page.locator(".jp-Notebook .jp-CodeCell").last
            last.locator(".jp-OutputArea-output").filter(has_text="True").wait_for(timeout=180_000)
            page.screenshot(path=str(ARTIFACTS / "1-all-cells-run.png"), full_page=True)

            dashboard = page.locator(".widget-vbox", has=page.locator("button", has_text="Start"))
            dashboard = dashboard.filter(has=page.locator("table")).first
            dashboard.scroll_into_view_if_needed()

            # The status table: one row per stage.
            table = dashboard.locator("table").first
            for stage in ("requests", "parse", "lookup", "store"):
                assert table.locator("td", has_text=stage).count() >= 1, stage

            # One max_demand slider per subscription (each edge named), with its value.
            edges = dashboard.locator(".widget-slider", has_text="→")
            assert edges.count() == 3
            first = edges.first
            # Rendered, not only in the DOM (a widget view may still be laying out).
            page.wait_for_function(
                "el => el.innerText.includes('requests → parse')",
                arg=first.element_handle(),
                timeout=60_000,
            )
            assert "requests → parse" in first.inner_text()

            # Start the pipeline again: the plot changes between refreshes.
            dashboard.locator("button", has_text="Start").click()
            table.locator("td", has_text="running").first.wait_for(timeout=60_000)
            # The live graph (first picture) beside the metrics plots (second).
            assert dashboard.locator("img").count() == 2
            plot = dashboard.locator("img").nth(1)
            plot.wait_for()
            before = plot.get_attribute("src")
            page.wait_for_function(
                "([img, src]) => img.getAttribute('src') !== src",
                arg=[plot.element_handle(), before],
                timeout=60_000,
            )
            page.screenshot(path=str(ARTIFACTS / "2-running.png"), full_page=True)
            # Narrow, the metrics go below the graph; wide, beside it; never clipped.
            narrow = check_layout(page, dashboard, 760, "2-narrow")
            graph, metrics = narrow["pictures"]
            assert metrics["top"] >= graph["bottom"] - 1, narrow
            wide = check_layout(page, dashboard, 2400, "2-wide")
            graph, metrics = wide["pictures"]
            assert metrics["top"] < graph["bottom"] and metrics["left"] >= graph["right"] - 1
            page.set_viewport_size({"width": 1400, "height": 1000})
            # The explanation under them names the bottleneck once two samples exist.
            dashboard.locator("b", has_text="Bottleneck:").first.wait_for(timeout=60_000)
            dashboard.locator("img").first.screenshot(path=str(ARTIFACTS / "2-graph.png"))

            # Move the first slider with the keyboard (as a user does): max_demand
            # follows in the kernel.
            # (The tutorial let the pipeline tune itself: the slider shows where it left it.)
            handle = first.locator(".noUi-handle").first
            readout = first.locator(".widget-readout")
            before = int(readout.inner_text().strip().replace(",", ""))
            handle.focus()
            handle.press("ArrowLeft")
            page.wait_for_function(
                "([el, v]) => el.textContent.trim().replace(/,/g, '') === v",
                arg=[readout.element_handle(), str(before - 1)],
            )
            text = run_in_new_cell(
                page,
                'print("max_demand", p.graph.edges["requests", "parse"]["subscription"]'
                ".max_demand)",
                r"max_demand \d+",
            )
            assert f"max_demand {before - 1}" in text, text

            # The stop button stops the pipeline.
            dashboard.locator("button", has_text="Stop").click()
            dashboard.get_by_text("stopped", exact=True).first.wait_for(timeout=60_000)
            text = run_in_new_cell(page, 'print("running", p.running)', r"running \w+")
            assert "running False" in text, text
            page.screenshot(path=str(ARTIFACTS / "3-stopped.png"), full_page=True)

            # A stage that fails pauses; the dashboard shows it with its traceback and a
            # Resume button; fix what the hook reads, click Resume: every event once.
            text = run_in_new_cell(page, PAUSING, r"paused \w+")
            # The notice shows once in the whole notebook: in this cell (the one running
            # when it paused), beside the dashboard's own line about it.
            notices = page.locator(
                "[data-mime-type='application/vnd.jupyter.stderr']",
                has_text="stage 'check' paused after a failure in handle_events",
            )
            assert notices.count() == 1 and "ValueError: a bug at 30" in text
            resume = page.locator("button", has_text="Resume check")
            resume.wait_for(timeout=60_000)
            paused = page.locator(".widget-html", has_text="ValueError: a bug at 30").first
            assert "raise ValueError" in paused.inner_text()
            page.screenshot(path=str(ARTIFACTS / "4-paused.png"), full_page=True)
            run_in_new_cell(page, "BUG = False\nprint('fixed')", r"fixed")
            resume.click()
            text = run_in_new_cell(
                page,
                "await b.wait()\nprint('once', got == list(range(100)), b.status, b.failures)",
                r"once \w+",
            )
            assert "once True {'src': 'done', 'check': 'done'} {}" in text, text
            page.screenshot(path=str(ARTIFACTS / "5-resumed.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            print("browser console:\n" + "\n".join(console))
            print("JupyterLab log (last lines):\n" + "\n".join(lab.log[-40:]))
            raise
        finally:
            browser.close()
