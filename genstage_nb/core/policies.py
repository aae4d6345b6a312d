"""How a stage paces and repeats its work: ``rate_limit=`` and ``retry=``.

- ``rate_limit=(n, seconds)``: at most ``n`` events leave the stage in any window of
  ``seconds`` (a sliding window, ``RateLimit``). The events that may not go yet wait,
  with the demand they answer (back-pressure: nothing is dropped).
- ``gs.RateLimit(n, seconds)``: the same window as an object a hook awaits
  (``async with limiter:``), shareable by several stages: at most ``n`` calls to a
  service in any window of ``seconds``.
- ``Retry(attempts, on, backoff, max_backoff, jitter)``: a hook call that raises one of
  ``on`` is made again with the same events, after an exponential backoff (tenacity's
  wait strategies), up to ``attempts`` calls in all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from time import perf_counter as clock
from typing import Any


class RateLimit:
    """At most ``n`` entries in any window of ``seconds``: a limiter a hook awaits.

    ``async with limiter:`` (in an async hook) waits until the window has room and takes
    one place; ``with limiter:`` does the same in a thread (a sync hook on an executor).
    One limiter may be shared by several stages, or by the calls of one ``gs.map`` with
    ``concurrency``: "at most N calls a second" to a service, whichever stage makes them
    (``rate_limit=(n, seconds)`` on a stage counts the events that leave it instead).
    The window slides over the times places were taken: unlike a window that resets at
    fixed times, it never lets ``n`` go at the end of one window and ``n`` more at the
    start of the next. Waiters are served in the order they came.

    >>> import anyio, genstage_nb as gs
    >>> limiter = gs.RateLimit(2, 0.05)
    >>> async def call(i):
    ...     async with limiter:  # at most 2 calls in any 0.05 s
    ...         return i
    >>> async def main():
    ...     return [await call(i) for i in range(5)]
    >>> anyio.run(main), limiter.taken
    ([0, 1, 2, 3, 4], 5)

    The window itself, for the runtime (``rate_limit=``) and for tests:
    ``allow(now, k)`` takes up to ``k`` places at ``now`` and says how many it took;
    ``next_free(now)`` is when room for one more opens.

    >>> window = gs.RateLimit(3, 1.0)
    >>> window.allow(0.0, 2), window.allow(0.5, 5), window.allow(0.9, 1)
    (2, 1, 0)
    >>> window.next_free(0.9), window.allow(1.0, 5)  # the first two leave the window at 1.0
    (1.0, 2)
    """

    __slots__ = ("n", "seconds", "taken", "_sent", "_in_window", "_lock", "_queue")

    def __init__(self, n: int, seconds: float) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"RateLimit: n must be an int >= 1 (entries per window), got {n!r}")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"RateLimit: seconds must be a number > 0, got {seconds!r}")
        self.n = n
        self.seconds = float(seconds)
        self.taken = 0  # places taken through acquire / async with / with
        self._sent: deque[list] = deque()  # [time, count], oldest first
        self._in_window = 0
        self._lock = threading.Lock()  # (threads and the event loop may share one)
        self._queue: deque[object] = deque()  # waiters, first come first served

    def _expire(self, now: float) -> None:
        sent = self._sent
        while sent and sent[0][0] <= now - self.seconds:
            self._in_window -= sent.popleft()[1]

    def allow(self, now: float, k: int) -> int:
        """Take up to ``k`` places now; return how many were taken."""
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
        """When room for at least one more place opens."""
        self._expire(now)
        if self._in_window < self.n or not self._sent:
            return now
        return self._sent[0][0] + self.seconds

    def _try(self, ticket: object) -> float:
        """Take a place for ``ticket`` if it is first in line and there is room: 0.0;
        else the seconds to wait before trying again."""
        with self._lock:
            now = clock()
            if self._queue[0] is ticket and self.allow(now, 1):
                self._queue.popleft()
                self.taken += 1
                return 0.0
            return max(self.next_free(now) - now, 0.0) or self.seconds / (4 * self.n)

    def _enter_line(self) -> object:
        ticket = object()
        with self._lock:
            self._queue.append(ticket)
        return ticket

    def _leave_line(self, ticket: object) -> None:
        with self._lock:
            if ticket in self._queue:
                self._queue.remove(ticket)

    async def acquire(self) -> None:
        """Wait (on the event loop) until the window has room, and take one place."""
        import anyio

        ticket = self._enter_line()
        try:
            while wait := self._try(ticket):
                await anyio.sleep(wait)
        except BaseException:
            self._leave_line(ticket)  # cancelled while waiting: no place taken
            raise

    def acquire_sync(self) -> None:
        """Wait (blocking this thread) until the window has room, and take one place."""
        ticket = self._enter_line()
        try:
            while wait := self._try(ticket):
                time.sleep(wait)
        except BaseException:
            self._leave_line(ticket)
            raise

    async def __aenter__(self) -> RateLimit:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __enter__(self) -> RateLimit:
        self.acquire_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"RateLimit({self.n}, {self.seconds:g})"


def check_rate_limit(label: str, value: Any) -> RateLimit | None:
    """``rate_limit=``: None, ``(n, seconds)``, or a ``gs.RateLimit`` shared with other
    stages (and hooks): the events leaving all of them count in one window."""
    if value is None or isinstance(value, RateLimit):
        return value
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
            f"any window of seconds > 0 (or a gs.RateLimit), got {value!r}"
        )
    return RateLimit(value[0], float(value[1]))


def parse_rate(text: str) -> tuple[int, float] | None:
    """``"N/SECONDS"`` (``%%stage --rate-limit 10/1``) -> ``(N, SECONDS)``; None when
    the text is not of that form."""
    import re

    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d*)?|\.\d+)\s*", text)
    if match is None:
        return None
    return int(match.group(1)), float(match.group(2))


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


__all__ = ["RateLimit", "Retry", "check_rate_limit", "check_retry", "parse_rate"]
