"""Durable runs (DESIGN.md section 9): checkpoints, resume, exactly-once tables.

The kill test runs ``durable_job.py`` in a subprocess, kills it with SIGKILL at random
moments several times in a row (each once the job has gone a random way further), then
runs it to the end: the reduce's results equal a run without kills, the table holds
every row once, and each run resumes from a checkpoint at least as late as the last one
the killed run saw complete (so what is done again is at most what came after it).
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

JOB = Path(__file__).with_name("durable_job.py")
N, KEYS = 100_000, 7


def expected(shape: str) -> dict[str, list[int]]:
    """The job's results without kills: per key (and window, for the Flow) count, sum."""
    sums: dict[str, list[int]] = {}
    for n in range(N):
        key = f"{n - n % 10_000}:{n % KEYS}" if shape == "flow" else str(n % KEYS)
        entry = sums.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += n
    return dict(sorted(sums.items()))


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def kill_when(cmd: list[str], log: Path, cuts: int) -> int:
    """Start the job and SIGKILL it once ``cuts`` more checkpoints were taken (or it ends);
    returns how many log lines it wrote."""
    before = len(lines(log))
    child = subprocess.Popen(cmd)
    try:
        while child.poll() is None:
            new = lines(log)[before:]
            if sum(line.startswith("complete") for line in new) >= cuts:
                child.send_signal(signal.SIGKILL)
                break
            anyio.run(anyio.sleep, 0.01)  # (polling the log of another process)
    finally:
        child.wait(timeout=120)
    return before


@pytest.mark.parametrize(
    ("backend", "shape"), [("asyncio", "class"), ("trio", "map"), ("asyncio", "flow")]
)
def test_killed_again_and_again_then_run_to_the_end(tmp_path, backend, shape):
    db, log = tmp_path / "run.db", tmp_path / "log"
    cmd = [sys.executable, str(JOB), str(db), str(log), backend, shape]
    rng = random.Random(f"{backend}-{shape}")
    runs = []
    for _ in range(3):
        before = kill_when(cmd, log, rng.randint(1, 5))
        runs.append(lines(log)[before:])
    before = len(lines(log))
    subprocess.run(cmd, check=True, timeout=300)
    runs.append(lines(log)[before:])
    kills, redone, gaps = 0, [], [0]
    for killed, then in zip(runs, runs[1:], strict=False):
        if any(line.startswith("done") for line in killed):
            break
        kills += 1
        cuts = [int(x.split()[1]) for x in killed if x.startswith("cut")]
        gaps += [b - a for a, b in zip(cuts, cuts[1:], strict=False)]
        # How far the killed run had gone: its last batch (or its last cut).
        reached = max([int(x.split()[1]) for x in killed if x.startswith(("at", "cut"))] or [0])
        last_cut = 0  # the cut of the last checkpoint it saw complete
        for previous, line in zip(killed, killed[1:], strict=False):
            if line.startswith("complete") and previous.startswith("cut"):
                last_cut = int(previous.split()[1])
        restored = [int(x.split()[1]) for x in then if x.startswith("restored")]
        assert restored, then[:3]
        assert restored[0] >= last_cut  # resumed from the last complete checkpoint (or later)
        redone.append(max(reached - restored[0], 0))
    # Done again after a kill: at most one checkpoint interval's events, and what was in
    # flight (a map's and a batcher's links hold a few hundred).
    assert max(redone) <= max(gaps) + 1_000, (redone, max(gaps))
    done = [line for line in runs[-1] if line.startswith("done")]
    assert done and json.loads(done[-1][5:]) == expected(shape)
    count = 0
    if shape != "flow":  # (a Flow's results are its list: no table)
        with sqlite3.connect(db) as connection:
            count, distinct = connection.execute(
                "SELECT count(*), count(DISTINCT n) FROM rows"
            ).fetchone()
        assert (count, distinct) == (N, N)
    assert kills == 3
    print(
        f"{backend}/{shape}: {kills} kills, events done again per kill {redone} "
        f"(largest interval {max(gaps)} events), {count} rows checked"
    )
