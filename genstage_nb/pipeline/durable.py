"""The durable-runs part of ``Pipeline``: its checkpoint options, what a user reads of
them, and the steps of a run that take checkpoints (the file and the coordinator are
``checkpoints.py``; a stage's state is ``core/snapshots.py``).
"""

from __future__ import annotations

import os
from typing import Any

from .checkpoints import MODES, Checkpoints
from .parts import Part


class Durable(Part):
    """Checkpoints of a ``Pipeline(checkpoint=...)``: ``checkpoints``, ``resumed``."""

    @property
    def checkpoints(self) -> Any:
        """The complete checkpoints of the ``checkpoint=`` file, as a pandas DataFrame:
        ``id``, ``time``, ``took`` (seconds to take and write it), ``size`` (bytes of
        state), ``rows`` (written by ``gs.to_sqlite`` sinks), then the events each stage
        had handled (a source: made). Empty without ``checkpoint=``."""
        if self._checkpoints is None:
            import pandas as pd

            return pd.DataFrame(columns=list(Checkpoints.COLUMNS))
        return self._checkpoints.frame()

    @property
    def resumed(self) -> str | None:
        """ "resumed from checkpoint N (... events already done)" when the last run
        started from a checkpoint, else None."""
        return None if self._checkpoints is None else self._checkpoints.describe()

    async def save_checkpoint(self) -> int | None:
        """Take a checkpoint now, without waiting for ``checkpoint_every`` (before a
        kernel restart, say): its id once it is saved, or None if it could not be taken
        (a stage paused or failed, or not running); ``checkpoints`` lists it."""
        if self._checkpoints is None:
            raise ValueError(f"{self._label}: save_checkpoint() needs Pipeline(checkpoint=...)")
        if not self.running:
            return None
        number = await self._checkpoints.take()
        await self._checkpoints.written()
        return number

    def _durable_begin(self) -> None:
        """Before a run's stages start: resume from the last complete checkpoint, or
        start over (an error ends the run before it began)."""
        if self._checkpoints is None:
            return
        try:
            self._checkpoints.begin()
        except BaseException:
            self._end()
            raise

    def _durable_start(self, tg: Any, ended: Any) -> None:
        """The run's stages have started: a checkpoint every ``checkpoint_every`` s."""
        if self._checkpoints is not None:
            tg.start_soon(self._checkpoints.run, ended)

    async def _durable_end(self) -> None:
        """The run's tasks are done: if it ended with every stage done (no failure, no
        stop, no interrupt), the last checkpoint, which says so."""
        clean = not (self._fatal or self.stopping or self._interrupt or self.failures)
        if self._checkpoints is not None and clean:
            await self._checkpoints.take(final=True)


def checkpoint_options(p: Any, path: Any, every: Any, mode: Any) -> Checkpoints | None:
    """The checkpoint options of ``Pipeline(...)``, checked: a ``Checkpoints`` for the
    file, or None."""
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
        raise ValueError(
            f"Pipeline: checkpoint_every must be a number of seconds > 0, got {every!r}"
        )
    if mode not in MODES:
        raise ValueError(f"Pipeline: checkpoint_mode must be 'resume' or 'fresh', got {mode!r}")
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"Pipeline: checkpoint must be a file name (or None), got {path!r}")
    return Checkpoints(p, os.fspath(path), float(every), mode)


__all__ = ["Durable", "checkpoint_options"]
