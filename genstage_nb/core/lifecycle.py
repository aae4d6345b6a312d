"""A stage's failures, restarts and end, and the messages from outside.

``Process.main`` (the task of one stage for one run) calls on this role when a hook
fails: the failure is recorded (the batch in hand and, if the stage fails for good,
every event it still holds), and the stage restarts within its intensity
(``max_restarts`` in ``max_seconds``, OTP's rule) or the pipeline is told. Termination
tells every linked stage why and accounts for every event left; a message for a stage
that has stopped is answered as such. Messages from outside (``send``/``call``, a stop
request) are served here too.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import traceback
from collections import deque
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, overload

import anyio

from . import messages
from .counters import as_events
from .errors import Failure
from .roles import Role
from .stage import Stage

if TYPE_CHECKING:
    from .mailbox import _Reply

log = logging.getLogger("genstage_nb")


class Lifecycle(Role):
    """The lifecycle role of ``Process``: the task, failures, restarts, the end."""

    # Its state (set by _init_lifecycle):
    stopped: bool
    stop_reason: Any
    current: list
    current_hook: str
    retry: Any
    _attempts: list
    _final_failure: Failure | None

    def _init_lifecycle(self, stage: Any) -> None:
        """Not stopped; no hook at work; the stage's retry policy."""
        self.stopped = False
        self.stop_reason = None
        self.current = []  # the events of the hook at work
        self.current_hook = ""
        self.retry = getattr(stage, "retry", None)
        self._attempts = []  # exceptions of a retried call that failed for good
        self._final_failure = None

    def _may_restart(self, restarts: deque[float]) -> bool:
        stage = self.stage
        if stage.restart == "temporary" or self.stopped:
            return False
        now = time.monotonic()
        while restarts and now - restarts[0] > stage.max_seconds:
            restarts.popleft()
        if len(restarts) >= stage.max_restarts:
            return False
        restarts.append(now)
        return True

    def _record_failure(
        self,
        exc: BaseException,
        restarted: bool,
        unhandled: list | None = None,
        paused: bool = False,
    ) -> Failure:
        self.counters.failed += len(self.current)
        attempts, self._attempts = self._attempts, []
        failure = Failure(
            self.name,
            exc,
            list(self.current),
            hook=self.current_hook,
            restarted=restarted,
            unhandled=unhandled or [],
            attempts=attempts,
            paused=paused,
        )
        self.current = []
        if not restarted and not paused:
            self._final_failure = failure
        self.supervisor._record_failure(self.process, failure)
        if paused:
            then = f" (paused: fix it, then resume({self.name!r}) or skip({self.name!r}))"
        else:
            then = " (restarting)" if restarted else ""
        log.error(
            "stage %r failed in %s%s:\n%s",
            self.name,
            failure.hook or "a hook",
            then,
            user_traceback(exc),
            extra={"genstage_nb_paused": paused},  # (the notebook shows pauses itself)
        )
        return failure

    def _take_unhandled(self) -> list:
        """Remove and return every event this stage holds but will never handle or send
        (input first, then output), counting them."""
        received = self._take_jobs_input() + self._take_mail_input() + self._take_queued()
        made = self._take_made() + self._take_held()
        self.counters.unhandled_in += len(received)
        self.counters.unhandled_out += len(made)
        return received + made

    def _terminate(self, reason: Any) -> None:
        """Stop serving and tell every linked stage why."""
        if self.stopped:
            return
        self.stopped = True
        self.stop_reason = reason
        for sub in list(self.consumers):
            sub._to.post(sub._to._on_cancel, sub, reason)
        self.consumers.clear()
        for sub in list(self.producers):
            sub._from.post(sub._from._on_cancel_up, sub, reason)
        self.producers.clear()
        # Events still held will never be handled or sent: counted, and logged.
        left = self._take_unhandled()
        if left:
            log.warning("stage %r stopped with %d events unhandled", self.name, len(left))
        # Subscriptions and calls that came too late are answered as for a stopped stage.
        late = list(self.mailbox)
        self.mailbox.clear()
        for handler, a, b in late:
            self._dead_letter(handler, a, b)

    def _dead_letter(self, handler: Any, a: Any, b: Any) -> None:
        """A message for a stage that has stopped."""
        kind = messages.kind_of((handler, a, b))
        if kind == messages.SUBSCRIBE:
            # A consumer subscribed to a stage that has already ended.
            sub = a
            sub._to.post(sub._to._on_cancel, sub, self.stop_reason)
        elif kind in (messages.EVENTS_IN, messages.BATCHES_IN):
            # Sent before the producer learnt that this stage stopped.
            events = messages.events_in((handler, a, b))
            self.counters.unhandled_in += len(events)
            if self._final_failure is not None:
                self._final_failure.unhandled.extend(events)
            else:
                log.warning(
                    "stage %r has stopped; %d events sent to it were not handled",
                    self.name,
                    len(events),
                )
        elif kind == messages.EVENT_FAILED:
            self._event_failed_late(a, *b)  # failed as the stage ended
        elif kind == messages.EVENT_DONE:
            self._count_late_event(a)  # handled as the stage ended
        elif kind == messages.CALL:
            b.error = RuntimeError(f"stage {self.name!r} stopped before answering the call")
            b.event.set()

    async def _retry_call(self, call: Any, arg: Any, exc: Exception) -> Any:
        """``call(arg)`` failed with ``exc``: make it again as ``retry=`` says (after a
        backoff, with the stage's current code); return its result, or raise the last
        exception, every attempt's kept for the failure record."""
        retry = self.retry
        errors: list = [exc]
        while len(errors) < retry.attempts:
            await anyio.sleep(retry.wait(len(errors)))
            self.counters.retried += 1
            try:
                result = call()(arg)
                if result is not None and result.__class__ is not list and isawaitable(result):
                    result = await result
                return result
            except Exception as again:
                errors.append(again)
                if not retry.retries(again):
                    break
        self._attempts = errors
        raise errors[-1]

    async def _hook(self, fn: Any, *args: Any) -> Any:
        result = fn(*args)
        if result is not None and result.__class__ is not list and isawaitable(result):
            result = await result
        return result

    async def _retried_hook(self, name: str, *args: Any) -> Any:
        """Call the stage's hook ``name`` (as ``_hook``), made again as ``retry=`` says
        when it raises one of its exceptions."""
        try:
            return await self._hook(getattr(self.stage, name), *args)
        except Exception as exc:
            if self.retry is None or not self.retry.retries(exc):
                raise
            hook = lambda: lambda packed: getattr(self.stage, name)(*packed)  # noqa: E731
            return await self._retry_call(hook, args, exc)

    async def _on_info(self, message: Any, _: Any) -> None:
        self.current_hook = "handle_info"
        try:
            result = await self._retried_hook("handle_info", message)
        except Exception:
            self._keep_redo(lambda: self._on_info(message, None))  # skip: drop the message
            raise
        if self.producing:
            # GenStage's {:noreply, events, state}: events sent like handle_demand's
            # (within demand, the rest buffered); a consumer's return value is ignored.
            events = as_events(self.name, "handle_info", result)
            if events:
                self.counters.made += len(events)
                self._dispatch(events)
        self.current_hook = ""

    async def _on_call(self, request: Any, reply: _Reply) -> None:
        handle_call = self.stage.handle_call
        self.current_hook = "handle_call"
        try:
            if getattr(handle_call, "__func__", None) is Stage.handle_call:
                reply.error = NotImplementedError(
                    f"stage {self.name!r} does not define handle_call"
                )
                return
            reply.value = await self._hook(handle_call, request)
        except Exception as exc:
            reply.error = exc  # the caller has its answer: resume and skip go on
            self._keep_redo(None)
            raise
        finally:
            self.current_hook = ""
            reply.event.set()

    def request_stop(self) -> None:
        """Pipeline.stop: a producer stops making events and finishes; a paused stage
        ends at once, as failed for good (its events accounted for)."""
        if self.paused is not None:
            self._unpause("stop")
            return
        self.post(self._on_stop_request)

    async def _on_stop_request(self, _: Any, __: Any) -> None:
        if self.kind == "producer":
            self._stop_making()
        elif not self.producers:
            self._complete()


