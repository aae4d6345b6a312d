"""Batches sent to an executor: ``executor=`` and ``concurrency=`` at work.

Stands in for ``_consume`` when a stage has an executor (see ``remote.py`` for the
protocol and the checks): batches are sent as ``Job``s, up to ``concurrency`` in flight,
their demand settled as they are sent, and the results taken in the order the batches
were sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from .remote import Job

if TYPE_CHECKING:
    from .subscription import Subscription


class RemoteBatches:
    """The executor role of ``Process``."""

    def _send_batches(self, sub: Subscription, batches: list) -> None:
        """Stands in for ``_consume`` when the stage has an executor."""
        waiting = self._waiting
        for batch, ask in batches:
            waiting.append(Job(sub, batch, ask))
        self._send_more()

    def _send_more(self) -> None:
        """Send waiting batches while fewer than ``concurrency`` are in flight; settle
        their demand as they go (the next events come while these are computed)."""
        waiting, sent = self._waiting, self._sent
        handler = self.stage.handle_events
        while waiting and len(sent) < self.concurrency and not self.stopped:
            job = waiting.popleft()
            job.future = self._submit_to(handler, job.batch)
            sent.append(job)
            self._task_group.start_soon(self._wait_for, job)
            if job.ask:
                ask, job.ask = job.ask, 0
                self._ask_upstream(job.sub, ask)

    async def _wait_for(self, job: Job) -> None:
        try:
            job.result = await anyio.to_thread.run_sync(
                job.future.result, abandon_on_cancel=True, limiter=self._limiter()
            )
        except Exception as exc:
            job.error = exc
        job.done = True
        self.post(self._on_job_done)

    def _limiter(self) -> anyio.CapacityLimiter:
        # A thread per batch in flight waits for its result, outside anyio's default
        # pool so that many in flight do not starve other to_thread users.
        limiter = getattr(self, "_waiters", None)
        if limiter is None:
            limiter = self._waiters = anyio.CapacityLimiter(self.concurrency)
        return limiter

    def _on_job_done(self, _: Any, __: Any) -> None:
        """Take the results that are in, in the order the batches were sent."""
        sent = self._sent
        while sent and sent[0].done:
            job = sent.popleft()
            if job.error is not None:
                self.current = job.batch
                self.current_hook = "handle_events"
                raise job.error
            self._batch_handled(job.sub, job.result, 0, len(job.batch))
        self._send_more()
        if self._complete_when_drained and not sent and not self._waiting:
            self._complete_when_drained = False
            self._complete()


__all__ = ["RemoteBatches"]
