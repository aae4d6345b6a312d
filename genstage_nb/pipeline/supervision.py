"""What a running pipeline hears from its stages: failures, starts, interrupts, ends.

The stages' processes call these (``Process.supervisor`` is the pipeline): a failure
recorded, a stage failed for good (which stops the pipeline with
``on_failure="stop"``), the start gate (the first asks wait until every stage has
started), an interrupt raised in a hook, a stage ended (the last one ends the run).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..core.errors import Failure
from ..core.process import Process
from ..core.subscription import Subscription
from ..watchdog import blocking_stage

if TYPE_CHECKING:
    import anyio

log = logging.getLogger("genstage_nb")


class Supervision:
    """The supervision role of ``Pipeline`` (called by the stages' processes)."""

    failures: dict[str, list[Failure]]
    on_failure: str
    _fatal: dict[str, BaseException]
    _first_fatal: BaseException | None
    _interrupt: BaseException | None
    _starting: set[Process] | None
    _held_asks: list[tuple[Process, Subscription, int]]
    _tg: Any
    _alive: int
    _running: bool
    _ended: anyio.Event | None
    _label: str

    def _record_failure(self, proc: Process, failure: Failure) -> None:
        self.failures.setdefault(proc.name, []).append(failure)

    def _stage_failed(self, proc: Process, exc: BaseException) -> None:
        self._fatal[proc.name] = exc
        if self._first_fatal is None:
            self._first_fatal = exc
        if self.on_failure == "stop" and self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _hold_ask(self, producer: Process, sub: Subscription, n: int) -> bool:
        """The start gate: while the stages of a new run are starting, hold the first
        asks (and return True) until every stage has run ``init`` and announced its
        subscriptions. So every producer knows all its consumers before it makes an
        event: a broadcast reaches every subscriber from the first event on, whatever
        order the stages start in (GenStage leaves that to start order, and a late
        subscriber misses what was sent before it)."""
        if self._starting is None:
            return False
        self._held_asks.append((producer, sub, n))
        return True

    def _started(self, proc: Process) -> None:
        """``proc`` has started (or ended before it could); when it is the last, open
        the start gate: the held asks go out in the order they were made."""
        starting = self._starting
        if starting is None:
            return
        starting.discard(proc)
        if not starting:
            self._starting = None
            held, self._held_asks = self._held_asks, []
            for producer, sub, n in held:
                producer.post(producer._on_ask, sub, n)

    def _interrupted(self, proc: Process, exc: BaseException) -> None:
        """A KeyboardInterrupt (or SystemExit) was raised in ``proc``'s hook: stop
        every stage now; ``run()`` raises it once they have all ended."""
        if self._interrupt is None:
            self._interrupt = exc
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            found = blocking_stage(tb.tb_frame if tb is not None else None)
            where = found[0].name if found is not None else proc.name
            log.warning("%s: interrupted in stage %r", self._label, where)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _stage_ended(self, proc: Process) -> None:
        self._alive -= 1
        if self._alive <= 0:
            # Every stage has stopped: the run is over (stages added from now on wait
            # for the next run).
            self._running = False
            if self._ended is not None:
                self._ended.set()


__all__ = ["Supervision"]