#: Modules whose frames lead up to a hook (the runtime, and the executors and event
#: loops it calls the hook through): left out of a failure's logged traceback.
_RUNNER_MODULES = (
    "genstage_nb.core",
    "anyio",
    "concurrent",
    "asyncio",
    "trio",
    "outcome",
    "distributed",
)


def user_traceback(exc: BaseException) -> str:
    """The traceback of a hook's exception from the user's code on: the runtime's own
    frames above the hook are left out (the exception itself keeps them all)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if not module.startswith(_RUNNER_MODULES):
            break
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines).rstrip()


def discard_unstarted(coro: Any) -> None:
    """Close a coroutine that will never run, and the hook coroutines it was given,
    without running any of their code (and without 'never awaited' warnings)."""
    frame = getattr(coro, "cr_frame", None)
    if frame is not None:
        for value in frame.f_locals.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if inspect.iscoroutine(item):
                    discard_unstarted(item)  # it may hold hook coroutines of its own
    if inspect.iscoroutine(coro) and coro.cr_frame is not None:
        _close_unstarted(coro)


def _close_unstarted(coro: Any) -> None:
    # Throwing into a coroutine that never started raises at its first line, so none
    # of its body runs; a plain close() would warn that it was never awaited.
    with contextlib.suppress(BaseException):  # GeneratorExit, or whatever it raised
        coro.throw(GeneratorExit)
    coro.close()


@overload
def first_leaf(error: Exception) -> Exception: ...
@overload
def first_leaf(error: BaseException) -> BaseException: ...
def first_leaf(error: BaseException) -> BaseException:
    """The first exception of a (nested) group, or ``error`` itself (the leaves of an
    ``ExceptionGroup`` are ``Exception``s)."""
    exc = error
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


__all__ = ["Lifecycle", "discard_unstarted", "first_leaf", "user_traceback"]
