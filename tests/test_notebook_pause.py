"""Recover in a notebook, through IPython's InteractiveShell: a failing %%stage cell's
stage pauses in the default pipeline, the notice shows once in the cell that runs, and
re-running the fixed cell (or %pipeline resume / skip, or the dashboard's buttons) goes
on with every event once."""

from __future__ import annotations

import anyio
import pytest
from helpers import NUMBERS_CELL, settle
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import genstage_nb as gs
from genstage_nb.notebook.dashboard import Dashboard
from genstage_nb.pipeline import reset_default_pipeline

pytestmark = pytest.mark.anyio

NUMBERS = NUMBERS_CELL

BROKEN = """
def init(self):
    self.seen = []

def handle_events(self, events):
    if BAD in events:
        raise ValueError("a bug in the cell")
    self.seen.extend(events)
"""

FIXED = """
def init(self):
    self.seen = []

def handle_events(self, events):
    self.seen.extend(events)
"""


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "genstage_nb")
    sh.user_ns.update(LIMIT=300, BAD=150)
    p = reset_default_pipeline()
    sh.run_cell_magic("stage", "numbers", NUMBERS)
    sh.run_cell_magic("stage", "sink --subscribe-to numbers --max-demand 10", BROKEN)
    yield sh
    reset_default_pipeline()
    assert not p.running


async def run_until_paused(tg):
    p = gs.default_pipeline()
    tg.start_soon(p.run)
    while not p.running:
        await anyio.lowlevel.checkpoint()
    failure = await p.wait_paused("sink")
    await settle(p)
    return p, failure


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_rerunning_the_fixed_cell_resumes_with_every_event_once(shell, capsys):
    async with anyio.create_task_group() as tg:
        p, failure = await run_until_paused(tg)
        assert p.status["sink"] == "paused" and 150 in failure.events
        capsys.readouterr()
        # No cell ran when it paused: the notice waits for the next cell.
        shell.run_cell("x = 1")
        err = capsys.readouterr().err
        assert "stage 'sink' paused after a failure in handle_events" in err
        assert "ValueError: a bug in the cell" in err and "its batch of 5 events is kept" in err
        assert "%pipeline resume sink" in err and "raise ValueError" in err  # the traceback
        shell.run_cell("y = 2")
        assert "paused" not in capsys.readouterr().err  # once
        # The fix: run the cell again.
        shell.run_cell_magic("stage", "sink --subscribe-to numbers --max-demand 10", FIXED)
        out = capsys.readouterr().out
        assert "code replaced; resumed: handle_events runs again with its batch of 5" in out
        await p.wait()
    assert p.stages["sink"].seen == list(range(300))
    assert p.failures == {} and p.status == {"numbers": "done", "sink": "done"}
    gs.check_balance(p)


async def test_the_notice_shows_in_the_cell_running_when_it_pauses(shell, capsys):
    async with anyio.create_task_group() as tg:
        shell.events.trigger("pre_run_cell", None)  # a cell is running (awaiting)
        p, _ = await run_until_paused(tg)
        err = capsys.readouterr().err
        assert err.count("stage 'sink' paused") == 1
        shell.events.trigger("post_run_cell", None)
        shell.run_cell("z = 3")
        assert "paused" not in capsys.readouterr().err  # shown already
        shell.run_line_magic("pipeline", "skip sink")
        await p.wait()
    assert p.stages["sink"].seen == [e for e in range(300) if not 150 <= e < 155]
    assert [f.events for f in p.failures["sink"]] == [list(range(150, 155))]


async def test_pipeline_magic_resume_skip_and_status(shell, capsys):
    with pytest.raises(UsageError, match="no stage is paused"):
        shell.run_line_magic("pipeline", "resume")
    with pytest.raises(UsageError, match="is not paused"):
        shell.run_line_magic("pipeline", "skip sink")
    with pytest.raises(UsageError, match="no stage named 'nope'"):
        shell.run_line_magic("pipeline", "resume nope")
    with pytest.raises(UsageError, match="takes no stage name"):
        shell.run_line_magic("pipeline", "status sink")
    async with anyio.create_task_group() as tg:
        p, _ = await run_until_paused(tg)
        capsys.readouterr()
        table = shell.run_line_magic("pipeline", "status")
        assert table.loc["sink", "status"] == "paused"
        assert "stage 'sink' paused after a failure" in capsys.readouterr().err
        p.stages["sink"].handle_events = lambda events: p.stages["sink"].seen.extend(events)
        shell.run_line_magic("pipeline", "resume")  # the one paused stage
        assert "stage 'sink' resumed" in capsys.readouterr().out
        await p.wait()
    assert p.stages["sink"].seen == list(range(300))


async def test_the_dashboard_shows_the_traceback_and_resume_resumes(shell):
    async with anyio.create_task_group() as tg:
        p = gs.default_pipeline()
        dash = Dashboard(p, refresh=60)
        assert dash.paused.children == ()
        p, _ = await run_until_paused(tg)
        # Shown at once (not at the next refresh), with the user's traceback.
        (row,) = dash.paused.children
        text = row.children[0].value
        assert "sink" in text and "ValueError: a bug in the cell" in text
        assert "raise ValueError" in text and "genstage_nb/core" not in text
        assert "color:#b8620b'>paused" in dash._status_table()
        resume, skip = dash.pause_buttons["sink"]
        resume.click()  # not fixed yet: it pauses again, with new buttons
        await p.wait_paused("sink")
        assert dash.pause_buttons["sink"][0] is not resume
        shell.user_ns["BAD"] = -1  # the cell's code reads it: fixed
        dash.pause_buttons["sink"][0].click()
        assert "sink: resumed" in dash.message.value
        await p.wait()
        dash.update()
        assert dash.paused.children == ()
        dash.close()
    assert p.stages["sink"].seen == list(range(300))
    assert dash._on_pause not in p._pause_listeners
