"""The docs site builds in strict mode: a broken link, nav entry or API reference fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_docs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="install the [docs] or [test] extra")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("index.html")}
    for page in ("api/index.html", "concepts/index.html", "getting-started/index.html"):
        assert page in pages
    tutorials = sorted(p for p in pages if p.startswith("tutorials/"))
    assert len(tutorials) == 10, tutorials
    api = (tmp_path / "api" / "index.html").read_text()
    assert 'id="genstage_nb.Pipeline"' in api
    for member in ("link", "run", "stream", "dashboard", "progress", "peek"):  # role classes
        assert f'id="genstage_nb.Pipeline.{member}"' in api
    assert '<span class="gp">&gt;&gt;&gt; </span>' in api  # examples are code blocks


def test_doctest_examples_are_fenced_for_the_site():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        pytest.importorskip("griffe")
        from doctest_fences import fence_examples
    finally:
        sys.path.pop(0)
    text = "What.\n\n>>> f()\n[1]\n>>> g()\n\nMore.\n    >>> h()"
    assert fence_examples(text) == (
        "What.\n\n```pycon\n>>> f()\n[1]\n>>> g()\n```\n\nMore.\n```pycon\n    >>> h()\n```"
    )
