"""The package is typed (``py.typed``): the whole package is clean under mypy (its
configuration in pyproject.toml), and the modules below under ``mypy --strict``: the
pure state machines and the protocols between the layers."""

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
    "genstage_nb/core/roles.py",
    "genstage_nb/pipeline/parts.py",
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


@pytest.mark.timeout(300)
def test_the_package_passes_mypy(tmp_path):
    """Every module, with the roles' declared state and interface (core/roles.py,
    pipeline/parts.py): a role that reached for what nobody declared fails here."""
    from mypy import api

    out, err, status = api.run(
        [
            f"--config-file={ROOT / 'pyproject.toml'}",
            f"--cache-dir={tmp_path}",
            str(ROOT / "genstage_nb"),
        ]
    )
    assert status == 0, out + err
