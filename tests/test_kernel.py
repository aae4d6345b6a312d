"""A real kernel (nbclient) runs a notebook that starts a pipeline in one cell, moves
max_demand with the dashboard's slider and re-runs a %%stage cell while it runs, then
checks in its last cell that no event was lost."""

from __future__ import annotations

import nbformat
import pytest
from helpers import GATED_NUMBERS
from nbclient import NotebookClient

SETUP = """\
import asyncio
import genstage_nb as gs
%load_ext genstage_nb
p = gs.Pipeline(metrics_interval=0.05)
LIMIT, HALF = 2000, 1000
GATE = asyncio.Event()"""

NUMBERS = "%%stage numbers --pipeline p\n" + GATED_NUMBERS

TAG_V1 = """\
%%stage tag --subscribe-to numbers --max-demand 10 --pipeline p
def handle_events(events):
    return [(e, "v1") for e in events]"""

TAG_V2 = """\
%%stage tag --subscribe-to numbers --pipeline p
def handle_events(events):
    return [(e, "v2") for e in events]"""

SINK = """\
%%stage sink --subscribe-to tag --max-demand 10 --pipeline p
def init(self):
    self.seen = []

def handle_events(self, events):
    self.seen.extend(events)"""

WAIT_HALF = """\
while len(getattr(p.stages["sink"], "seen", ())) < HALF:
    await asyncio.sleep(0.01)
print(p.status)"""

SLIDER = """\
dash = p.dashboard(refresh=0.05)
slider = [s for s in dash.sliders if s.max_slider.description == "numbers → tag"][0]
slider.max_slider.value = 7
assert p.graph.edges["numbers", "tag"]["subscription"].max_demand == 7
dash"""

FINISH = """\
GATE.set()
await p.wait()
print(p.status)"""

CHECK = """\
seen = p.stages["sink"].seen
assert sorted(e for e, _ in seen) == list(range(LIMIT)), "events lost or duplicated"
assert all(v == "v1" for e, v in seen if e < HALF)
assert all(v == "v2" for e, v in seen if e >= HALF)
totals = p.metrics.totals()
assert totals.loc["sink", "events_in"] == LIMIT
assert totals.loc["numbers", "events_out"] == totals.loc["tag", "events_in"] == LIMIT
print("no event lost:", len(seen))"""

BACKGROUND_FAILURE = """\
q = gs.Pipeline("q")
q.link(q.add(gs.from_iterable([1, 2]), name="src"), q.add(gs.consumer(lambda e: 1 / 0, name="divide")))
q.start()
while q.error is None:  # set, and reported, once the background run has ended
    await asyncio.sleep(0.01)
print("status:", q.status)"""


@pytest.mark.timeout(300)
def test_notebook_runs_swaps_and_tunes_a_live_pipeline_in_a_real_kernel(tmp_path):
    cells = [
        SETUP,
        NUMBERS,
        "%%stage tag --pipeline p\ndef handle_events(events):\n    return events",
        SINK,
        TAG_V1,
        "%pipeline start --pipeline p",
        WAIT_HALF,
        SLIDER,
        TAG_V2,
        FINISH,
        CHECK,
        BACKGROUND_FAILURE,
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [
        "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        for cell in nb.cells
    ]
    assert "stage 'tag' (producer_consumer) code replaced" in outputs[8]
    assert "'numbers': 'done', 'tag': 'done', 'sink': 'done'" in outputs[9]
    assert "no event lost: 2000" in outputs[10]
    # A background failure is shown in the notebook: stage, error and traceback.
    errors = "".join(o.get("text", "") for o in nb.cells[11].outputs if o.get("name") == "stderr")
    assert "stage 'divide' failed in handle_events" in errors
    assert "Traceback" in errors and "ZeroDivisionError: division by zero" in errors
    assert "pipeline q stopped: stage 'divide' failed: ZeroDivisionError" in errors
    assert "'divide': 'failed'" in outputs[11]
    # The dashboard rendered as a widget.
    assert any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in nb.cells[7].outputs
    )


PAUSE_SETUP = """\
import asyncio
import genstage_nb as gs
%load_ext genstage_nb
p = gs.default_pipeline()  # on_failure="pause"
LIMIT, HALF = 600, 300
GATE = asyncio.Event()"""

PAUSE_NUMBERS = "%%stage numbers\n" + GATED_NUMBERS

BUGGY_SINK = """\
%%stage sink --subscribe-to numbers --max-demand 10
def init(self):
    self.seen = []

def handle_events(self, events):
    if 450 in events:
        raise ValueError("a bug in the sink")
    self.seen.extend(events)"""

FIXED_SINK = """\
%%stage sink --subscribe-to numbers --max-demand 10
def init(self):
    self.seen = []

def handle_events(self, events):
    self.seen.extend(events)"""

OPEN_GATE = """\
GATE.set()  # the bug is past the gate: it fails while this cell runs
failure = await p.wait_paused("sink")
print("status:", p.status["sink"], "events kept:", failure.events)"""

AFTER_FIX = """\
await p.wait()
seen = p.stages["sink"].seen
assert seen == list(range(LIMIT)), "events lost, duplicated or out of order"
assert p.stages["numbers"].n == LIMIT and not p.failures
print("every event once:", len(seen), p.status)"""


@pytest.mark.timeout(300)
def test_a_paused_stage_is_fixed_by_rerunning_its_cell_in_a_real_kernel(tmp_path):
    cells = [
        PAUSE_SETUP,
        PAUSE_NUMBERS,
        BUGGY_SINK,
        "%pipeline start",
        OPEN_GATE,
        "x = 1",
        "%pipeline status",
        FIXED_SINK,
        AFTER_FIX,
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    def stream(i, name):
        return "".join(o.get("text", "") for o in nb.cells[i].outputs if o.get("name") == name)

    # The notice shows once, in the cell that ran when the stage paused, with the
    # traceback of the cell's code; not under the cell that started the pipeline.
    notice = "stage 'sink' paused after a failure in handle_events: ValueError: a bug"
    assert notice in stream(4, "stderr")
    assert 'raise ValueError("a bug in the sink")' in stream(4, "stderr")
    assert "status: paused events kept: [450, 451, 452, 453, 454]" in stream(4, "stdout")
    assert "paused" not in stream(3, "stderr") + stream(5, "stderr")
    assert "Traceback" not in stream(3, "stderr")  # the log record is left to the notice
    assert notice in stream(6, "stderr")  # %pipeline status, while paused
    assert "code replaced; resumed: handle_events runs again" in stream(7, "stdout")
    assert "every event once: 600" in stream(8, "stdout")
    assert "'sink': 'done'" in stream(8, "stdout")
