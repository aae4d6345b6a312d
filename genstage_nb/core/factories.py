"""Stages made from plain values: ``from_iterable`` and the function wrappers."""

from __future__ import annotations

import io
from collections.abc import AsyncIterable, Callable, Iterable
from itertools import islice
from operator import length_hint
from typing import Any

from .stage import Consumer, Producer, ProducerConsumer, Stage

#: From this demand on, a sequence's events are taken as a slice (instructions per event,
#: valgrind: at 10 an iterator costs 500 where a slice costs 630; at 1000, 206 and 161).
_SLICED = 64


class IterableProducer(Producer):
    """A producer of the items of an iterable (sync or async); finishes at its end."""

    _default_name = "from_iterable"

    def __init__(self, iterable: Iterable | AsyncIterable, **options: Any) -> None:
        super().__init__(**options)
        if self._total is None and hasattr(iterable, "__len__"):
            self._total = len(iterable)  # type: ignore[arg-type]  # (what progress shows)
        if isinstance(iterable, AsyncIterable):
            self._aiter = aiter(iterable)
            self.handle_demand = self._take_async  # type: ignore[method-assign,assignment]
        elif isinstance(iterable, (range, list, tuple)):
            # Sequences are sliced, not iterated item by item; their iterator says
            # where the stage stands (it is what a demand of 1 takes from).
            self._seq = iterable
            self._iter = iter(iterable)
            self.handle_demand = self._take_slice  # type: ignore[method-assign]
        elif isinstance(iterable, io.IOBase):
            # A file: read line by line, so that its position can be told and sought.
            self._file = iterable
            self.handle_demand = self._take_lines  # type: ignore[method-assign]
        elif isinstance(iterable, Iterable):
            self._iter = iter(iterable)
            # Taken again from the start and skipped to where it stood, on a resume:
            # what iterates the same way twice (not an iterator, not a set).
            self._again = (
                iterable
                if self._iter is not iterable and not isinstance(iterable, (set, frozenset))
                else None
            )
            self._taken = 0
        else:
            raise TypeError(
                f"from_iterable: expected an iterable or async iterable, got {iterable!r}"
            )

    def handle_demand(self, demand: int) -> list:
        events = list(islice(self._iter, demand))
        self._taken += len(events)
        if len(events) < demand:
            self.finish()
        return events

    def _take_lines(self, demand: int) -> list:
        readline = self._file.readline
        events = []
        for _ in range(demand):
            line = readline()
            if not line:
                self.finish()
                break
            events.append(line)
        return events

    # -- checkpoints: where it stands ----------------------------------------------------

    def _gs_not_checkpointable(self) -> str | None:
        """Why a checkpoint could not say where this source stands (None: it can)."""
        if hasattr(self, "_aiter"):
            return "an async iterable cannot be taken again from where it stood"
        if hasattr(self, "_iter") and not hasattr(self, "_seq") and self._again is None:
            return (
                f"{type(self._iter).__name__} is an iterator (or a set), which cannot be "
                "taken again from where it stood after a restart: give a list, a range, "
                "a tuple, an open file or another iterable that iterates the same way "
                "twice"
            )
        return None

    def snapshot(self) -> Any:
        """Where it stands (an index, a file position, or how many items it took)."""
        if hasattr(self, "_seq"):
            return {"at": len(self._seq) - length_hint(self._iter)}
        if hasattr(self, "_file"):
            return {"at": self._file.tell()}
        return {"at": getattr(self, "_taken", 0)}

    def restore(self, state: Any) -> None:
        """Go on from where ``snapshot`` said it stood."""
        at = state["at"]
        if hasattr(self, "_seq"):
            self._iter = iter(self._seq)
            self._iter.__setstate__(at)  # type: ignore[attr-defined]
        elif hasattr(self, "_file"):
            self._file.seek(at)
        elif getattr(self, "_again", None) is not None:
            self._iter = iter(self._again)  # type: ignore[arg-type]
            for _ in islice(self._iter, at):
                pass
            self._taken = at

    def _take_slice(self, demand: int) -> list:
        source: Any = self._iter  # (where the stage stands in the sequence)
        if demand == 1:  # one at a time (max_demand 1): the cheapest take
            for event in source:
                return [event]
            events = []
        elif demand < _SLICED:
            events = list(islice(source, demand))
        else:  # a slice copies faster than an iterator steps, from _SLICED events on
            pos = len(self._seq) - length_hint(source)
            chunk = self._seq[pos : pos + demand]
            events = chunk if chunk.__class__ is list else list(chunk)
            source.__setstate__(pos + len(events))  # (a sequence iterator takes its index)
        if len(events) < demand:
            self.finish()
        return events

    async def _take_async(self, demand: int) -> list:
        # Items an async source has ready are taken in one list; before a step that
        # would wait, what was taken is sent on, so no event waits for a later one.
        events: list = []
        source = self._aiter
        for _ in range(demand):
            step = anext(source).__await__()
            try:
                try:
                    trap = step.send(None)
                except StopIteration as ready:
                    events.append(ready.value)
                    continue
                if events:
                    self.emit(events)
                    events = []
                events.append(await _Resumed(step, trap))
            except StopAsyncIteration:
                self.finish()
                break
        return events


