"""How a stage paces and repeats its work: ``rate_limit=`` and ``retry=``.

- ``RateLimit(n, seconds)``: at most ``n`` events leave the stage in any window of
  ``seconds`` (a sliding window, over the times events were sent: unlike a window that
  resets at fixed times, it never lets ``n`` go at the end of one window and ``n`` more
  at the start of the next). The events that may not go yet wait, with the demand they
  answer (back-pressure: nothing is dropped).
- ``Retry(attempts, on, backoff, max_backoff, jitter)``: a hook call that raises one of
  ``on`` is made again with the same events, after an exponential backoff (tenacity's
  wait strategies), up to ``attempts`` calls in all.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class RateLimit:
    """A sliding window: ``allow(now, k)`` -> how many of ``k`` events may go now.

    >>> limit = RateLimit(3, 1.0)
    >>> limit.allow(0.0, 2), limit.allow(0.5, 5), limit.allow(0.9, 1)
    (2, 1, 0)
    >>> limit.next_free(0.9), limit.allow(1.0, 5)  # the first two leave the window at 1.0
    (1.0, 2)
    """

    __slots__ = ("n", "seconds", "_sent", "_in_window")

    def __init__(self, n: int, seconds: float) -> None:
        self.n = n
        self.seconds = seconds
        self._sent: deque[list] = deque()  # [time, count], oldest first
        self._in_window = 0

    def _expire(self, now: float) -> None:
        sent = self._sent
        while sent and sent[0][0] <= now - self.seconds:
            self._in_window -= sent.popleft()[1]

    def allow(self, now: float, k: int) -> int:
        """Take up to ``k`` events' room now; return how many may go."""
        self._expire(now)
        j = min(k, self.n - self._in_window)
        if j > 0:
            if self._sent and self._sent[-1][0] == now:
                self._sent[-1][1] += j
            else:
                self._sent.append([now, j])
            self._in_window += j
        return max(j, 0)

    def next_free(self, now: float) -> float:
        """When room for at least one more event opens."""
        self._expire(now)
        if self._in_window < self.n or not self._sent:
            return now
        return self._sent[0][0] + self.seconds


def check_rate_limit(label: str, value: Any) -> RateLimit | None:
    if value is None:
        return None
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
        and value[0] >= 1
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
        and value[1] > 0
    )
    if not ok:
        raise ValueError(
            f"stage {label!r}: rate_limit must be (n, seconds): at most n >= 1 events in "
            f"any window of seconds > 0, got {value!r}"
        )
    return RateLimit(value[0], float(value[1]))


class Retry:
    """Call a failing hook again: ``retry=gs.Retry(...)`` on any stage.

    A hook call that raises one of ``on`` (exception classes) is called again with the
    same events after a backoff that doubles from ``backoff`` seconds up to
    ``max_backoff`` (plus up to ``backoff`` at random with ``jitter``: tenacity's
    ``wait_exponential`` and ``wait_random``), up to ``attempts`` calls in all; then the
    failure takes its usual course (restart, stop), its record keeping every attempt's
    exception (``Failure.attempts``). The metric ``retried`` counts the calls made again.
    ``gs.map`` retries each event's call; ``init``, ``handle_demand``, ``handle_events``,
    ``handle_info`` and a ``ConcurrentConsumer``'s ``handle_event`` are retried too
    (batches on an executor are not).

    >>> import genstage_nb as gs
    >>> retry = gs.Retry(attempts=4, on=(ConnectionError,), backoff=0.1, jitter=False)
    >>> [retry.wait(n) for n in (1, 2, 3)]  # before the 2nd, 3rd and 4th call
    [0.1, 0.2, 0.4]
    >>> retry.retries(ConnectionError()), retry.retries(ValueError())
    (True, False)
    """

    def __init__(
        self,
        attempts: int = 3,
        on: Any = (Exception,),
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        jitter: bool = True,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"Retry: attempts must be an int >= 1, got {attempts!r}")
        kinds = on if isinstance(on, tuple) else (on,)
        if not kinds or not all(
            isinstance(k, type) and issubclass(k, BaseException) for k in kinds
        ):
            raise TypeError(f"Retry: on must be an exception class or a tuple of them, got {on!r}")
        for kind in kinds:
            if not issubclass(kind, Exception):
                raise TypeError(
                    f"Retry: on must name Exception classes; {kind.__name__} is not one (an "
                    f"interrupt or exit stops the pipeline and is never retried)"
                )
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"Retry: {name} must be a number of seconds >= 0, got {value!r}")
        if max_backoff < backoff:
            raise ValueError(
                f"Retry: max_backoff ({max_backoff!r}) must not be below backoff ({backoff!r})"
            )
        if not isinstance(jitter, bool):
            raise TypeError(f"Retry: jitter must be True or False, got {jitter!r}")
        from tenacity import wait_exponential, wait_random

        self.attempts = attempts
        self.on = kinds
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.jitter = jitter
        wait: Any = wait_exponential(multiplier=self.backoff, max=self.max_backoff)
        if jitter and self.backoff > 0:
            wait = wait + wait_random(0, self.backoff)
        self._wait = wait

    def retries(self, exc: BaseException) -> bool:
        """Whether a call that raised ``exc`` is made again."""
        return isinstance(exc, self.on)

    def wait(self, failed: int) -> float:
        """Seconds to wait after ``failed`` calls have failed, before the next."""

        class _State:  # what tenacity's wait strategies read
            attempt_number = failed

        state: Any = _State()
        return min(float(self._wait(state)), self.max_backoff) if self.backoff else 0.0

    def __repr__(self) -> str:
        names = ", ".join(k.__name__ for k in self.on)
        return (
            f"Retry(attempts={self.attempts}, on=({names},), backoff={self.backoff}, "
            f"max_backoff={self.max_backoff}, jitter={self.jitter})"
        )


def check_retry(label: str, value: Any) -> Retry | None:
    if value is None or isinstance(value, Retry):
        return value
    raise TypeError(f"stage {label!r}: retry must be a gs.Retry(...) or None, got {value!r}")


__all__ = ["RateLimit", "Retry", "check_rate_limit", "check_retry"]
