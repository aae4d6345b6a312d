"""The durable-runs part of ``Pipeline``: its checkpoint options, what a user reads of
them, and the steps of a run that take checkpoints (the file and the coordinator are
``checkpoints.py``; a stage's state is ``core/snapshots.py``).
"""

from __future__ import annotations

import os
from typing import Any

import anyio

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

    def _rewind(self, proc: Any) -> None:
        """``resume(stage, rewind=True)``: end this round of the run at once and run
        again from the last complete checkpoint (``_durable_rewound``), with the stages'
        code as it is now."""
        where = f"resume({proc.name!r}, rewind=True)"
        durable = self._checkpoints
        if durable is None:
            raise ValueError(
                f"{where} needs Pipeline(checkpoint=...): without checkpoints there is no "
                f"state to roll back to; resume({proc.name!r}) goes on from the failed batch"
            )
        if durable.last_complete() is None:
            raise ValueError(
                f"{where}: {durable.path!r} holds no complete checkpoint yet; "
                f"resume({proc.name!r}) goes on from the failed batch"
            )
        records = self.failures.get(proc.name, [])
        if proc.paused in records:  # (not a failure after all: it is replayed)
            records.remove(proc.paused)
        if not records:
            self.failures.pop(proc.name, None)
        self._rewinding = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _durable_rewound(self) -> bool:
        """After a round of the run: True if it was ended by a rewind, once every stage
        is new again and has the state of the last complete checkpoint."""
        if not self._rewinding:
            return False
        self._rewinding = False
        self._fresh_processes()
        self._running = True
        self._alive = len(self._procs)
        self._ended = anyio.Event()
        self._fatal, self._first_fatal = {}, None
        assert self._checkpoints is not None  # (_rewind checked)
        self._checkpoints.begin(rewind=True)
        return True

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
