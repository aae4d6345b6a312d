"""Windows and their triggers: how a Flow's reduce splits its events (``gs.Window``), and
the records a windowed reduce emits (``gs.WindowResult``).

A window says which events are reduced together, and when the result goes out:

- ``Window.all()``: one window for every event; it closes when the input ends;
- ``Window.fixed(size, time=fn, lateness=0)``: event-time tumbling windows
  ``[k*size, (k+1)*size)`` of ``time(event)`` (numbers, or datetimes with a
  ``timedelta`` size); a window closes when its stage has seen an event whose time is at
  or past ``end + lateness``; an event for a closed window is *late*;
- ``Window.count(n)``: every ``n`` events a stage receives make a window;
- ``Window.periodic(seconds)``: processing time, a window every ``seconds`` per stage.

Early firings come on top: ``trigger_every(n)`` (every ``n`` events of a window) and
``trigger_periodically(seconds)`` emit the accumulator so far (``final=False``). Windows
are values: every method returns a new one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from numbers import Real
from typing import Any

KINDS = ("all", "fixed", "count", "periodic")


@dataclass(frozen=True, slots=True)
class WindowResult:
    """What a windowed reduce emits: one record per key and firing.

    ``window`` is ``(start, end)`` (event times for ``fixed``, event counts of the stage
    for ``count``, seconds since the stage started for ``periodic``, ``(None, None)``
    for ``all``); ``key`` the partition key (``None`` when the partition has none);
    ``value`` the accumulator; ``final`` False for an early firing (``trigger_every``,
    ``trigger_periodically``), True when the window closed.

    >>> WindowResult(window=(0, 10), key="a", value=3)
    WindowResult(window=(0, 10), key='a', value=3, final=True)
    """

    window: tuple
    key: Any
    value: Any
    final: bool = True


def _positive(where: str, what: str, value: Any, *, integer: bool = False) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (Real, timedelta)
    bad = isinstance(value, bool) or not isinstance(value, kinds)
    if bad or not value > (timedelta(0) if isinstance(value, timedelta) else 0):
        kind = "an int" if integer else "a number (or a timedelta)"
        raise ValueError(f"{where}: {what} must be {kind} > 0, got {value!r}")


@dataclass(frozen=True)
class Window:
    """How a Flow's reduce splits its events, and when it emits (see the module doc).

    Made by ``Window.all()``, ``Window.fixed(...)``, ``Window.count(n)`` and
    ``Window.periodic(seconds)``; ``trigger_every(n)`` and
    ``trigger_periodically(seconds)`` add early firings.

    >>> import genstage_nb as gs
    >>> gs.Window.fixed(60, time=lambda e: e["t"], lateness=5).trigger_every(100)
    Window.fixed(60, lateness=5).trigger_every(100)
    """

    kind: str
    size: Any = None
    time: Callable[[Any], Any] | None = None
    lateness: Any = 0
    every: int | None = None
    periodically: float | None = None

    @staticmethod
    def all() -> Window:
        """One window for all events, closed when the input ends (the default).

        >>> Window.all()
        Window.all()
        """
        return Window("all")

    @staticmethod
    def fixed(size: Any, *, time: Callable[[Any], Any], lateness: Any = 0) -> Window:
        """Event-time tumbling windows ``[k*size, (k+1)*size)`` of ``time(event)``.

        ``size`` and ``lateness`` are numbers, or ``timedelta`` when ``time`` returns
        datetimes. A window closes once its stage has seen an event at or past
        ``end + lateness`` (or when the input ends); events for a closed window are late:
        counted in the ``late`` metric and kept in ``Flow.late``.

        >>> Window.fixed(3_600_000, time=lambda e: e[1]).size
        3600000
        """
        _positive("Window.fixed", "size", size)
        if not callable(time):
            raise TypeError(
                f"Window.fixed: time must be a function event -> its time, got {time!r}"
            )
        if isinstance(size, timedelta):
            if lateness == 0:
                lateness = timedelta(0)
            if not isinstance(lateness, timedelta) or lateness < timedelta(0):
                raise ValueError(
                    f"Window.fixed: lateness must be a timedelta >= 0 when size is a "
                    f"timedelta, got {lateness!r}"
                )
        elif isinstance(lateness, bool) or not isinstance(lateness, Real) or lateness < 0:
            raise ValueError(f"Window.fixed: lateness must be a number >= 0, got {lateness!r}")
        return Window("fixed", size, time, lateness)

    @staticmethod
    def count(n: int) -> Window:
        """A window for every ``n`` events a stage receives.

        >>> Window.count(10)
        Window.count(10)
        """
        _positive("Window.count", "n", n, integer=True)
        return Window("count", n)

    @staticmethod
    def periodic(seconds: float) -> Window:
        """Processing-time windows: each stage closes its window every ``seconds``.

        >>> Window.periodic(1.5)
        Window.periodic(1.5)
        """
        _positive("Window.periodic", "seconds", seconds)
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        return Window("periodic", float(seconds))

    def trigger_every(self, n: int) -> Window:
        """Also emit the accumulators of a window so far after every ``n`` of its events.

        >>> Window.all().trigger_every(10).every
        10
        """
        _positive("Window.trigger_every", "n", n, integer=True)
        return dataclasses.replace(self, every=n)

    def trigger_periodically(self, seconds: float) -> Window:
        """Also emit the accumulators of the open windows so far every ``seconds``
        (processing time, per stage).

        >>> Window.all().trigger_periodically(2).periodically
        2.0
        """
        _positive("Window.trigger_periodically", "seconds", seconds)
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        return dataclasses.replace(self, periodically=float(seconds))

    def __repr__(self) -> str:
        args = "" if self.size is None else repr(self.size)
        if self.kind == "fixed" and self.lateness:
            args += f", lateness={self.lateness!r}"
        text = f"Window.{self.kind}({args})"
        if self.every is not None:
            text += f".trigger_every({self.every})"
        if self.periodically is not None:
            text += f".trigger_periodically({self.periodically})"
        return text


def check_window(where: str, window: Any) -> Window:
    if not isinstance(window, Window):
        raise TypeError(
            f"{where}: window must be a gs.Window (Window.all(), Window.fixed(...), "
            f"Window.count(n), Window.periodic(s)), got {window!r}"
        )
    return window


_NS = timedelta(microseconds=1)


class TimeAxis:
    """A fixed window's event times as numbers: the window arithmetic runs on plain
    ints and floats, however the times come (numbers, datetimes, pandas Timestamps,
    whose own arithmetic costs microseconds an event).

    ``number(t)`` is ``t`` itself for numbers, nanoseconds since 1970 for datetimes;
    ``size`` and ``span`` (size + lateness) are on the same axis; ``back(n)`` turns a
    window's bound back into a time of the kind the events carry.

    >>> from datetime import datetime, timezone
    >>> axis = TimeAxis(Window.fixed(timedelta(hours=1), time=str), "s")
    >>> t = axis.number(datetime(2013, 1, 1, 5, 30, tzinfo=timezone.utc))
    >>> axis.back(t - t % axis.size)
    datetime.datetime(2013, 1, 1, 5, 0, tzinfo=datetime.timezone.utc)
    """

    def __init__(self, window: Window, stage: str) -> None:
        self.stage = stage
        size = window.size
        self.dated = isinstance(size, timedelta)
        if self.dated:
            self.size: Any = (size // _NS) * 1000
            self.span: Any = self.size + (window.lateness // _NS) * 1000
        else:
            self.size, self.span = size, size + window.lateness
        self._kind: Any = None  # the class of the first time seen (a datetime's)
        self._tz: Any = None

    def number(self, t: Any) -> Any:
        if not self.dated:
            if isinstance(t, bool) or not isinstance(t, Real):
                raise TypeError(
                    f"stage {self.stage!r}: Window.fixed(time=) must return a number when "
                    f"the size is a number ({self.size!r}), got {t!r}"
                )
            return t
        ns = getattr(t, "value", None)  # a pandas Timestamp's nanoseconds
        if ns is not None and ns.__class__ is int and isinstance(t, datetime):
            if self._kind is None:
                self._kind, self._tz = t.__class__, t.tzinfo
            return ns  # (a naive one: its wall clock, read as UTC, as for a datetime)
        if not isinstance(t, datetime):
            raise TypeError(
                f"stage {self.stage!r}: Window.fixed(time=) must return a datetime when the "
                f"size is a timedelta, got {t!r}"
            )
        if self._kind is None:
            self._kind, self._tz = t.__class__, t.tzinfo
        epoch = _EPOCH if t.tzinfo is None else _EPOCH_UTC
        return ((t - epoch) // _NS) * 1000

    def back(self, n: Any) -> Any:
        if not self.dated:
            return n
        kind, tz = self._kind, self._tz
        if kind is not None and kind is not datetime and hasattr(kind, "value"):
            return kind(n, tz=tz) if tz is not None else kind(n)
        moment = (_EPOCH if tz is None else _EPOCH_UTC) + timedelta(microseconds=n // 1000)
        return moment.astimezone(tz) if tz is not None else moment


_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


__all__ = ["KINDS", "TimeAxis", "Window", "WindowResult", "check_window"]
