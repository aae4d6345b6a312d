"""The state machines of a Flow's reduce and window join: pure, no anyio.

A ``Reducer`` is one stage's reduce: events in (``push``), records out; ``tick`` is a
timer's turn (processing-time windows and triggers), ``finish`` the end of the input.
A ``Joiner`` is one stage's window join of two tagged inputs. The stages in
``stages.py`` only call them, so every rule here is tested with plain lists.

A batch whose function raises is resumed at the failing event: what the events before
it did is kept (``push`` called again with the same list goes on from there), so a
resumed or retried batch counts nothing twice.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from operator import length_hint
from typing import Any

from .window import TimeAxis, Window, WindowResult


class _Missing:
    """No value yet (an accumulator, a watermark); pickled as this one object, so that
    a state a checkpoint saved still says "no value" when it comes back."""

    def __reduce__(self) -> str:
        return "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_NO_WINDOW = (None, None)
_MUTABLE = (dict, list, set)


def _snapshot(value: Any) -> Any:
    """An early firing's value: a copy of a mutable accumulator, which goes on changing."""
    return copy.copy(value) if value.__class__ in _MUTABLE else value


def _identity(value: Any) -> Any:
    return value


class _Resumable:
    """A batch cut short by a failing event: where to go on, and what came out so far."""

    _resume: tuple[list, int, list] | None = None

    def _start(self, events: list) -> tuple[Any, list]:
        it = iter(events)
        state = self._resume
        if state is not None:
            self._resume = None
            if state[0] is events:
                it.__setstate__(state[1])  # type: ignore[attr-defined]  # (a list iterator's index)
                return it, state[2]
        return it, []

    def _cut(self, events: list, it: Any, out: list, applied: bool) -> None:
        pos = len(events) - length_hint(it) - (0 if applied else 1)
        self._resume = (events, pos, out)

    #: What a checkpoint saves of it (its functions and window are the flow's recipe,
    #: built again by the run that resumes).
    _SAVED: tuple[str, ...] = ()

    def saved(self) -> dict[str, Any]:
        """Its state, for a checkpoint (taken at rest: no batch half done): the open
        windows and their accumulators, the late events, the watermarks."""
        state = {name: getattr(self, name) for name in self._SAVED}
        axis = getattr(self, "_axis", None)
        if axis is not None:
            state["_axis"] = (axis._kind, axis._tz)
        return state

    def load(self, state: dict[str, Any]) -> None:
        """Take back what ``saved`` returned (a run resuming from a checkpoint)."""
        for name, value in state.items():
            if name == "_axis":
                axis: TimeAxis = getattr(self, "_axis")  # noqa: B009 (a fixed window's)
                axis._kind, axis._tz = value
            else:
                setattr(self, name, value)
        self._resume = None


