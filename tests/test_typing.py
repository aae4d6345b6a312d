"""The package is typed (``py.typed``): the modules below are held to ``mypy --strict``.
The list grows as the runtime's roles get their typed state (the rest of the package
is annotated but not yet clean under mypy)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

STRICT = [
    "genstage_nb/core/options.py",
    "genstage_nb/core/messages.py",
    "genstage_nb/core/statistics.py",
    "genstage_nb/core/supervisor.py",
    "genstage_nb/core/demand.py",
    "genstage_nb/core/buffer.py",
    "genstage_nb/core/counters.py",
    "genstage_nb/core/errors.py",
]


def test_the_package_says_it_is_typed():
    assert (ROOT / "genstage_nb" / "py.typed").exists()


@pytest.mark.timeout(300)
def test_the_typed_modules_pass_mypy_strict(tmp_path):
    from mypy import api

    out, err, status = api.run(
        [
            "--strict",
            "--follow-imports=silent",
            f"--cache-dir={tmp_path}",
            *(str(ROOT / path) for path in STRICT),
        ]
    )
    assert status == 0, out + err
