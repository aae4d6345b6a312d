"""The stage kinds users subclass: Producer, ProducerConsumer, Consumer, ConcurrentConsumer.

A stage is a plain object with hooks; the runtime (``process.py``) calls them. Hooks may
be plain functions or ``async def``. Options are given at construction and checked at
once: a bad value raises ``ValueError`` or ``TypeError`` naming the stage and the option.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import TYPE_CHECKING, Any

from . import options as _opts
from .options import configure

if TYPE_CHECKING:
    from .process import Process
    from .subscription import Subscription

log = logging.getLogger("genstage_nb")


_NONE: Any = object()  # (an attribute not set)


class Stage:
    """Base of every stage kind; subclass ``Producer``, ``ProducerConsumer``,
    ``Consumer`` or ``ConcurrentConsumer`` instead.

    Options (keywords; a subclass's ``__init__`` passes them on with
    ``super().__init__(**options)``), declared once in the option table
    (``core/options.py``; docs/concepts.md lists them):

    - ``name``: the stage's name in its pipeline (default: from ``Pipeline.add`` or the
      class name).
    - ``restart``: ``"temporary"`` (default: never restarted), ``"transient"`` or
      ``"permanent"`` (restarted after a failure, running ``init()`` again).
    - ``max_restarts`` (default 3) within ``max_seconds`` (default 5.0): more restarts
      than that and the stage fails for good (OTP's intensity rule).
    - ``retry``: a ``gs.Retry(...)``: a hook call that raises one of its exceptions is
      made again with the same events after a backoff (default None: no retry).

    Producers and producer-consumers also take ``buffer_size`` (producers: 10_000,
    producer-consumers: ``None``, unbounded), ``buffer_keep`` (``"last"`` drops the
    oldest events on overflow, ``"first"`` the newest) and ``dispatcher`` (a
    ``DemandDispatcher`` by default; a dispatcher instance or class) and ``rate_limit``
    (``(n, seconds)``: at most n events leave in any window of that many seconds; the rest
    wait, nothing is dropped). Producers also take ``demand`` (``"forward"`` or
    ``"accumulate"``).

    Consumers and producer-consumers also take ``executor`` (a
    ``concurrent.futures.Executor`` or a ``dask.distributed.Client``: ``handle_events``
    runs there, on a copy of the stage for a class stage) and ``concurrency`` (batches
    in flight there, default 1); results are taken in order.

    >>> import genstage_nb as gs
    >>> class Squares(gs.ProducerConsumer):
    ...     def __init__(self, **options):
    ...         super().__init__(buffer_size=100, **options)
    ...     def handle_events(self, events):
    ...         return [e * e for e in events]
    >>> s = Squares(name="squares", restart="transient")
    >>> s.name, s.kind, s.restart
    ('squares', 'producer_consumer', 'transient')
    """

    kind = "stage"
    #: Which options it takes (the option table's kind, options.py).
    _option_kind = "stage"
    # Set by the option table (options.py) and by the pipeline that runs it.
    _name: str | None
    dispatcher: Any
    _process: Process | None
    _pipeline: Any
    #: The attributes ``init()`` set (what ``snapshot()`` saves by default).
    _gs_state_names: tuple[str, ...] = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Stage:
        self = super().__new__(cls)
        # Defaults first, so that a subclass whose __init__ forgets super().__init__()
        # still works.
        self._configure({})
        self._process = None
        self._pipeline = None
        return self

    def __init__(self, **options: Any) -> None:
        self._configure(options)

    # -- options -------------------------------------------------------------------

    def _configure(self, options: dict) -> None:
        configure(self, self._option_kind, options)  # the option table (options.py)

    def __getstate__(self) -> dict:
        # What a process pool or a Dask worker gets with a bound hook: the stage's own
        # state, not the runtime around it (pipeline, process, the executor itself).
        state = dict(self.__dict__)
        for runtime in ("_process", "_pipeline", "executor"):
            state.pop(runtime, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_process", None)
        self.__dict__.setdefault("_pipeline", None)
        self.__dict__.setdefault("executor", None)

    def _new_dispatcher(self) -> Any:
        d = self.dispatcher
        if isinstance(d, type):
            return d()
        # A dispatcher instance is a template: each run starts from a fresh one (the
        # Dispatcher protocol's fresh(); a deep copy for a class without it).
        fresh = getattr(d, "fresh", None)
        return fresh() if fresh is not None else copy.deepcopy(d)

    # -- what a stage is -------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The stage's name (set by ``Pipeline.add``)."""
        return self._name

    def __repr__(self) -> str:
        status = self._process.status if self._process is not None else "idle"
        return f"<{type(self).__name__} {self._name!r} {self.kind} {status}>"

    # -- hooks (override the ones you need) -------------------------------------------

    def init(self) -> Any:
        """Set up state; called on every (re)start. May be ``async``."""

    def handle_subscribe(self, subscription: Subscription) -> Any:
        """A subscription was made (this stage is its producer or its consumer).

        A consumer returns ``"manual"`` to ask for events itself with
        ``subscription.ask(n)``; anything else means automatic demand.
        """

    def handle_cancel(self, subscription: Subscription, reason: Any) -> Any:
        """A subscription ended; ``reason`` is ``"normal"``, ``"shutdown"``,
        ``"unlinked"`` or the exception that failed the other stage."""

    def handle_info(self, message: Any) -> Any:
        """A message sent with ``stage.send(message)``.

        A producer or producer-consumer may return events (an iterable, or None): they
        are sent like ``handle_demand``'s, within demand, the rest buffered (GenStage's
        ``{:noreply, events, state}``). A consumer's return value is ignored."""
        log.warning("stage %r has no handle_info; message dropped: %r", self._name, message)

    def handle_call(self, request: Any) -> Any:
        """Answer ``await stage.call(request)``; the return value is the reply."""
        raise NotImplementedError(f"stage {self._name!r} does not define handle_call")

    # -- checkpoints (DESIGN.md section 9) ----------------------------------------------

    def snapshot(self) -> Any:
        """The state a checkpoint saves for this stage (pickled): by default the
        attributes ``init()`` set, as a dict, except those holding a subscription or a
        stage (the run that resumes makes its own). Override it (with ``restore``) to
        save something else, or to leave out what cannot be pickled (a connection, a
        client: set those up in ``init()`` and leave them out here).

        >>> import genstage_nb as gs
        >>> class Count(gs.Consumer):
        ...     def init(self): self.seen = 0
        ...     def handle_events(self, events): self.seen += len(events)
        >>> c = Count(); c.init(); c._gs_state_names = ["seen"]; c.seen = 3
        >>> c.snapshot()
        {'seen': 3}
        """
        from .subscription import Subscription

        state = {}
        for name in self._gs_state_names:
            value = getattr(self, name, _NONE)
            if value is not _NONE and not isinstance(value, (Subscription, Stage)):
                state[name] = value
        return state

    def restore(self, state: Any) -> None:
        """Take back what ``snapshot()`` saved, in a run that resumes from a checkpoint
        (called after ``init()``, before any event). By default it sets the attributes."""
        for name, value in state.items():
            setattr(self, name, value)

    def handle_checkpoint(self, checkpoint_id: int) -> Any:
        """Checkpoint ``checkpoint_id`` is complete (saved for good): everything before
        its cut will not be seen again. A sink that writes elsewhere may commit here.
        May be ``async``."""

    # -- from outside ----------------------------------------------------------------

    def send(self, message: Any) -> None:
        """Deliver ``message`` to ``handle_info`` (asynchronously, in order).

        >>> import anyio, genstage_nb as gs
        >>> class Echo(gs.Consumer):
        ...     def handle_events(self, events): pass
        ...     def handle_info(self, message): print("got", message)
        >>> p = gs.Pipeline(); echo = p.add(Echo(), name="echo")
        >>> async def main():
        ...     p.start(); echo.send("hello"); await p.stop()
        >>> anyio.run(main)
        got hello
        """
        self._running_process("send").post_info(message)

    async def call(self, request: Any) -> Any:
        """Call ``handle_call(request)`` inside the stage and return its reply.

        >>> import anyio, genstage_nb as gs
        >>> class Count(gs.Consumer):
        ...     def init(self): self.seen = 0
        ...     def handle_events(self, events): self.seen += len(events)
        ...     def handle_call(self, request): return self.seen
        >>> p = gs.Pipeline(); count = p.add(Count(), name="count")
        >>> async def main():
        ...     p.start()
        ...     seen = await count.call("how many?")
        ...     await p.stop()
        ...     return seen
        >>> anyio.run(main)
        0
        """
        return await self._running_process("call").call(request)

    def _running_process(self, what: str) -> Process:
        proc = self._process
        if proc is None:
            raise RuntimeError(
                f"stage {self._name!r}: {what}() needs the stage to be in a pipeline"
            )
        return proc


#: The hooks a stage may define (its other methods are the runtime's).
HOOKS = (
    "init",
    "handle_demand",
    "handle_events",
    "handle_event",
    "handle_subscribe",
    "handle_cancel",
    "handle_info",
    "handle_call",
    "snapshot",
    "restore",
    "handle_checkpoint",
)

#: Hooks whose result the runtime ignores (a consumer's events too): one written with
#: ``yield`` would return a generator and its body would never run.
_RESULT_IGNORED = ("init", "handle_subscribe", "handle_cancel")
_CONSUMER_RESULT_IGNORED = ("handle_events", "handle_event", "handle_info")


def check_hooks(stage: Stage) -> None:
    """Refuse a hook written as a generator where its result is ignored."""
    hooks = _RESULT_IGNORED + (_CONSUMER_RESULT_IGNORED if stage.kind == "consumer" else ())
    for hook in hooks:
        fn = getattr(stage, hook, None)
        if fn is not None and (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)):
            kind = "a consumer's " if hook in _CONSUMER_RESULT_IGNORED else ""
            raise TypeError(
                f"stage {stage.name!r}: {hook} is a generator function (it contains "
                f"'yield'): {kind}{hook} result is ignored, so its body would never run; "
                f"remove the yield"
                + (
                    " (a ProducerConsumer's handle_events may yield the events it sends)"
                    if hook == "handle_events"
                    else ""
                )
            )