class Reducer(_Resumable):
    """One stage's reduce: ``fn(acc, event)`` per key (and window); see ``flow.py``.

    ``window=None`` is a plain reduce (``(key, value)`` pairs, or the bare value
    without a key, when the input ends); a ``Window`` emits ``WindowResult`` records.
    ``present`` turns an accumulator into the value emitted (a helper's last step, e.g.
    a mean's sum / count); ``on_trigger(key, value, window)`` makes the events emitted
    instead of the records.

    >>> r = Reducer("sum", lambda: 0, lambda a, e: a + e, window=Window.count(2))
    >>> r.push([1, 2, 3])
    [WindowResult(window=(0, 2), key=None, value=3, final=True)]
    >>> r.finish()
    [WindowResult(window=(2, 4), key=None, value=3, final=True)]
    """

    _SAVED = ("windows", "counts", "late", "index", "watermark", "_next_close")

    def __init__(
        self,
        stage: str,
        initial: Callable[[], Any],
        fn: Callable[[Any, Any], Any],
        *,
        key: Callable[[Any], Any] | None = None,
        window: Window | None = None,
        present: Callable[[Any], Any] | None = None,
        on_trigger: Callable[[Any, Any, Any], Any] | None = None,
        paired: bool = False,
    ) -> None:
        self.stage = stage
        self.paired = paired  # events come as (key, event) pairs (a keyed partition's)
        self.initial, self.fn, self.key, self.window = initial, fn, key, window
        self.present = present or _identity
        self.on_trigger = on_trigger
        self.windows: dict[Any, dict[Any, Any]] = {}  # window id -> key -> accumulator
        self.counts: dict[Any, int] = {}  # window id -> events in it
        self.late: list = []
        self.index = 0  # the open window of a count or periodic window
        self.watermark: Any = MISSING  # fixed: the latest event time seen
        self._next_close: Any = None  # fixed: the earliest end + lateness of an open window
        kind = window.kind if window is not None else None
        self._plain = kind is None or (kind == "all" and window.every is None)  # type: ignore[union-attr]
        if kind == "fixed":
            assert window is not None
            self._axis = TimeAxis(window, stage)
            self._size, self._span = self._axis.size, self._axis.span

    # -- events in ---------------------------------------------------------------------

    def push(self, events: list) -> list:
        """Reduce ``events``; return what fired (records, or on_trigger's events)."""
        it, out = self._start(events)
        if self._plain:
            self._push_plain(events, it, out)
        else:
            self._push_windowed(events, it, out)
        return out

    def _push_plain(self, events: list, it: Any, out: list) -> None:
        accs = self.windows.get(0)
        if accs is None:
            accs = self.windows[0] = {}
        fn, key = self.fn, self.key
        try:
            if self.paired:
                get, initial = accs.get, self.initial
                for k, event in it:
                    acc = get(k, MISSING)
                    new = fn(initial() if acc is MISSING else acc, event)
                    if new is not acc:  # (an accumulator changed in place is there)
                        accs[k] = new
            elif key is None:
                acc = accs.get(None, MISSING)
                try:
                    for event in it:
                        acc = fn(self.initial() if acc is MISSING else acc, event)
                finally:
                    if acc is not MISSING:
                        accs[None] = acc
            else:
                get, initial = accs.get, self.initial
                for event in it:
                    k = key(event)
                    acc = get(k, MISSING)
                    new = fn(initial() if acc is MISSING else acc, event)
                    if new is not acc:
                        accs[k] = new
        except BaseException:
            self._cut(events, it, out, False)
            raise

    def _push_windowed(self, events: list, it: Any, out: list) -> None:
        window = self.window
        assert window is not None
        fn, key, initial, windows, counts = (
            self.fn,
            self.key,
            self.initial,
            self.windows,
            self.counts,
        )
        every = window.every
        fixed = window.kind == "fixed"
        size = window.size if window.kind == "count" else None
        paired = self.paired
        if fixed:
            number, step = self._axis.number, self._size
        applied = False
        try:
            for event in it:
                applied = False
                if paired:
                    k, event = event
                if fixed:
                    t = number(window.time(event))  # type: ignore[misc]
                    wid = t - t % step
                    wm = self.watermark
                    if wm is not MISSING and wid + self._span <= wm:
                        self.late.append(event)
                        continue
                else:
                    wid = self.index
                accs = windows.get(wid)
                if accs is None:
                    accs = windows[wid] = {}
                    counts[wid] = 0
                    if fixed:
                        end = wid + self._span
                        if self._next_close is None or end < self._next_close:
                            self._next_close = end
                if not paired:
                    k = key(event) if key is not None else None
                acc = accs.get(k, MISSING)
                accs[k] = fn(initial() if acc is MISSING else acc, event)
                applied = True
                seen = counts[wid] = counts[wid] + 1
                if every is not None and seen % every == 0:
                    out += self._fire(wid, False)
                if size is not None and seen == size:
                    out += self._close(wid)
                    self.index += 1
                elif fixed and (wm is MISSING or t > wm):
                    self.watermark = t
                    if self._next_close <= t:
                        out += self._close_until(t)
        except BaseException:
            self._cut(events, it, out, applied)
            raise

    # -- timers and the end ------------------------------------------------------------

    def tick(self, early: bool, close: bool) -> list:
        """A timer's turn: ``early``, fire every open window so far
        (``trigger_periodically``); ``close``, close the open window (``periodic``)."""
        out: list = []
        if early:
            for wid in list(self.windows):
                out += self._fire(wid, False)
        if close:
            if self.index in self.windows:
                out += self._close(self.index)
            self.index += 1
        return out

    def finish(self) -> list:
        """The input ended: every open window fires its final records, oldest first."""
        out: list = []
        for wid in (
            sorted(self.windows)
            if self.window is not None and self.window.kind == "fixed"
            else list(self.windows)
        ):
            out += self._close(wid)
        self._next_close = None
        return out

    # -- what fires --------------------------------------------------------------------

    def _bounds(self, wid: Any) -> tuple:
        window = self.window
        if window is None or window.kind == "all":
            return _NO_WINDOW
        if window.kind == "fixed":
            back = self._axis.back
            return (back(wid), back(wid + self._size))
        return (wid * window.size, (wid + 1) * window.size)

    def _fire(self, wid: Any, final: bool) -> list:
        accs = self.windows[wid]
        present, on_trigger = self.present, self.on_trigger
        keyed = self.key is not None
        if self.window is None:  # a plain reduce: pairs, or the bare value
            if on_trigger is not None:
                return [e for k, v in accs.items() for e in on_trigger(k, present(v), None) or ()]
            if keyed:
                return [(k, present(v)) for k, v in accs.items()]
            return [present(v) for v in accs.values()]
        bounds = self._bounds(wid)
        value = _identity if final else _snapshot
        if on_trigger is not None:
            return [
                e for k, v in accs.items() for e in on_trigger(k, present(value(v)), bounds) or ()
            ]
        return [WindowResult(bounds, k, present(value(v)), final) for k, v in accs.items()]

    def _close(self, wid: Any) -> list:
        out = self._fire(wid, True)
        del self.windows[wid]
        self.counts.pop(wid, None)
        return out

    def _close_until(self, watermark: Any) -> list:
        span = self._span
        closing = sorted(wid for wid in self.windows if wid + span <= watermark)
        out: list = []
        for wid in closing:
            out += self._close(wid)
        self._next_close = min((wid + span for wid in self.windows), default=None)
        return out


