"""The ``Supervisor`` protocol: the few calls a stage's process makes upward, to the
pipeline that runs it (``pipeline/supervision.py`` implements it). Nothing in ``core``
knows more of the pipeline than this.

The names keep their underscore: the protocol is the package's own, between its two
layers, and ``Pipeline``'s public surface stays what users call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .errors import Failure
    from .process import Process
    from .subscription import Subscription


@runtime_checkable
class Supervisor(Protocol):
    """What a process reads of its pipeline, and tells it."""

    @property
    def running(self) -> bool:
        """The pipeline runs (a subscription's ask goes to a live producer)."""

    #: ``stop()`` is under way: stages end as their producers end.
    stopping: bool
    #: What a stage's failure for good does: "stop", "continue" or "pause".
    on_failure: str
    #: How deep stages serve each other inline now (``Mailbox.post``), bounded.
    depth: int
    #: The run's task group (timers such as the rate limit's release start there), or
    #: None between runs.
    _tg: Any

    def _started(self, proc: Process) -> None:
        """``proc`` has run its ``init`` (or ended before): the run may go on."""

    def _stage_ended(self, proc: Process) -> None:
        """``proc``'s task has ended, for whatever reason."""

    def _stage_failed(self, proc: Process, exc: BaseException) -> None:
        """``proc`` failed for good with ``exc`` (after its restarts)."""

    def _record_failure(self, proc: Process, failure: Failure) -> None:
        """A failure of ``proc`` (restarted or not) goes to ``Pipeline.failures``."""

    def _stage_paused(self, proc: Process, failure: Failure) -> None:
        """``proc`` paused on ``failure`` (``on_failure="pause"``)."""

    def _stage_unpaused(self, proc: Process, failure: Failure, decision: str) -> None:
        """``proc`` goes on after ``failure``: ``decision`` is "resume" or "skip"."""

    def _interrupted(self, proc: Process, exc: BaseException) -> None:
        """A ``KeyboardInterrupt`` or ``SystemExit`` was raised in one of ``proc``'s hooks."""

    def _consumers_gone(self, proc: Process) -> bool:
        """Every consumer of ``proc`` has stopped for good, and nothing can link later."""

    def _hold_ask(self, producer: Process, sub: Subscription, n: int) -> bool:
        """Whether an ask of ``n`` on ``sub`` waits (the producer is paused or starting):
        True if the pipeline keeps it for later."""


__all__ = ["Supervisor"]
