"""The runtime of one stage for one run: a ``Process``, wired from its roles.

Each role is a file of its own, and ``Process`` is the thin class that joins them,
holds the state they share and runs the stage's task (``main``: ``init``, serve the
mailbox, restart on a failure if allowed):

- ``mailbox.py``: posting, serving inline (the sync fast path), the serving loop;
- ``lifecycle.py``: failures, restarts, termination, messages from outside;
- ``producing.py``: demand in, events out through the dispatcher and the buffer
  (``pump.py`` drives a chain of single-consumer links in one loop);
- ``accumulating.py``: ``demand="accumulate"``, demand (and events) kept until forwarded;
- ``buffering.py``: what a producer makes beyond demand, waiting in its buffer;
- ``pacing.py``: ``rate_limit=``, events held back until the window has room;
- ``consuming.py``: subscriptions, batches, asks upstream, the producer-consumer queue;
- ``jobs.py``: work in flight on an executor, or as async calls on the event loop
  (``concurrency``, ``gs.map``); ``concurrent.py``: a ``ConcurrentConsumer``'s event tasks;
- ``pausing.py``: a stage that fails for good pauses (``on_failure="pause"``) and goes
  on when resumed or skipped.

The roles are one level of plain classes with no ``__init__`` and no ``super()`` calls:
every handler stays a direct method of the one object the hot path works on (an
attribute hop per message is what composition would add there). Every rule of the
protocol lives in the pure state machines (``demand.py``, ``buffer.py``,
``dispatchers.py``) the roles call.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
from anyio.lowlevel import checkpoint

from . import messages, snapshots
from .accumulating import Accumulating
from .buffering import Buffering
from .concurrent import ConcurrentEvents
from .consuming import Consuming
from .counters import Counters, as_events
from .jobs import Jobs
from .lifecycle import Lifecycle, discard_unstarted, first_leaf
from .mailbox import Mailbox
from .options import fusable
from .pacing import Pacing
from .pausing import Pausing
from .producing import Producing
from .remote import check_concurrency
from .stage import check_hooks
from .statistics import StageStatistics
from .timing import BUSY, StageTime, clock

if TYPE_CHECKING:
    from .supervisor import Supervisor


messages.bind(
    {
        Producing._on_ask: messages.ASK,
        Consuming._on_events: messages.EVENTS_IN,
        Consuming._on_batches: messages.BATCHES_IN,
        Producing._on_subscribe: messages.SUBSCRIBE,
        ConcurrentEvents._on_event_failed: messages.EVENT_FAILED,
        ConcurrentEvents._on_event_done: messages.EVENT_DONE,
        Lifecycle._on_call: messages.CALL,
    }
)


def declared_state(role: type) -> list[str]:
    """The state ``role`` declares it owns: its class's annotations (class constants
    left out)."""
    notes = role.__dict__.get("__annotations__", {})
    return [name for name, note in notes.items() if "ClassVar" not in str(note)]


def fits_loop(stage: Any) -> bool:
    return fusable(stage, getattr(stage, "_option_kind", stage.kind))


class Process(
    Lifecycle,
    Pausing,
    Mailbox,
    Producing,
    Accumulating,
    Buffering,
    Pacing,
    Consuming,
    Jobs,
    ConcurrentEvents,
):
    """Serves one stage's mailbox for one run of its pipeline."""

    # Its own state (set by __init__ and main): the stage, its pipeline, what it counts.
    stage: Any
    name: str
    kind: str
    supervisor: Supervisor
    pc: bool
    status: str
    running: bool
    _task_group: Any
    counters: Counters
    time: StageTime
    _until_timed: int
    _untimed: int
    fits_loop: bool
    fusable: bool
    _restored: dict[str, Any] | None

    def __init__(self, stage: Any, supervisor: Supervisor) -> None:
        self.stage = stage
        self.name = stage.name
        self.kind = stage.kind
        self.supervisor = supervisor
        self.pc = self.kind == "producer_consumer"
        self.status = "idle"
        self.running = False
        self._task_group: Any = None  # (of a stage with workers, while it runs)
        self.counters = Counters()
        self.time = StageTime()  # busy / back-pressured / idle (timing.py)
        # Fused loops before the next timed round, and rounds since the last (pump.py).
        self._until_timed = 0
        self._untimed = 0
        self._restored = None  # the state a checkpoint saved, taken back at the start
        # Each role's own state (its _init_ method says what it holds).
        self._init_lifecycle(stage)
        self._init_mailbox()
        self._init_producing(stage)
        self._init_accumulating(stage)
        self._init_buffering(stage)  # (by what _init_producing found)
        self._init_pacing(stage)
        self._init_consuming()
        self._init_concurrent(stage)
        self._init_pausing()
        # The fused loop (pump.py) may run it: every option the loop does not handle at
        # its default (the option table, options.py); a producer drives its chain.
        self.fits_loop = fits_loop(stage)
        self.fusable = self.kind == "producer" and self.fits_loop
        # Work in flight on an executor or on the event loop (see jobs.py).
        check_concurrency(stage)
        check_hooks(stage)
        self._init_jobs(stage)

    #: The roles, in the order ``state()`` lists them (each declares its own state).
    ROLES: ClassVar[tuple[type, ...]] = ()

    def state(self) -> dict[str, dict[str, Any]]:
        """This stage's whole runtime state, role by role: what each role's class
        declares it owns (``core/roles.py`` says how roles reach each other's)."""
        listed = {}
        for role in (Process, *self.ROLES):
            names = declared_state(role)
            listed[role.__name__] = {n: getattr(self, n) for n in names if hasattr(self, n)}
        return listed

    async def _on_checkpoint(self, checkpoint_id: int, _: Any) -> None:
        """Checkpoint ``checkpoint_id`` is complete: the stage's ``handle_checkpoint``."""
        self.current_hook = "handle_checkpoint"
        await self._hook(self.stage.handle_checkpoint, checkpoint_id)
        self.current_hook = ""

    def statistics(self) -> StageStatistics:
        """This stage's runtime state now, as a named record (``statistics.py``)."""
        return statistics_of(self)

    async def main(self) -> None:
        """Run the stage until it ends: init, serve, restart on failure if allowed."""
        restarts: deque[float] = deque()
        self.running = True
        try:
            while True:
                self.status = "running"
                try:
                    if self.concurrent or self.jobs:
                        await self._live_with_workers(restarts)
                    else:
                        await self._live(restarts)
                    self.status = "done"
                    return
                except Exception as error:
                    if not self._failed(first_leaf(error), restarts):
                        return
                    await checkpoint()  # restarted: init runs again
        except (KeyboardInterrupt, SystemExit) as exc:
            # A kernel interrupt (or exit) raised in a hook: not the stage's failure.
            # The whole pipeline stops cleanly and run() raises it once all have ended.
            self.supervisor._interrupted(self, exc)
        finally:
            self._ended()

    def _failed(self, exc: Exception, restarts: deque[float]) -> bool:
        """The stage failed with ``exc``: record it, and restart (True) or fail for
        good (False) as its restart policy says."""
        restarted = self._restarting  # (_live decided, for what failed in it)
        if restarted is None:
            restarted = self._may_restart(restarts)
        self._restarting = None
        self._redo = None
        on_restart, self._on_restart = self._on_restart, None
        self._record_job_errors(restarted)
        if restarted:
            # Events made but refused by the dispatcher are lost either way.
            unhandled = self._take_refused()
            self.counters.unhandled_out += len(unhandled)
        else:
            unhandled = self._take_unhandled()
        self._record_failure(exc, restarted, unhandled)
        failed_ask = self._take_failed_ask()
        lost_demand = self._take_demand_in_hand()
        if not restarted:
            self.status = "failed"
            self._terminate(exc)
            self.supervisor._stage_failed(self, exc)
            return False
        if self.jobs:
            self._jobs_after_restart()
        # The demand in hand when it failed is served after the restart.
        if failed_ask is not None:
            self._ask_upstream(*failed_ask)
        if lost_demand:
            self.mailbox.appendleft((self._on_self_demand, lost_demand, None))
        elif self.pc and self.pc_queue:
            # Input queued behind the failed batch: handled after the restart as far as
            # the demand from downstream goes.
            self.mailbox.appendleft((self._on_self_demand, 0, None))
        if on_restart is not None:
            self._restart_steps.append(on_restart)
        self.status = "restarting"
        self._init_done = False  # init runs again
        self.counters.restarts += 1
        return True

    def _ended(self) -> None:
        """The stage's task ends (done, failed, cancelled): what it held is counted, the
        pipeline told."""
        self.supervisor._started(self)  # ended before it started: do not hold the rest
        if self._inline_error is not None:
            # A hook failed inline, in another stage's task, just as this stage was
            # cancelled (the pipeline stopping): still a failure, recorded as such.
            error, self._inline_error = self._inline_error, None
            self._fail_cancelled(first_leaf(error))
        self._failures_left_behind()
        self._drop_work_in_hand()
        self.running = False
        self._task_group = None
        if self.status in ("running", "restarting", "idle"):
            self.status = "done"
        elif self.status == "paused":
            self.status = "failed"  # cancelled while paused: its failure stands
            self.paused = None
        if not self.stopped:
            self.stopped = True
            self.stop_reason = "shutdown"
        end = getattr(self.stage, "_gs_ended", None)
        if end is not None:
            end(self)
        self.supervisor._stage_ended(self)

    def _drop_work_in_hand(self) -> None:
        """Cancelled with work in hand: it is counted as unhandled."""
        if self._rest is not None:
            # Cancelled while an async handle_events was at work on this list.
            batches, i = self._rest
            self.counters.unhandled_in += sum(len(b) for b, _ in batches[i:])
            self._rest = None
            self.current = []
        if self.jobs and (self._sent or self._waiting):
            # Cancelled with batches at the executor or waiting for it.
            self.counters.unhandled_in += sum(
                len(job.batch) for job in (*self._sent, *self._waiting)
            )
            self._sent.clear()
            self._waiting.clear()
        if self._resume is not None:
            # Cancelled with an async hook handed over but not started.
            discard_unstarted(self._resume)
            self._resume = None

    async def _live_with_workers(self, restarts: deque[float]) -> None:
        """``_live`` beside the stage's workers (jobs, concurrent events), in a task group
        of its own."""
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                self._served_out = False
                await self._live(restarts)
                if self.jobs_on_loop:
                    tg.cancel_scope.cancel()  # the idle workers
                elif self.concurrent:
                    self._serve_out()  # (the busy workers finish their events)
        except BaseExceptionGroup as group:
            failed, cancelled = group.split(Exception)
            if failed is None or cancelled is None:
                raise
            # A hook failed just as the stage was cancelled (the pipeline stopping): a
            # failure all the same, recorded as such; the cancellation goes on.
            self._fail_cancelled(first_leaf(failed))
            raise cancelled from None

    def _record_job_errors(self, restarted: bool) -> None:
        """Other jobs in flight that failed as well (``concurrency`` above 1): each is a
        failure of its own, recorded with its batch (not re-sent, not left unhandled)."""
        if not self.jobs:
            return
        failed = [job for job in self._sent if job.done and job.error is not None]
        if not failed:
            return
        self._sent = deque(job for job in self._sent if not (job.done and job.error is not None))
        current, hook, attempts = self.current, self.current_hook, self._attempts
        final = self._final_failure
        for job in failed:
            self.current, self.current_hook = list(job.batch), "handle_events"
            self._attempts = list(job.attempts)
            self._record_failure(job.error, restarted)
        self.current, self.current_hook, self._attempts = current, hook, attempts
        self._final_failure = final  # (the stage's own failure is recorded next)

    def _failures_left_behind(self) -> None:
        """Cancelled (a stop's timeout, another stage's failure) with failures not yet
        served: an event's failure in the mailbox, a job that failed. Each is recorded."""
        if self.concurrent:
            for _, a, b in self._take_messages((messages.EVENT_FAILED,)):
                self._event_failed_late(a, *b)
        if self.jobs:
            for job in self._sent:
                future = job.future
                if not job.done and future is not None and future.done():
                    # Finished on the executor while its waiter was cancelled.
                    error = future.exception() if not future.cancelled() else None
                    if error is not None:
                        job.done, job.error = True, error
            errors = [job.error for job in self._sent if job.done and job.error is not None]
            self._record_job_errors(False)
            for exc in errors:
                self.supervisor._stage_failed(self, exc)

    def _fail_cancelled(self, exc: BaseException) -> None:
        """Fail for good with ``exc`` while cancelled (no restart, no pause)."""
        self._redo = self._on_restart = None
        self._record_failure(exc, False, self._take_unhandled())
        self.status = "failed"
        self._terminate(exc)
        self.supervisor._stage_failed(self, exc)

    async def _start(self) -> None:
        if not self._init_done:
            self.current = []
            self.current_hook = "init"
            # What init() sets is the default state of a checkpoint; only a pipeline
            # with checkpoints looks (vars() gives the stage a dict of its own, which
            # makes every attribute access of its hooks a little slower).
            durable = getattr(self.supervisor, "_checkpoints", None) is not None
            before = dict(vars(self.stage)) if durable else None
            await self._retried_hook("init")
            if before is not None:
                self.stage._gs_state_names = init_set(self.stage, before)
            if self._restored is not None:
                self.current_hook = "restore"
                snapshots.resume(self)
            self.current_hook = ""
            self._init_done = True
        # On a restart the subscriptions are still live: only new ones are announced,
        # and what the failure cut short is taken up (a subscription's hook, a cancel).
        steps, self._restart_steps = self._restart_steps, []
        for step in steps:
            pending = step()
            if pending is not None:
                await pending
        for sub in list(self.producers):
            if not sub.active:
                await self._subscribe_upstream(sub)
        if self.jobs:
            self._start_workers(self._task_group)
            self._rejoin_jobs()
            self._send_more()
            self._complete_if_drained()
        elif self.concurrent:
            self._start_event_workers()


