"""The notebook layer: ``%%stage`` and ``%pipeline`` magics and the ipywidgets dashboard.

``%load_ext genstage_nb`` registers the magics (IPython calls
``genstage_nb.load_ipython_extension``).
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%%stage`` and ``%pipeline`` magics with ``ipython``."""
    from .magics import StageMagics

    ipython.register_magics(StageMagics)
