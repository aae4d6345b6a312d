"""Work in flight: batches (or single events) handled elsewhere while the stage goes on.

A stage works this way when it has ``executor=`` (its ``handle_events`` runs on a thread
pool, a process pool or a Dask cluster: see ``remote.py``), when its ``handle_events``
is ``async`` and ``concurrency`` is above 1 (the calls run on the event loop, in
``concurrency`` worker tasks of the stage), and for ``gs.map`` (one job per event, its
function called on each). Each unit of work is a ``Job``:

- jobs wait in ``_waiting`` until fewer than ``concurrency`` are in flight (``_sent``);
- the demand a batch settles is asked when its last job is sent (the next events come
  while these are worked on), so a stage holds at most ``max_demand`` per subscription
  plus the jobs in flight;
- results are taken in the order the jobs were sent (``ordered``, the default), or as
  they complete (``gs.map(..., ordered=False)``); a failed job fails the stage with its
  batch (or its one event) in the failure record; a restarted stage waits again for the
  calls in flight on its executor (each call is made once) and makes again the calls on
  the event loop that its failure cut short.

On the event loop the calls run in long-lived worker tasks, not a task per call: that is
what the best plain-asyncio code does (a pool of workers), and it costs no task start
per event.
"""

from __future__ import annotations

from collections import deque
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint

from .remote import Job, check_picklable, is_async, submitter
from .roles import Role
from .timing import BUSY, SLICE, clock, rest_mode

if TYPE_CHECKING:
    from .subscription import Subscription


def _async_hook(stage: Any) -> bool:
    return is_async(stage.handle_events)


