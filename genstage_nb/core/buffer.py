"""A producer's buffer: events made beyond demand wait here, oldest first.

Events are stored as the lists they arrived in (no per-event work); ``take`` cuts a list
only at its edges. A bounded buffer drops on overflow: ``keep="last"`` drops the
oldest events, ``keep="first"`` drops the newest. Pure data: no I/O, no async.

>>> b = Buffer(5, keep="last")
>>> b.store(["a", "b", "c", "d", "e"]), b.store(["f", "g", "h"])
(0, 3)
>>> b.take(4), len(b)
(['d', 'e', 'f', 'g'], 1)
"""

from __future__ import annotations

from collections import deque
from typing import Any

KEEP_MODES = ("first", "last")


class Buffer:
    """A FIFO of events with an optional size limit (``size=None``: unbounded).

    A producer's ``buffer_size`` and ``buffer_keep`` options make one; use it directly to
    test what overflow keeps.

    >>> b = Buffer(3, keep="first")
    >>> b.store([1, 2, 3, 4]), b.take(10)
    (1, [1, 2, 3])
    """

    __slots__ = ("size", "keep", "_chunks", "_len")

    def __init__(self, size: int | None = None, keep: str = "last") -> None:
        self.size = size
        self.keep = keep
        self._chunks: deque[list[Any]] = deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def store(self, events: list[Any]) -> int:
        """Append ``events``; return how many events were dropped to respect ``size``."""
        n = len(events)
        if not n:
            return 0
        size = self.size
        if size is None or self._len + n <= size:
            self._chunks.append(events)
            self._len += n
            return 0
        if self.keep == "first":
            room = size - self._len
            if room > 0:
                self._chunks.append(events[:room])
                self._len += room
            return n - room
        # keep == "last": drop the oldest.
        if n >= size:
            dropped = self._len + n - size
            self._chunks.clear()
            if size:
                self._chunks.append(events[n - size :] if n > size else events)
            self._len = size
            return dropped
        self._chunks.append(events)
        self._len += n
        excess = self._len - size
        self._discard_oldest(excess)
        return excess

    def take(self, n: int) -> list[Any]:
        """Remove and return up to ``n`` of the oldest events."""
        chunks = self._chunks
        if n <= 0 or not chunks:
            return []
        first = chunks[0]
        if len(first) == n:
            # The common case: one stored list served whole.
            chunks.popleft()
            self._len -= n
            return first
        out: list[Any] = []
        want = n
        while want and chunks:
            chunk = chunks[0]
            k = len(chunk)
            if k <= want:
                chunks.popleft()
                out.extend(chunk)
                want -= k
            else:
                out.extend(chunk[:want])
                chunks[0] = chunk[want:]
                want = 0
        self._len -= len(out)
        return out

    def put_back(self, events: list[Any]) -> None:
        """Return events just taken (and not sent) to the front, oldest first; they
        were inside ``size`` before, so nothing is dropped."""
        if events:
            self._chunks.appendleft(events)
            self._len += len(events)

    def events(self) -> list[Any]:
        """Every buffered event, oldest first, left in the buffer (a checkpoint's copy).

        >>> b = Buffer(10); _ = b.store([1, 2]); _ = b.store([3]); _ = b.take(1)
        >>> b.events(), len(b)
        ([2, 3], 2)
        """
        return [event for chunk in self._chunks for event in chunk]

    def take_all(self) -> list[Any]:
        """Remove and return every buffered event."""
        return self.take(self._len)

    def _discard_oldest(self, count: int) -> None:
        chunks = self._chunks
        while count:
            chunk = chunks[0]
            k = len(chunk)
            if k <= count:
                chunks.popleft()
                count -= k
                self._len -= k
            else:
                chunks[0] = chunk[count:]
                self._len -= count
                count = 0
