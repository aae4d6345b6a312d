"""Shared test stages and helpers: GenStage's own test stages, rewritten for genstage_nb."""

from __future__ import annotations

import asyncio

import anyio

import genstage_nb as gs


class Counter(gs.Producer):
    """Counts from ``start``; with ``limit``, finishes after ``limit`` events."""

    def __init__(self, start=0, limit=None, **options):
        super().__init__(**options)
        self.start = start
        self.limit = limit
        self.demands = []

    def init(self):
        self.n = self.start

    def handle_demand(self, demand):
        self.demands.append(demand)
        stop = self.n + demand
        if self.limit is not None:
            stop = min(stop, self.start + self.limit)
        events = list(range(self.n, stop))
        self.n = stop
        if self.limit is not None and self.n == self.start + self.limit:
            self.finish()
        return events

    def handle_info(self, message):
        if message[0] == "queue":
            self.emit(message[1])

    def handle_call(self, request):
        if request[0] == "queue":
            self.emit(request[1])
            return "queued"
        if request == "buffered":
            return self.buffered
        if request == "sync":
            return "ok"
        raise ValueError(f"unknown request {request!r}")


class NothingProducer(gs.Producer):
    """Records the demand it gets and makes nothing."""

    def __init__(self, **options):
        super().__init__(**options)
        self.demands = []

    def handle_demand(self, demand):
        self.demands.append(demand)


class Forwarder(gs.Consumer):
    """Records every batch; sets ``done`` once ``until(batches)`` holds."""

    def __init__(self, until=None, **options):
        super().__init__(**options)
        self.batches = []
        self.cancels = []
        self.until = until
        self._done = None

    @property
    def done(self):
        """An event set once ``until(batches)`` holds (made on first use, in async code)."""
        if self._done is None:
            self._done = anyio.Event()
        return self._done

    @done.setter
    def done(self, event):
        self._done = event

    def handle_events(self, events):
        self.batches.append(list(events))
        if self.until is not None and self.until(self.batches):
            self.done.set()

    def handle_cancel(self, subscription, reason):
        self.cancels.append(reason)

    @property
    def events(self):
        return [e for b in self.batches for e in b]


class Doubler(gs.ProducerConsumer):
    """Emits each event twice; records the batches it handled."""

    def __init__(self, **options):
        super().__init__(**options)
        self.batches = []

    def handle_events(self, events):
        self.batches.append(list(events))
        return [x for e in events for x in (e, e)]


async def run_until(p: gs.Pipeline, *consumers: Forwarder, timeout: float = 10) -> None:
    """Run ``p`` until every consumer's ``done`` event is set, then stop it."""
    for c in consumers:
        c.done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        with anyio.fail_after(timeout):
            for c in consumers:
                await c.done.wait()
        await p.stop(timeout=0)


async def run_linking_later(p: gs.Pipeline) -> None:
    """Run ``p`` although a producer has no consumer yet, for scenarios that link (or
    open a stream) while it runs. ``run()`` refuses such a pipeline and ``start()``
    allows it, but only on asyncio; this runs it on either backend."""
    await p._run()


async def live_tasks():
    """The tasks alive on the running loop (asyncio: the set; trio: how many)."""
    try:
        return {t for t in asyncio.all_tasks() if not t.done()}
    except RuntimeError:
        import trio

        return trio.lowlevel.current_statistics().tasks_living


#: A %%stage cell body: a producer of 0..LIMIT-1 that waits on GATE (an asyncio.Event
#: of the notebook) once it has made HALF, so a test can act while the pipeline runs.
#: A ``%%stage`` producer cell: 0..LIMIT-1 (``LIMIT`` from the notebook's namespace).
NUMBERS_CELL = """
def init(self):
    self.n = 0

def handle_demand(self, demand):
    events = list(range(self.n, min(self.n + demand, LIMIT)))
    self.n += len(events)
    if self.n >= LIMIT:
        self.finish()
    return events
"""

GATED_NUMBERS = """\
def init(self):
    self.n = 0

async def handle_demand(self, demand):
    if self.n >= HALF:
        await GATE.wait()
    events = list(range(self.n, min(self.n + demand, LIMIT)))
    self.n += len(events)
    if self.n >= LIMIT:
        self.finish()
    return events"""


async def settle(p, quiet=100):
    """Let the stages of ``p`` go as far as they can: return once nothing has moved for
    ``quiet`` checkpoints in a row (every ready task runs at each). (anyio's
    ``wait_all_tasks_blocked`` can wait forever beside a task that wakes on a timer at
    its own polling period, like the watchdog's heartbeat.)"""
    from genstage_nb.stalls import progress

    last, same = None, 0
    while same < quiet:
        await anyio.lowlevel.checkpoint()
        now = progress(p)[0]
        same = same + 1 if now == last else 0
        last = now


def gated(first: int, total: int, gate: anyio.Event):
    """An async source: ``first`` events, then (after ``gate``) the rest to ``total``."""

    async def numbers():
        for i in range(first):
            yield i
        await gate.wait()
        for i in range(first, total):
            yield i

    return numbers()


def until(seen: list, n: int, reached: anyio.Event):
    """A sink function: keeps the events; sets ``reached`` once it has ``n``."""

    def take(events):
        seen.extend(events)
        if len(seen) >= n:
            reached.set()

    return take
