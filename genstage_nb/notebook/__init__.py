"""The notebook layer: ``%%stage`` and ``%pipeline`` magics and the ipywidgets dashboard.

``%load_ext genstage_nb`` registers the magics (IPython calls
``genstage_nb.load_ipython_extension``).
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%%stage`` and ``%pipeline`` magics with ``ipython``, and show the
    pause of a stage in the output of the cell that runs (``notices.py``)."""
    from .magics import StageMagics
    from .notices import install

    ipython.register_magics(StageMagics)
    install(ipython)