class _Producing(Stage):
    """What producers and producer-consumers share: emit, finish, buffered."""

    def emit(self, events: Any) -> None:
        """Send ``events`` downstream as far as demand allows; buffer the rest.

        May be called from any hook (and from ``init``).

        >>> import genstage_nb as gs
        >>> class Ready(gs.Producer):
        ...     def init(self):
        ...         self.emit(["a", "b", "c"])  # waits in the buffer until asked for
        ...         self.finish()
        ...     def handle_demand(self, demand):
        ...         return None
        >>> p = gs.Pipeline(); out = []
        >>> _ = p.link(p.add(Ready()), p.add(gs.consumer(out.extend)))
        >>> p.run_sync(); out
        ['a', 'b', 'c']
        """
        self._running_process("emit").emit(events, "emit")

    @property
    def buffered(self) -> int:
        """Events waiting in this stage's buffer (GenStage's estimate_buffered_count).

        >>> import genstage_nb as gs
        >>> gs.from_iterable([1, 2]).buffered  # nothing made yet
        0
        """
        proc = self._process
        return proc.buffered() if proc is not None else 0


class Producer(_Producing):
    """A source of events: ``handle_demand(demand)`` returns up to ``demand`` events.

    Return an iterable of events (or ``None`` for none yet: emit them later with
    ``self.emit``). Call ``self.finish()`` when the stream has ended: what is buffered is
    still delivered, then the consumers see the end with reason ``"normal"``.

    >>> import genstage_nb as gs
    >>> class Count(gs.Producer):
    ...     def init(self):
    ...         self.n = 0
    ...     def handle_demand(self, demand):
    ...         events = list(range(self.n, min(self.n + demand, 5)))
    ...         self.n += len(events)
    ...         if self.n == 5:
    ...             self.finish()
    ...         return events
    >>> p = gs.Pipeline()
    >>> seen = []
    >>> _ = p.link(p.add(Count()), p.add(gs.consumer(seen.extend)))
    >>> p.run_sync(); seen
    [0, 1, 2, 3, 4]
    """

    kind = "producer"
    _option_kind = _opts.PRODUCER
    _total: int | None  # the total option: the events it will make (for the progress)

    def handle_demand(self, demand: int) -> Any:
        """Return up to ``demand`` events (an iterable), or ``None``."""

    def finish(self) -> None:
        """End the stream: deliver the buffer, then cancel the consumers normally.

        >>> import genstage_nb as gs
        >>> class Three(gs.Producer):
        ...     def handle_demand(self, demand):
        ...         self.finish()  # after these: the consumers complete
        ...         return [1, 2, 3]
        >>> p = gs.Pipeline(); out = []
        >>> _ = p.link(p.add(Three()), p.add(gs.consumer(out.extend)))
        >>> p.run_sync(); out
        [1, 2, 3]
        """
        self._running_process("finish").finish()

    @property
    def demand_mode(self) -> str:
        """``"forward"`` (demand goes to ``handle_demand`` as it comes) or
        ``"accumulate"`` (demand is stored until set back to ``"forward"``)."""
        proc = self._process
        if proc is not None and proc.running:
            return "accumulate" if proc.accumulating else "forward"
        return self._demand_mode

    @demand_mode.setter
    def demand_mode(self, mode: str) -> None:
        if mode not in _opts.DEMAND_MODES:
            raise ValueError(
                f"stage {self._name!r}: demand_mode must be 'forward' or 'accumulate', got {mode!r}"
            )
        proc = self._process
        if proc is not None and proc.running:
            proc.set_demand_mode(mode)
        else:
            self._demand_mode = mode
            if proc is not None and not proc.stopped:
                proc.preset_demand_mode(mode)