class Joiner(_Resumable):
    """One stage's window join: events arrive tagged ``(side, event)`` (0 left, 1
    right); a window emits, when it closes, the pairs ``(left, right)`` of its events
    with equal keys (``how``: ``"inner"``, ``"left"`` with ``(left, None)`` for a key
    no right event has, ``"right"``, ``"outer"``).

    A fixed window closes once both sides have seen an event at or past its
    ``end + lateness`` (a side that ended counts as past every window).

    >>> j = Joiner("join", lambda e: e[0], lambda e: e[0], Window.all(), "left")
    >>> j.push([(0, ("a", 1)), (1, ("a", 2)), (0, ("b", 3))])
    []
    >>> j.finish()
    [(('a', 1), ('a', 2)), (('b', 3), None)]
    """

    HOW = ("inner", "left", "right", "outer")
    _SAVED = ("windows", "late", "index", "marks", "ended", "closed_until")

    def __init__(
        self,
        stage: str,
        left_key: Callable[[Any], Any],
        right_key: Callable[[Any], Any],
        window: Window,
        how: str,
    ) -> None:
        self.stage = stage
        self.keys = (left_key, right_key)
        self.window = window
        self.how = how
        self.windows: dict[Any, dict[Any, tuple[list, list]]] = {}
        self.late: list = []
        self.index = 0
        self.marks: list[Any] = [MISSING, MISSING]  # each side's latest event time
        self.ended = [False, False]
        self.closed_until: Any = MISSING
        if window.kind == "fixed":
            self._axis = TimeAxis(window, stage)
            self._size, self._span = self._axis.size, self._axis.span

    def push(self, events: list) -> list:
        it, out = self._start(events)
        fixed = self.window.kind == "fixed"
        windows, keys = self.windows, self.keys
        applied = False
        try:
            for side, event in it:
                applied = False
                if fixed:
                    t = self._axis.number(self.window.time(event))  # type: ignore[misc]
                    wid = t - t % self._size
                    if self.closed_until is not MISSING and wid + self._span <= self.closed_until:
                        self.late.append(event)
                        continue
                else:
                    wid = self.index
                k = keys[side](event)
                accs = windows.get(wid)
                if accs is None:
                    accs = windows[wid] = {}
                pair = accs.get(k)
                if pair is None:
                    pair = accs[k] = ([], [])
                pair[side].append(event)
                applied = True
                if fixed and (self.marks[side] is MISSING or t > self.marks[side]):
                    self.marks[side] = t
                    out += self._advance()
        except BaseException:
            self._cut(events, it, out, applied)
            raise
        return out

    def end(self, side: int) -> list:
        """One side's input ended: it holds no window back any more."""
        self.ended[side] = True
        return self._advance() if self.window.kind == "fixed" else []

    def tick(self) -> list:
        """A periodic window's turn: the open window closes."""
        out = self._close(self.index) if self.index in self.windows else []
        self.index += 1
        return out

    def finish(self) -> list:
        out: list = []
        for wid in sorted(self.windows) if self.window.kind == "fixed" else list(self.windows):
            out += self._close(wid)
        return out

    def _advance(self) -> list:
        live = [m for m, ended in zip(self.marks, self.ended, strict=True) if not ended]
        if not live:
            return self.finish()
        if MISSING in live:  # a side that has seen nothing yet holds every window
            return []
        mark = min(live)
        if self.closed_until is not MISSING and mark <= self.closed_until:
            return []
        self.closed_until = mark
        out: list = []
        for wid in sorted(w for w in self.windows if w + self._span <= mark):
            out += self._close(wid)
        return out

    def _close(self, wid: Any) -> list:
        accs = self.windows.pop(wid)
        how = self.how
        out: list = []
        for lefts, rights in accs.values():
            if lefts and rights:
                out += [(left, right) for left in lefts for right in rights]
            elif lefts and how in ("left", "outer"):
                out += [(left, None) for left in lefts]
            elif rights and how in ("right", "outer"):
                out += [(None, right) for right in rights]
        return out


__all__ = ["MISSING", "Joiner", "Reducer"]