class _Resumed:
    """Awaits the rest of an awaitable whose first step was taken by hand (it yielded
    ``trap`` to the event loop): what the loop sends or throws goes on to it."""

    __slots__ = ("step", "trap")

    def __init__(self, step: Any, trap: Any) -> None:
        self.step, self.trap = step, trap

    def __await__(self) -> Any:
        step, value = self.step, self.trap
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # a cancellation, say: the awaitable sees it
                try:
                    value = step.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = step.send(sent)
                except StopIteration as done:
                    return done.value


def from_iterable(iterable: Iterable | AsyncIterable, **options: Any) -> Producer:
    """A producer of the items of ``iterable`` (sync or async) that finishes when it is
    exhausted. Options as for ``Producer``.

    The iterator is created once, so a restarted stage goes on where it stopped. In a
    pipeline with ``checkpoint=`` it saves where it stands: an index over a sequence (a
    list, a range), a position over an open file (read line by line), a count over
    something it can iterate again; over a plain iterator or a generator, which cannot
    go back, the run refuses to start (pass a list or a file).

    >>> import genstage_nb as gs
    >>> p = gs.Pipeline(); out = []
    >>> _ = p.link(p.add(gs.from_iterable("abc")), p.add(gs.consumer(out.extend)))
    >>> p.run_sync(); out
    ['a', 'b', 'c']
    """
    return IterableProducer(iterable, **options)


def _wrap(cls: type[Stage], hook: str, fn: Any, options: dict) -> Any:
    if fn is None:
        return lambda f: _wrap(cls, hook, f, options)
    if not callable(fn):
        raise TypeError(f"{cls.kind}: expected a function, got {fn!r}")
    options.setdefault("name", getattr(fn, "__name__", None) or None)
    if options["name"] == "<lambda>":
        options["name"] = None
    stage = cls(**options)
    setattr(stage, hook, fn)
    return stage


def producer(fn: Callable[[int], Any] | None = None, /, **options: Any) -> Any:
    """Wrap ``fn(demand) -> events`` as a producer (use as a call or a decorator).

    >>> import genstage_nb as gs
    >>> @gs.producer(buffer_size=100)
    ... def ticks(demand):
    ...     return ["tick"] * demand
    >>> ticks.kind, ticks.name
    ('producer', 'ticks')
    """
    return _wrap(Producer, "handle_demand", fn, options)


def producer_consumer(fn: Callable[[list], Any] | None = None, /, **options: Any) -> Any:
    """Wrap ``fn(events) -> events`` as a producer-consumer (call or decorator).

    >>> import genstage_nb as gs
    >>> gs.producer_consumer(lambda events: [e + 1 for e in events]).kind
    'producer_consumer'
    """
    return _wrap(ProducerConsumer, "handle_events", fn, options)


def consumer(fn: Callable[[list], Any] | None = None, /, **options: Any) -> Any:
    """Wrap ``fn(events)`` as a consumer (call or decorator); its result is ignored.

    >>> import genstage_nb as gs
    >>> seen = []
    >>> gs.consumer(seen.extend, name="collect").name
    'collect'
    """
    return _wrap(Consumer, "handle_events", fn, options)


class MapStage(ProducerConsumer):
    """``gs.map``: calls a function on each event and sends its results on.

    The runtime makes one job per event (``core/jobs.py``): up to ``concurrency``
    calls at once, on the event loop (``fn`` sync or async) or on ``executor=``.
    """

    _default_name = "map"

    def __init__(self, fn: Callable[[Any], Any], *, ordered: bool = True, **options: Any):
        if not callable(fn):
            raise TypeError(f"map: expected a function, got {fn!r}")
        if not isinstance(ordered, bool):
            raise TypeError(f"map: ordered must be True or False, got {ordered!r}")
        name = getattr(fn, "__name__", None)
        if name and name != "<lambda>":
            options.setdefault("name", name)
        super().__init__(**options)
        self._gs_map = fn
        self._gs_ordered = ordered
        self._gs_flat = False  # (a Flow's flat_map and filter: each result a list)

    def handle_events(self, events: list) -> list:
        """What a batch would give (the runtime calls ``fn`` per event instead)."""
        return [self._gs_map(event) for event in events]