class ProducerConsumer(_Producing):
    """A transform: ``handle_events(events)`` returns the events to send downstream.

    It asks upstream only as far as its downstream demand allows: events arrive, are
    handled in batches, and the results wait in its buffer (unbounded by default)
    until asked for.

    >>> import genstage_nb as gs
    >>> class Double(gs.ProducerConsumer):
    ...     def handle_events(self, events):
    ...         return [2 * e for e in events]
    >>> p = gs.Pipeline(); out = []
    >>> src = p.add(gs.from_iterable([1, 2, 3]))
    >>> dbl = p.add(Double()); _ = p.link(src, dbl)
    >>> _ = p.link(dbl, p.add(gs.consumer(out.extend)))
    >>> p.run_sync(); out
    [2, 4, 6]
    """

    kind = "producer_consumer"
    _option_kind = _opts.PRODUCER_CONSUMER

    def handle_events(self, events: list) -> Any:
        """Return the events to send downstream (an iterable, or ``None``)."""
        return events


class Consumer(Stage):
    """A sink: ``handle_events(events)`` gets batches of at most
    ``max_demand - min_demand`` events; its return value is ignored.

    >>> import genstage_nb as gs
    >>> class Total(gs.Consumer):
    ...     def init(self):
    ...         self.total = 0
    ...     def handle_events(self, events):
    ...         self.total += sum(events)
    >>> p = gs.Pipeline(); t = Total()
    >>> _ = p.link(p.add(gs.from_iterable(range(101))), p.add(t))
    >>> p.run_sync(); t.total
    5050
    """

    kind = "consumer"
    _option_kind = _opts.CONSUMER

    def handle_events(self, events: list) -> Any:
        """Handle a batch of events."""


class ConcurrentConsumer(Stage):
    """A sink that runs ``async def handle_event(self, event)`` for each event
    concurrently, at most ``max_demand`` at once per subscription (GenStage's
    ConsumerSupervisor). It asks for more as handlers finish: once ``min_demand`` of
    them have finished (at least one).

    >>> import genstage_nb as gs, anyio
    >>> class Fetch(gs.ConcurrentConsumer):
    ...     def init(self):
    ...         self.done = set()
    ...     async def handle_event(self, event):
    ...         await anyio.sleep(0)
    ...         self.done.add(event)
    >>> p = gs.Pipeline(); f = Fetch()
    >>> _ = p.link(p.add(gs.from_iterable(range(10))), p.add(f), max_demand=3)
    >>> p.run_sync(); sorted(f.done)
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    kind = "consumer"
    _option_kind = _opts.CONCURRENT_CONSUMER

    async def handle_event(self, event: Any) -> Any:
        """Handle one event (runs concurrently with the others)."""
        raise NotImplementedError(f"stage {self._name!r} does not define handle_event")