def init_set(stage: Any, before: dict[str, Any]) -> tuple[str, ...]:
    """The attributes ``init()`` set: new ones, and those it bound to another object
    (with those a run before found: the same object may run again)."""
    names = dict.fromkeys(stage._gs_state_names)
    for name, value in vars(stage).items():
        if name.startswith("_gs_") or name in _RUNTIME:
            continue
        if name not in before or before[name] is not value:
            names[name] = None
    return tuple(names)


_RUNTIME = frozenset(("_process", "_pipeline", "executor", "_name"))


def statistics_of(proc: Process) -> StageStatistics:
    """A process's runtime state now, as a named record (``statistics.py``)."""
    held = proc.dispatcher.buffered() + proc._held_count if proc.producing else 0
    return StageStatistics(
        name=proc.name,
        kind=proc.kind,
        producing=proc.producing,
        copies=proc.producing and bool(getattr(proc.dispatcher, "copies", False)),
        status=proc.status,
        running=proc.running,
        stopped=proc.stopped,
        paused=proc.paused,
        counts={**proc.counters.snapshot(), "late": getattr(proc.stage, "late_count", 0)},
        buffered=proc.buffered(),
        in_buffer=len(proc.buffer) if proc.producing else 0,
        buffer_size=proc.buffer.size if proc.producing else None,
        growing=proc.producing and proc.buffer_warned and len(proc.buffer) > proc.growing_limit(),
        held=held,
        queued=messages.events_waiting(proc),
        queued_input=sum(len(e) for k, _, e in proc.pc_queue if k == messages.EVENTS),
        outstanding=sum(sub.pending for sub in proc.producers),
        at_work=not proc.stopped
        and (proc.time.mode == BUSY or proc._rest is not None or proc._resume is not None),
        times=proc.time.close(clock()),
    )


Process.ROLES = Process.__bases__

__all__ = ["Counters", "Process", "as_events"]
