"""The benchmarks stay runnable: ``bench/run.py --quick`` runs every script end to end
(each checks its own results) and prints its tables. No timing is asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_every_benchmark_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for table in (
        "W1:",
        "W2:",
        "W3 fan-out:",
        "W3:",
        "max_demand",
        "W4:",
        "HTTP GET",
        "Autotune:",
        "W5:",
        "W1 with checkpoints",
        "W5 with checkpoints",
    ):
        assert table in out, out
