"""A stage that fails for good pauses, and goes on when told (``on_failure="pause"``).

``Process.main`` runs the stage through ``_live``: ``init``, then the serving loop.
When a hook raises and the stage may not restart, a pipeline with
``on_failure="pause"`` keeps the stage where it is instead of ending it:

- the failure is recorded (in ``Pipeline.failures``; its batch counted as failed), and
  the stage's status is ``"paused"``; its task waits, with everything it holds (its
  state, its mailbox, its queue, its buffer, work in flight elsewhere) kept;
- nothing it holds is served meanwhile: its producers get no new demand from it, so
  back-pressure holds everything upstream; the other stages run as far as their demand
  goes;
- ``resume`` calls the failed hook again with what it had (the batch, the demand, the
  message), looking the hook up again (the code may have been fixed in between);
  ``skip`` drops the failed batch (it stays counted as failed, its record stays) and
  asks for its replacement; ``stop`` ends the stage as failed for good.

Each place where a hook can fail records how to call it again and how to drop it
(``_keep_redo``); the pause picks that up. A hook that fails again pauses again.
"""

from __future__ import annotations

from collections import deque
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import anyio

from .lifecycle import first_leaf
from .roles import Role
from .timing import BUSY, IDLE, clock

if TYPE_CHECKING:
    from .errors import Failure

#: What a paused stage is told to do.
RESUME, SKIP, STOP = "resume", "skip", "stop"


class Pausing(Role):
    """The pausing role of ``Process``."""

    # Its state (set by _init_pausing):
    _init_done: bool
    _restarting: bool | None
    _redo: tuple | None
    _on_restart: Any
    _restart_steps: list
    paused: Failure | None
    _go_on: anyio.Event | None
    _decision: str | None

    def _init_pausing(self) -> None:
        """A failure for good may pause the stage: how it goes on, once decided."""
        self._init_done = False
        self._restarting = None
        self._redo = None  # how to call a failed hook again, or skip it
        self._on_restart = None  # what a restart does about the failed step
        self._restart_steps = []  # run by _start after a restart's init
        self.paused = None
        self._go_on = None
        self._decision = None

    async def _live(self, restarts: deque[float]) -> None:
        """Start (``init`` and the subscriptions), then serve until the stage ends.

        A failure goes up to ``main`` (which restarts the stage or ends it), except
        when the stage may not restart and the pipeline pauses failed stages: then the
        stage pauses here, and goes on from where it failed when resumed or skipped.
        """
        starting = True
        redo: Any = None
        while True:
            try:
                if redo is not None:
                    step, redo = redo, None
                    pending = step()
                    if pending is not None and isawaitable(pending):
                        await pending
                    if self.finishing and not self.stopped:
                        self._check_finished()  # (the redo may have been its last step)
                    if self.pc and self.pc_queue:
                        # Input queued behind the failed batch, as far as demand goes.
                        pending = self._take_pc_events()
                        if pending is not None:
                            await pending
                if starting:
                    await self._start()
                    starting = False
                    self.supervisor._started(self.process)
                await self._serve()
                return
            except Exception as error:
                exc = first_leaf(error)
                self._restarting = self._may_restart(restarts)
                supervisor = self.supervisor
                if (
                    self._restarting
                    or supervisor.on_failure != "pause"
                    or supervisor.stopping  # (nobody will resume it: it fails for good)
                    or self.stopped
                ):
                    raise
                in_init = self.current_hook == "init"
                decision, redo = await self._pause(exc)
                if decision == STOP:
                    raise  # (main ends it as failed for good)
                if in_init:
                    redo = None  # _start runs init again (with the stage's code as it is now)

    async def _pause(self, exc: BaseException) -> tuple[str, Any]:
        """Record the failure and wait until told to resume, skip or stop; return the
        decision and what to call to go on."""
        resume, skip = self._redo if self._redo is not None else (None, None)
        self._redo = None
        self._on_restart = None
        self._take_failed_ask()  # the redo (or the skip) asks
        demand = self._take_demand_in_hand()
        if resume is None and self.current_hook == "handle_demand":
            # No events to keep: the demand in hand is served again (or by the next call).
            def resume() -> Any:
                return self._on_demand(demand)

            skip = resume
        failure = self._record_failure(exc, False, paused=True)
        if self.time.mode == BUSY:
            self.time.leave(clock(), IDLE)  # paused: no hook at work (a stall is seen)
        self.status = "paused"
        self.paused = failure
        self._go_on = anyio.Event()
        self._decision = None
        self.supervisor._stage_paused(self.process, failure)
        try:
            await self._go_on.wait()
        finally:
            self._go_on = None
            self.paused = None
        decision = self._decision
        assert decision is not None  # (set by _unpause before it sets _go_on)
        self.status = "running"
        self.supervisor._stage_unpaused(self.process, failure, decision)
        if decision in (RESUME, STOP):
            # The failed batch is not failed after all: it is handled again now (or,
            # when stopping, recorded again with what else the stage leaves unhandled).
            self.counters.failed -= len(failure.events)
        if decision == STOP:
            self.current, self.current_hook = list(failure.events), failure.hook
            self._attempts = list(failure.attempts)
            return STOP, None
        return decision, resume if decision == RESUME else skip

    def _unpause(self, decision: str) -> None:
        """``Pipeline.resume``/``skip``/``stop``: a paused stage goes on."""
        go_on = self._go_on
        if go_on is None or self._decision is not None:
            return
        self._decision = decision
        go_on.set()

    def _keep_redo(self, resume: Any, skip: Any = None, restart: Any = None) -> None:
        """Where a hook failed: how to call it again (``resume``) and how to go on
        without it (``skip``); each returns None or an awaitable. ``restart``: what a
        restarted stage does about it once ``init`` has run again (a subscription's
        hook called again, a cancel taken into account), so that nothing waits on a
        step the failure cut short."""
        self._redo = (resume, skip)
        self._on_restart = restart

    # What each kind of failure keeps.

    def _keep_batch(self, sub: Any, batch: list, ask: int) -> None:
        def resume() -> Any:
            return self._consume(sub, [(batch, ask)])

        def skip() -> None:
            if ask:
                self._ask_upstream(sub, ask)  # the demand of the dropped batch

        self._keep_redo(resume, skip)

    def _keep_job(self, job: Any) -> None:
        def resume() -> None:
            job.reset()
            job.attempts = []
            self._sent.appendleft(job)  # results are taken in order: it comes first
            if self.jobs_on_loop:
                self._jobs_ready.appendleft(job)
                if self._idle:
                    self._idle.popleft().set()
            else:
                self._submit(job)

        def skip() -> None:
            self.post(self._on_job_done)  # take the results after it, send more

        self._keep_redo(resume, skip)

    def _keep_event(self, sub: Any, event: Any) -> None:
        def resume() -> None:
            self._start_events(sub, [event])

        def skip() -> None:
            self._in_flight[sub][1] += 1  # (counted out when it failed)
            self._event_finished(sub)

        # A restart goes on without it (recorded), and asks for its replacement.
        self._keep_redo(resume, skip, restart=skip)


__all__ = ["RESUME", "SKIP", "STOP", "Pausing"]
