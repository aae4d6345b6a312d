"""What a running pipeline hears from its stages: failures, pauses, starts, interrupts,
ends; and what it tells a paused stage (``resume``, ``skip``).

The stages' processes call these (``Process.supervisor`` is the pipeline): a failure
recorded, a stage failed for good (which stops the pipeline with
``on_failure="stop"``), a stage paused on a failure (``on_failure="pause"``) and going
on, the start gate (the first asks wait until every stage has started), an interrupt
raised in a hook, a stage ended (the last one ends the run).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from ..core.errors import Failure
from ..core.pausing import RESUME, SKIP, STOP
from ..core.process import Process
from ..core.subscription import Subscription
from ..watchdog import blocking_stage
from .parts import Part

log = logging.getLogger("genstage_nb")

#: Called ``(pipeline, stage name, failure)`` when a stage of any pipeline pauses (the
#: notebook extension shows the pause in the cell that runs); a pipeline's own are in
#: ``Pipeline._pause_listeners``.
PAUSE_LISTENERS: list[Any] = []


class Supervision(Part):
    """The supervision role of ``Pipeline`` (called by the stages' processes)."""

    def _record_failure(self, proc: Process, failure: Failure) -> None:
        self.failures.setdefault(proc.name, []).append(failure)

    # Paused stages (on_failure="pause"; see core/pausing.py).

    @property
    def paused(self) -> dict[str, Failure]:
        """Stage name -> the ``Failure`` each paused stage waits on (empty when none is).

        >>> import genstage_nb as gs
        >>> gs.Pipeline(on_failure="pause").paused
        {}
        """
        return {
            name: proc.paused
            for name, proc in self._procs.items()
            if proc.paused is not None and proc._decision is None
        }

    def resume(self, stage: Any, rewind: bool = False) -> None:
        """Go on with a paused stage: its failed hook is called again with what it had
        (the batch, the demand, the message), using the stage's code as it is now. Its
        failure record is removed (the batch is handled after all); if it fails again,
        it pauses again. Re-running the ``%%stage`` cell of a paused stage does this.

        ``rewind=True`` (a pipeline with ``checkpoint=``): every stage goes back to the
        last complete checkpoint instead, and the events since are replayed with the
        code as it is now, so a hook that changed its state before it raised counts
        nothing twice (a sink other than ``gs.to_sqlite`` sees those events again).

        >>> import anyio, genstage_nb as gs
        >>> p = gs.Pipeline(on_failure="pause"); out = []; bad = {3}
        >>> def sink(events):
        ...     if bad & set(events):
        ...         raise ValueError("cannot take 3 yet")
        ...     out.extend(events)
        >>> src = p.add(gs.from_iterable(range(6)))
        >>> _ = p.link(src, p.add(gs.consumer(sink, name="sink")), max_demand=2)
        >>> async def cell():  # what a notebook cell does
        ...     p.start()
        ...     failure = await p.wait_paused("sink")
        ...     print(p.status["sink"], "with", failure.events)
        ...     bad.clear()  # the fix
        ...     p.resume("sink")
        ...     await p.wait()
        >>> anyio.run(cell); out, p.failures
        paused with [3]
        ([0, 1, 2, 3, 4, 5], {})
        """
        proc = self._paused_process(stage, RESUME)
        if rewind:
            self._rewind(proc)
        else:
            proc._unpause(RESUME)

    def skip(self, stage: Any) -> None:
        """Go on with a paused stage without its failed batch: the batch stays counted
        as failed and in ``failures``, and the stage asks for its replacement. (A
        ``handle_demand`` has no batch: its demand is served by the next call; a
        ``handle_info`` message is dropped.)

        >>> import anyio, genstage_nb as gs
        >>> p = gs.Pipeline(on_failure="pause"); out = []
        >>> def sink(events):
        ...     if 3 in events:
        ...         raise ValueError("a bad record")
        ...     out.extend(events)
        >>> src = p.add(gs.from_iterable(range(6)))
        >>> _ = p.link(src, p.add(gs.consumer(sink, name="sink")), max_demand=2)
        >>> async def cell():
        ...     p.start()
        ...     await p.wait_paused("sink")
        ...     p.skip("sink")
        ...     await p.wait()
        >>> anyio.run(cell); out, [f.events for f in p.failures["sink"]]
        ([0, 1, 2, 4, 5], [[3]])
        """
        proc = self._paused_process(stage, SKIP)
        if proc.paused is not None and proc.paused.hook == "init":
            raise ValueError(
                f"skip: stage {proc.name!r} failed in init, so there is no batch to skip "
                f"and the stage cannot run without it; fix init and resume({proc.name!r})"
            )
        proc._unpause(SKIP)

    def _paused_process(self, stage: Any, verb: str) -> Process:
        proc = self._procs[str(self._stage(verb, stage).name)]
        if proc.paused is None or proc._decision is not None:
            state = "being told to go on" if proc.paused is not None else f"{proc.status!r}"
            raise RuntimeError(f"{verb}: stage {proc.name!r} is not paused (it is {state})")
        return proc

    async def wait_paused(self, stage: str | None = None) -> Failure | None:
        """Wait until a stage (``stage``, or any) is paused; return its ``Failure``, or
        None when the run ends first (or none is running). A ``run()`` just handed to a
        task group (``tg.start_soon(p.run)``) is given the chance to begin first."""
        for _ in range(2):  # (a task started just before runs within two yields)
            if self._running:
                break
            await anyio.lowlevel.checkpoint()
        while True:
            paused = self.paused
            if stage is not None:
                paused = {stage: paused[stage]} if stage in paused else {}
            if paused:
                return next(iter(paused.values()))
            if not self._running:
                return None
            waiter = anyio.Event()
            self._pause_waiters.append(waiter)
            await waiter.wait()

    def _wake_pause_waiters(self) -> None:
        waiters, self._pause_waiters = self._pause_waiters, []
        for waiter in waiters:
            waiter.set()

    def _stage_paused(self, proc: Process, failure: Failure) -> None:
        for listener in [*PAUSE_LISTENERS, *self._pause_listeners]:
            try:
                listener(self, proc.name, failure)
            except Exception:  # a listener's bug must not break the stage
                log.exception("%s: a pause listener failed", self._label)
        self._wake_pause_waiters()

    def _stage_unpaused(self, proc: Process, failure: Failure, decision: str) -> None:
        if decision in (RESUME, STOP):
            # Resumed: the batch is handled again. Stopped: recorded again, with the
            # rest the stage leaves.
            records = self.failures.get(proc.name, [])
            for i, record in enumerate(records):
                if record is failure:
                    del records[i]
                    break
            if not records:
                self.failures.pop(proc.name, None)
        log.info("%s: stage %r %s", self._label, proc.name, _DONE[decision])

    def _stage_failed(self, proc: Process, exc: BaseException) -> None:
        self._fatal[proc.name] = exc
        if self._first_fatal is None:
            self._first_fatal = exc
        if self.on_failure == "stop" and self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _consumers_gone(self, proc: Process) -> bool:
        """In a ``run()`` (not ``start()``, where a notebook may link later): every
        consumer linked to ``proc`` has stopped, so nothing will ever ask it again."""
        if self._background is not None:
            return False
        graph = self._graph
        if proc.name not in graph:
            return False
        return all(self._procs[name].stopped for name in graph.successors(proc.name))

    def _hold_ask(self, producer: Process, sub: Subscription, n: int) -> bool:
        """The start gate: while the stages of a new run are starting, hold the first
        asks (and return True) until every stage has run ``init`` and announced its
        subscriptions. So every producer knows all its consumers before it makes an
        event: a broadcast reaches every subscriber from the first event on, whatever
        order the stages start in (GenStage leaves that to start order, and a late
        subscriber misses what was sent before it)."""
        if self._starting is None:
            return False
        self._held_asks.append((producer, sub, n))
        return True

    def _started(self, proc: Process) -> None:
        """``proc`` has started (or ended before it could); when it is the last, open
        the start gate: the held asks go out in the order they were made."""
        starting = self._starting
        if starting is None:
            return
        starting.discard(proc)
        if not starting:
            self._starting = None
            held, self._held_asks = self._held_asks, []
            for producer, sub, n in held:
                producer.post(producer._on_ask, sub, n)

    def _interrupted(self, proc: Process, exc: BaseException) -> None:
        """A KeyboardInterrupt (or SystemExit) was raised in ``proc``'s hook: stop
        every stage now; ``run()`` raises it once they have all ended."""
        if self._interrupt is None:
            self._interrupt = exc
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            found = blocking_stage(tb.tb_frame if tb is not None else None)
            where = found[0].name if found is not None else proc.name
            log.warning("%s: interrupted in stage %r", self._label, where)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _stage_ended(self, proc: Process) -> None:
        self._alive -= 1
        if self._alive <= 0:
            # Every stage has stopped: the run is over (stages added from now on wait
            # for the next run).
            self._running = False
            if self._ended is not None:
                self._ended.set()
            self._wake_pause_waiters()


_DONE = {RESUME: "resumed", SKIP: "skipped its failed batch", STOP: "stopped while paused"}


__all__ = ["Supervision"]
