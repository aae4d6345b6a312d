"""The hot path's cost in CPU instructions per event may not grow: ``bench/instructions.py
--check`` (W1 under valgrind, deterministic to well under 1%) against the figures in
``bench/instructions.json``, 3% at most. Outside CI it skips where valgrind is absent; in
CI (``CI`` set, valgrind installed by ``.ci/run``) it never skips."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_instructions_per_event_do_not_grow():
    if not shutil.which("valgrind"):
        if os.environ.get("CI"):
            pytest.fail("valgrind is not installed (CI must count instructions)")
        pytest.skip("valgrind is not installed")
    recorded = json.loads((ROOT / "bench" / "instructions.json").read_text())
    assert recorded["python"] == platform.python_version(), (
        f"bench/instructions.json was recorded with Python {recorded['python']}, this is "
        f"{platform.python_version()}: record the figures again (bench/instructions.py --record)"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "instructions.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "max_demand 10" in result.stdout
