"""The stages a Flow builds: ordinary producer-consumers and a consumer, so the runtime,
explain, metrics, pause/resume and autotune treat them like any other.

- ``Step``: a per-event step (``map``, ``flat_map``, ``filter``) over each batch, one
  Python call per event (C loops over the batch); a failing event cuts the batch there,
  and a resumed (or retried) batch goes on from that event;
- ``Reduce``: a partition's reduce (``reducer.Reducer``), its timers, and its flush
  when the input ends;
- ``Join``: a window join (``reducer.Joiner``) of two tagged inputs;
- ``Collect``: the sink that keeps what the flow emits (and feeds ``Flow.stream``).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain, compress
from typing import Any

import anyio

from ..core.stage import Consumer, ProducerConsumer
from .reducer import Joiner, Reducer, _Resumable
from .window import Window


class Step(ProducerConsumer, _Resumable):
    """``map`` / ``flat_map`` / ``filter``: ``fn`` called once per event."""

    def __init__(self, kind: str, fn: Callable[[Any], Any], **options: Any) -> None:
        super().__init__(**options)
        self.step = kind
        self.fn = fn

    def handle_events(self, events: list) -> list:
        it, done = self._start(events)
        try:
            done.extend(map(self.fn, it))
        except BaseException as exc:
            self._cut(events, it, done, False)
            exc.add_note(
                f"in flow step {self.name!r} ({self.step}), at event {len(done)} of the batch: "
                f"{events[len(done)]!r:.200}"
            )
            raise
        step = self.step
        if step == "map":
            return done
        if step == "filter":
            return list(compress(events, done))
        return list(chain.from_iterable(done))


class Tag(ProducerConsumer):
    """One side of a join: its events go on as ``(side, event)``."""

    def __init__(self, side: int, **options: Any) -> None:
        super().__init__(**options)
        self.side = side

    def handle_events(self, events: list) -> list:
        side = self.side
        return [(side, event) for event in events]


class _Windowed(ProducerConsumer):
    """What a reduce and a join share: their inputs, their timer, their flush."""

    _state: Any  # its Reducer or Joiner (set by init)
    #: What a window holds goes out at once when it closes: a burst its buffer takes
    #: (already in memory), not a stage making more than its consumers take.
    _gs_flushes = True
    #: Its timers: what each fires ("early", "close") and every how many seconds.
    _periods: dict[str, float] = {}

    def init(self) -> None:
        self._inputs: set = set()
        self._ticker: anyio.CancelScope | None = None

    def handle_subscribe(self, subscription: Any) -> None:
        if subscription.consumer is self:
            self._inputs.add(subscription)
            if self._periods and self._ticker is None:
                self._start_ticks()

    def handle_cancel(self, subscription: Any, reason: Any) -> None:
        if subscription not in self._inputs:
            return
        self._inputs.discard(subscription)
        self._input_ended(subscription)
        if not self._inputs and reason in ("normal", "shutdown"):
            self.emit(self._state.finish())  # (its timers stop as it ends: _gs_ended)

    def _input_ended(self, subscription: Any) -> None:
        """One input ended (a join takes its side out of the watermark)."""

    def handle_info(self, message: Any) -> list:
        if isinstance(message, tuple) and message[:1] == ("flow tick",):
            return self._tick(message[1])
        return super().handle_info(message) or []

    def _tick(self, which: str) -> list:
        return []

    def _start_ticks(self) -> None:
        process = self._process
        task_group = process.supervisor._tg if process is not None else None
        if task_group is None:
            return
        scope = self._ticker = anyio.CancelScope()

        async def ticks(which: str, seconds: float) -> None:
            with scope:
                while True:
                    await anyio.sleep(seconds)
                    if process is None or not process.running or process.stopped:
                        return
                    self.send(("flow tick", which))

        for which, seconds in self._periods.items():
            task_group.start_soon(ticks, which, seconds)

    def snapshot(self) -> Any:
        """A checkpoint's state: its reduce's or join's (open windows, accumulators,
        late events, watermarks); its inputs and timers are the run's."""
        return self._state.saved()

    def restore(self, state: Any) -> None:
        self._state.load(state)

    def _gs_ended(self, process: Any) -> None:
        """The stage ended (however): its timers stop."""
        if self._ticker is not None:
            self._ticker.cancel()

    @property
    def late_count(self) -> int:
        """Events that came for a window already closed (the ``late`` metric)."""
        state = getattr(self, "_state", None)
        return len(state.late) if state is not None else 0


class Reduce(_Windowed):
    """A partition's reduce (``Flow.reduce``): one ``Reducer``, fresh at each start."""

    def __init__(
        self,
        initial: Callable[[], Any],
        fn: Callable[[Any, Any], Any],
        *,
        key: Callable[[Any], Any] | None,
        window: Window | None,
        present: Callable[[Any], Any] | None = None,
        on_trigger: Callable[[Any, Any, Any], Any] | None = None,
        paired: bool = False,
        **options: Any,
    ) -> None:
        options.setdefault("restart", "temporary")  # (a restart would lose what it holds)
        super().__init__(**options)
        self._spec = (initial, fn, key, window, present, on_trigger, paired)
        if window is not None:
            periods = {"early": window.periodically, "close": window.size}
            if window.kind != "periodic":
                del periods["close"]
            self._periods = {k: v for k, v in periods.items() if v is not None}

    def init(self) -> None:
        super().init()
        initial, fn, key, window, present, on_trigger, paired = self._spec
        self._state = Reducer(
            self.name or "reduce",
            initial,
            fn,
            key=key,
            window=window,
            present=present,
            on_trigger=on_trigger,
            paired=paired,
        )

    def handle_events(self, events: list) -> list:
        return self._state.push(events)

    def _tick(self, which: str) -> list:
        return self._state.tick(which == "early", which == "close")


class Join(_Windowed):
    """``Flow.window_join``: one ``Joiner`` over the two tagged sides."""

    def __init__(
        self,
        left_key: Callable[[Any], Any],
        right_key: Callable[[Any], Any],
        window: Window,
        how: str,
        **options: Any,
    ) -> None:
        options.setdefault("restart", "temporary")
        super().__init__(**options)
        self._spec = (left_key, right_key, window, how)
        if window.kind == "periodic":
            self._periods = {"close": window.size}

    def init(self) -> None:
        super().init()
        self._state = Joiner(self.name or "join", *self._spec)

    def handle_events(self, events: list) -> list:
        return self._state.push(events)

    def _input_ended(self, subscription: Any) -> None:
        side = getattr(subscription.producer, "side", None)
        if side is not None and not any(
            getattr(s.producer, "side", None) == side for s in self._inputs
        ):
            self.emit(self._state.end(side))

    def _tick(self, which: str) -> list:
        return self._state.tick()


class Collect(Consumer):
    """What the flow emits, kept in order of arrival (and sent to a stream if one
    reads it: its ``handle_events`` then waits while the stream is full)."""

    _default_name = "results"

    def __init__(self, results: list | None, **options: Any) -> None:
        super().__init__(**options)
        self.results = results
        self.sink: Any = None

    def snapshot(self) -> Any:
        """A checkpoint's state: the results so far (a resumed run's list holds them
        all, once)."""
        return {"results": None if self.results is None else list(self.results)}

    def restore(self, state: Any) -> None:
        if self.results is not None and state["results"] is not None:
            self.results[:] = state["results"]

    def handle_events(self, events: list) -> Any:
        if self.results is not None:
            self.results.extend(events)
        sink = self.sink
        if sink is not None:
            return sink(events)
        return None


__all__ = ["Collect", "Join", "Reduce", "Step", "Tag"]
