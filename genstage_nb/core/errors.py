"""What a failure leaves behind: ``Failure`` records and ``PipelineError``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Failure:
    """One failure of one stage.

    ``exception`` is what the hook raised, ``events`` the batch the stage was handling
    (``[]`` when the hook had no events, e.g. ``init`` or ``handle_demand``), ``time``
    when it happened (``time.time()``), ``hook`` the name of the hook that raised, and
    ``restarted`` whether the stage was restarted after it. When the stage failed for
    good, ``unhandled`` holds the events it had received or buffered and will never
    handle or send (in order), so that nothing is lost silently. With ``retry=``,
    ``attempts`` holds the exception of every call made (the last is ``exception``).
    ``paused`` is True when the stage paused on it (``Pipeline(on_failure="pause")``):
    the record is removed when the stage is resumed (the batch is handled again), and
    stays when it is skipped.

    >>> f = Failure("double", ValueError("bad"), [1, 2], hook="handle_events")
    >>> f.stage, f.events
    ('double', [1, 2])
    """

    stage: str
    exception: BaseException
    events: list[Any] = field(default_factory=list)
    hook: str = ""
    time: float = field(default_factory=time.time)
    restarted: bool = False
    unhandled: list[Any] = field(default_factory=list)
    attempts: list[Any] = field(default_factory=list)
    paused: bool = False


class PipelineError(Exception):
    """A pipeline ended because one or more stages failed for good.

    ``failures`` maps each failed stage's name to the exception that stopped it; the
    first failure is this error's ``__cause__``. Every failure, including those after
    which a stage was restarted, is in ``Pipeline.failures`` with the batch it was
    handling.

    >>> err = PipelineError({"double": ValueError("bad")})
    >>> str(err)
    "stage 'double' failed: ValueError: bad"
    """

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = dict(failures)
        parts = [
            f"stage {name!r} failed: {type(exc).__name__}: {exc}" for name, exc in failures.items()
        ]
        super().__init__("; ".join(parts) or "pipeline failed")
