"""A pipeline in the background of a running event loop: ``start()`` (a notebook
kernel's loop keeps running it while the user works)."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

from ..core.errors import PipelineError
from .parts import Part
from .runner import _asyncio_caller

if TYPE_CHECKING:
    from .pipeline import Pipeline


class Background(Part):
    """The background role of ``Pipeline``: ``start()``."""

    def start(self) -> Pipeline:
        """Run in the background of the running asyncio loop and return at once.

        For notebooks: the kernel's loop keeps running the pipeline while the user
        works. Use ``await p.wait()`` or ``p.stop()`` later.

        >>> import anyio, genstage_nb as gs
        >>> p = gs.Pipeline(); out = []
        >>> _ = p.link(p.add(gs.from_iterable(range(3))), p.add(gs.consumer(out.extend)))
        >>> async def cell():  # what a notebook cell does
        ...     p.start()          # returns at once
        ...     await p.wait()
        >>> anyio.run(cell); out
        [0, 1, 2]
        """
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "Pipeline.start() needs a running asyncio event loop (as in a notebook); "
                "in a script use run_sync(), or await run() in a task group"
            ) from None
        if self._running:
            raise RuntimeError("Pipeline.start(): the pipeline is already running")
        if any(p.running or p.stopped for p in self._procs.values()):
            self._fresh_processes()
        self._loop_thread = threading.get_ident()
        self._call_in_loop = _asyncio_caller(loop)
        self._running = True
        self._background = loop.create_task(self._run_in_background())
        return self._whole

    async def _run_in_background(self) -> None:
        try:
            await self._run()
        except KeyboardInterrupt:
            # The kernel was interrupted while a stage's hook ran: the pipeline is
            # stopped, the kernel carries on.
            print(
                f"genstage_nb: {self._label} interrupted: every stage stopped",
                file=sys.stderr,
            )
        except PipelineError as exc:
            # Nobody awaits a background run: say it here (in a notebook, stderr shows
            # in the cell output; the tracebacks were logged as each stage failed).
            print(
                f"genstage_nb: {self._label} stopped: {exc} "
                f"(tracebacks above; details in .failures)",
                file=sys.stderr,
            )


__all__ = ["Background"]