class Jobs(Role):
    """The jobs role of ``Process``."""

    # Its state (set by _init_jobs):
    executor: Any
    jobs: bool
    concurrency: int
    jobs_on_loop: bool
    per_event: bool
    flat: bool
    ordered: bool
    _map_fn: Any
    _submit_to: Any
    _waiting: deque
    _sent: deque
    _jobs_ready: deque
    _idle: deque
    _finished: deque
    _done_posted: bool
    _complete_when_drained: bool
    _waiters: anyio.CapacityLimiter | None

    def _init_jobs(self, stage: Any) -> None:
        """Whether the stage's work goes out as jobs (an executor, ``gs.map``, or
        ``concurrency`` above 1 with an async ``handle_events``), and their queues."""
        executor = self.executor = getattr(stage, "executor", None)
        per_event = getattr(stage, "_gs_map", None)  # gs.map: the function, called per event
        concurrency = getattr(stage, "concurrency", 1)  # consumers and producer-consumers
        loop = executor is None and (
            per_event is not None or (concurrency > 1 and _async_hook(stage))
        )
        self.jobs = executor is not None or loop
        self.concurrency = concurrency
        self.jobs_on_loop = loop
        self.per_event = per_event is not None
        self.flat = getattr(stage, "_gs_flat", False)  # each result a list of events (Flow)
        self.ordered = getattr(stage, "_gs_ordered", True)
        self._map_fn = per_event  # gs.map's function; else handle_events, looked up at each
        # call so that code swapped in place (a re-run %%stage cell) takes effect
        self._submit_to = None
        self._waiting = deque()
        self._sent = deque()
        self._jobs_ready = deque()  # on the loop: jobs sent, not yet taken by a worker
        self._idle = deque()  # on the loop: the wake-up events of the idle workers
        self._finished = deque()  # not ordered: the jobs done, in completion order
        self._done_posted = False
        self._complete_when_drained = False
        self._waiters = None  # (concurrency above 1, on a pool)
        if executor is not None:
            fn = per_event if per_event is not None else stage.handle_events
            hook = "the function of gs.map" if per_event is not None else "handle_events"
            check_picklable(self.name, hook, fn, executor)
            self._submit_to = submitter(executor)

    def _start_workers(self, task_group: Any) -> None:
        if self.jobs_on_loop:
            for _ in range(self.concurrency):
                task_group.start_soon(self._worker)

    def _jobs_after_restart(self) -> None:
        """The stage failed with jobs in flight, and restarts; their waiters and workers
        ended with its task group. A call on an executor goes on (it cannot be called
        back): it is waited for again after the restart, its result or its failure taken
        as usual, so no batch is handled twice. A call on the event loop was cut short
        with its worker: it is made again. The jobs keep their order."""
        for job in self._sent:
            if job.future is None and not job.done:
                job.reset()
        self._jobs_ready.clear()
        self._idle.clear()
        self._finished.clear()
        self._done_posted = False

    def _rejoin_jobs(self) -> None:
        """After a restart: the jobs still in flight (see ``_jobs_after_restart``)."""
        done = False
        for job in self._sent:
            if job.done:
                done = True
                if not self.ordered:
                    self._finished.append(job)
            elif job.future is not None:
                self._task_group.start_soon(self._wait_for, job)
            else:
                self._jobs_ready.append(job)
        if done:
            self._done_posted = True
            self.post(self._on_job_done)

    def _send_batches(self, sub: Subscription, batches: list) -> None:
        """What ``_consume`` does for a stage of jobs: the batches become jobs."""
        waiting = self._waiting
        if self.per_event:
            for batch, ask in batches:
                if not batch:  # (nothing to call: its demand is settled now)
                    if ask:
                        self._ask_upstream(sub, ask)
                    continue
                for event in batch:
                    waiting.append(Job(sub, [event], 0))
                waiting[-1].ask = ask  # settled when the batch's last event is sent
        else:
            for batch, ask in batches:
                waiting.append(Job(sub, batch, ask))
        self._send_more()

    def _send_more(self) -> None:
        """Send waiting jobs while fewer than ``concurrency`` are in flight; settle
        their demand as they go."""
        waiting, sent = self._waiting, self._sent
        on_loop = self.jobs_on_loop
        while waiting and len(sent) < self.concurrency and not self.stopped:
            job = waiting.popleft()
            sent.append(job)
            if on_loop:
                self._jobs_ready.append(job)
                if self._idle:
                    self._idle.popleft().set()
            else:
                self._submit(job)
            if job.ask:
                ask, job.ask = job.ask, 0
                self._ask_upstream(job.sub, ask)
        if sent and self.time.mode != BUSY:
            self.time.enter(clock())  # busy while work is in flight

    def _submit(self, job: Job) -> None:
        """Send ``job`` to the executor, and wait for its result in a task."""
        if self.per_event:
            job.future = self._submit_to(self._map_fn, job.batch[0])
        else:
            job.future = self._submit_to(self.stage.handle_events, job.batch)
        self._task_group.start_soon(self._wait_for, job)

    async def _worker(self) -> None:
        """One of ``concurrency`` tasks that make the calls on the event loop."""
        ready, idle = self._jobs_ready, self._idle
        stage = self.stage
        since = clock()
        while True:
            fn = self._map_fn  # (read again after each wait: a re-run cell may swap it)
            while ready:
                job = ready.popleft()
                arg = job.batch[0] if fn is not None else job.batch
                try:
                    result = fn(arg) if fn is not None else stage.handle_events(arg)
                    if isawaitable(result):
                        result = await result
                    job.result = result
                except Exception as exc:
                    job.error = exc
                    if self.retry is not None and self.retry.retries(exc):
                        try:  # gs.map: per event; a batch: the whole batch
                            job.result = await self._retry_call(self._job_hook, arg, exc)
                            job.error = None
                        except Exception as last:
                            job.error = last
                            job.attempts, self._attempts = self._attempts, []
                job.done = True
                if not self.ordered:
                    self._finished.append(job)
                if not self._done_posted:
                    self._done_posted = True
                    self.post(self._on_job_done)
                if clock() - since > SLICE:
                    # Calls that never wait (an async hook answering from a cache) would
                    # hold the event loop for good: let the other tasks run.
                    await checkpoint()
                    since = clock()
            wakeup = anyio.Event()
            idle.append(wakeup)
            await wakeup.wait()
            since = clock()

    def _job_hook(self) -> Any:
        return self._map_fn if self._map_fn is not None else self.stage.handle_events

    async def _wait_for(self, job: Job) -> None:
        try:
            job.result = await anyio.to_thread.run_sync(
                job.future.result, abandon_on_cancel=True, limiter=self._limiter()
            )
        except Exception as exc:
            job.error = exc
        job.done = True
        if not self.ordered:
            self._finished.append(job)
        self.post(self._on_job_done)

    def _limiter(self) -> anyio.CapacityLimiter:
        # A thread per batch in flight waits for its result, outside anyio's default
        # pool so that many in flight do not starve other to_thread users.
        limiter = getattr(self, "_waiters", None)
        if limiter is None:
            limiter = self._waiters = anyio.CapacityLimiter(self.concurrency)
        return limiter

    def _on_job_done(self, _: Any, __: Any) -> None:
        """Take the results that are in: in the order the jobs were sent, or (not
        ordered) as they completed."""
        self._done_posted = False
        sent = self._sent
        if self.ordered:
            taken = []
            while sent and sent[0].done:
                taken.append(sent.popleft())
        else:
            taken = list(self._finished)
            self._finished.clear()
            if taken:
                self._sent = sent = deque(job for job in sent if not job.done)
        failed = next((job for job in taken if job.error is not None), None)
        if failed is not None:
            # What finished before the failed job still goes on; the failed job's
            # events go to the failure record, the jobs after it are kept (their results
            # taken after a restart, or recorded as unhandled).
            i = taken.index(failed)
            for job in reversed(taken[i + 1 :]):
                sent.appendleft(job)
                if not self.ordered:
                    self._finished.appendleft(job)  # (done: taken with the next results)
            self._take_results(taken[:i])
            self.current = failed.batch
            self.current_hook = "handle_events"
            self._attempts = failed.attempts
            self._keep_job(failed)  # a paused stage sends it again, or skips it
            raise failed.error
        self._take_results(taken)
        self._send_more()
        if not sent:
            self.time.leave(clock(), rest_mode(self))
        self._complete_if_drained()

    def _take_jobs_input(self) -> list:
        """Remove and return the batches of the jobs sent out or waiting to be."""
        received: list = []
        if self.jobs:
            for job in (*self._sent, *self._waiting):
                received.extend(job.batch)
            self._sent.clear()
            self._waiting.clear()
        return received

    def _complete_once_drained(self) -> bool:
        """The stage's producers have ended with jobs in flight: it completes once the
        last result is in (True); False if none is in flight."""
        if self.jobs and (self._sent or self._waiting):
            self._complete_when_drained = True
            return True
        return False

    def _complete_if_drained(self) -> None:
        """The stage's producers have ended: it completes once no job is left (after
        the last result, or at once after a restart that left none in flight)."""
        if self._complete_when_drained and not self._sent and not self._waiting:
            self._complete_when_drained = False
            self._complete()

    def _take_results(self, taken: list[Job]) -> None:
        if not taken:
            return
        if not self.per_event:
            for job in taken:
                self._batch_handled(job.sub, job.result, 0, len(job.batch))
            return
        # gs.map: one result per event, sent on as one list.
        counters = self.counters
        counters.handled += len(taken)
        counters.batches += 1
        if self.pc:
            if self.flat:
                out = [event for job in taken for event in job.result]
            else:
                out = [job.result for job in taken]
            counters.made += len(out)
            if out:  # (a Flow's filter or flat_map may make none)
                self._dispatch(out)


__all__ = ["Jobs"]