def map(  # noqa: A001 - gs.map, as users call it
    fn: Callable[[Any], Any], /, *, concurrency: int = 1, ordered: bool = True, **options: Any
) -> ProducerConsumer:
    """A producer-consumer that calls ``fn(event)`` on each event and sends the results.

    ``fn`` may be a plain function or ``async def``. Up to ``concurrency`` calls run at
    once (on the event loop for an async ``fn``; give a sync ``fn`` with
    ``concurrency > 1`` an ``executor=``, e.g. a ``ThreadPoolExecutor``). Results go on
    in the order of the events (``ordered=True``, the default), or as the calls complete
    (``ordered=False``: a slow call holds nothing up). Demand is settled as calls start:
    the stage holds at most ``max_demand`` events per link plus the calls in flight. A
    call that raises fails the stage; its failure record names that one event
    (``Failure.events``), and the results before it in order are sent on. Other options
    as for ``ProducerConsumer``.

    >>> import anyio, genstage_nb as gs
    >>> async def fetch(n):
    ...     await anyio.sleep(0.001 * (n % 3))  # calls finish out of order
    ...     return n * 10
    >>> p = gs.Pipeline(); out = []
    >>> fetched = p.add(gs.map(fetch, concurrency=4))
    >>> _ = p.link(p.add(gs.from_iterable(range(6))), fetched)
    >>> _ = p.link(fetched, p.add(gs.consumer(out.extend)))
    >>> p.run_sync(); out
    [0, 10, 20, 30, 40, 50]
    """
    return MapStage(fn, ordered=ordered, concurrency=concurrency, **options)


class Batcher(ProducerConsumer):
    """``gs.batcher``: groups events into lists of ``size``, sent as single events."""

    _default_name = "batcher"

    def __init__(self, size: int, *, timeout: float | None = None, **options: Any) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batcher: size must be an int >= 1, got {size!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ValueError(
                f"batcher: timeout must be a number of seconds > 0 (or None), got {timeout!r}"
            )
        super().__init__(**options)
        self.size = size
        self.timeout = None if timeout is None else float(timeout)
        self._partial: list = []
        self._generation = 0  # which partial list a timer was started for

    def handle_events(self, events: list) -> list:
        partial = self._partial
        out = []
        size = self.size
        for event in events:
            if not partial:
                self._generation += 1
                if self.timeout is not None:
                    self._flush_after(self._generation)
            partial.append(event)
            if len(partial) == size:
                out.append(partial)
                partial = self._partial = []
        return out

    def handle_info(self, message: Any) -> list:
        """A timeout: the partial list (of that generation) goes as it is."""
        if isinstance(message, tuple) and message[:1] == ("flush",):
            if message[1] == self._generation and self._partial:
                partial, self._partial = self._partial, []
                return [partial]
            return []
        return super().handle_info(message) or []

    def handle_cancel(self, subscription: Any, reason: Any) -> None:
        """The end of the stream (or of a graceful stop): the partial list goes."""
        if reason in ("normal", "shutdown") and self._partial:
            partial, self._partial = self._partial, []
            self.emit([partial])

    def snapshot(self) -> Any:
        """The partial list (a checkpoint saves it; events past it are not seen yet)."""
        return {"partial": list(self._partial)}

    def restore(self, state: Any) -> None:
        self._partial = list(state["partial"])
        if self._partial:
            self._generation += 1
            if self.timeout is not None:
                self._flush_after(self._generation)

    def _flush_after(self, generation: int) -> None:
        process = self._process
        task_group = process.supervisor._tg if process is not None else None
        if task_group is None:
            return

        async def later() -> None:
            import anyio

            assert process is not None and self.timeout is not None  # (a timed batcher's)
            await anyio.sleep(self.timeout)
            if process.running and not process.stopped:
                self.send(("flush", generation))

        task_group.start_soon(later)


def batcher(size: int, *, timeout: float | None = None, **options: Any) -> ProducerConsumer:
    """A producer-consumer that groups events into lists of ``size``, each sent on as one
    event (Broadway's batchers: ``batch_size`` and ``batch_timeout``).

    A partial list goes on ``timeout`` seconds after its first event (if ``timeout`` is
    given), and at the end of the stream (and of a graceful ``stop()``), so nothing is
    left behind. Other options as for ``ProducerConsumer``.

    >>> import genstage_nb as gs
    >>> p = gs.Pipeline(); out = []
    >>> lists = p.add(gs.batcher(3))
    >>> _ = p.link(p.add(gs.from_iterable(range(8))), lists)
    >>> _ = p.link(lists, p.add(gs.consumer(out.extend)))
    >>> p.run_sync(); out
    [[0, 1, 2], [3, 4, 5], [6, 7]]
    """
    return Batcher(size, timeout=timeout, **options)
