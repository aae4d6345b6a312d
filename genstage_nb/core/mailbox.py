"""A stage's mailbox: messages posted to it, served by its task or inline.

Stages talk only by posting messages to each other's mailbox: ``ask`` and ``cancel``
travel upstream, event lists and ends of stream travel downstream. A message is a
``(handler, a, b)`` triple appended to a deque; the owner task serves its mailbox
without awaiting between messages unless a hook is ``async``, and parks on an event
only when the mailbox is empty. While it is parked, a message is served at once in the
sender's task (the sync fast path: no task switch), up to a few messages and a few
levels deep. So a batch costs a couple of function calls, not a task switch per event.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint

from . import messages
from .roles import Role
from .timing import SLICE, clock

if TYPE_CHECKING:
    from .subscription import Subscription

#: Messages served in a row before the task lets others run.
FAIRNESS = 256
# Messages one stage serves inline in another stage's task before waking its own.
_INLINE_BATCH = 64
# How deep inline serving may nest (stage A serving B serving C ...).
_MAX_DEPTH = 8


class _Reply:
    __slots__ = ("event", "value", "error")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Mailbox(Role):
    """The mailbox role of ``Process``: posting, serving inline, the serving loop.

    State (``_init_mailbox``): ``mailbox``, ``_wakeup``, ``_parked``,
    ``inline``, ``_resume`` (an async hook handed to the task), ``_inline_error``.
    """

    mailbox: deque
    _wakeup: anyio.Event | None
    _parked: bool
    inline: bool
    _resume: Any
    _inline_error: BaseException | None

    def _init_mailbox(self) -> None:
        """The mailbox's state, empty."""
        self.mailbox = deque()
        self._wakeup = None
        # The sync fast path (see post): set while the task waits for messages.
        self._parked = False
        self.inline = True  # (a ConcurrentConsumer too)
        self._resume = None
        self._inline_error = None

    def _take_messages(self, kinds: tuple[str, ...]) -> list:
        """Remove and return the messages of these kinds (``messages.py``), in order;
        other mail stays."""
        taken: list = []
        kept: list = []
        for message in self.mailbox:
            (taken if messages.kind_of(message) in kinds else kept).append(message)
        self.mailbox.clear()
        self.mailbox.extend(kept)
        return taken

    def _take_mail_input(self) -> list:
        """Remove and return the events waiting in the mailbox (other mail stays)."""
        received: list = []
        for message in self._take_messages((messages.EVENTS_IN, messages.BATCHES_IN)):
            received.extend(messages.events_in(message))
        return received

    def post(self, handler: Any, a: Any = None, b: Any = None) -> None:
        if self.stopped:
            self._dead_letter(handler, a, b)
            return
        self.mailbox.append((handler, a, b))
        if self._parked:
            self._take_mail()

    def _take_mail(self) -> None:
        """Mail for this parked stage: serve it in the sender's task, or wake the task."""
        supervisor = self.supervisor
        if self.inline and supervisor.depth < _MAX_DEPTH:
            # The sync fast path: serve the message right here, in the sender's task,
            # instead of waking this stage's task (a task switch per batch).
            supervisor.depth += 1
            try:
                self._serve_inline()
            finally:
                supervisor.depth -= 1
        else:
            self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def _serve_inline(self) -> None:
        """Serve the mailbox synchronously while the stage's own task is parked.

        Stops at an async hook (its coroutine is handed to the stage's task), at an
        error (raised in the stage's task, where failures are handled) or after a few
        messages; then the stage's task is woken to carry on.
        """
        self._parked = False
        mailbox = self.mailbox
        served = 0
        try:
            while mailbox and not self.stopped:
                handler, a, b = mailbox.popleft()
                pending = handler(a, b)
                if self.finishing and not self.stopped:
                    self._check_finished()
                if pending is not None:
                    self._resume = pending
                    break
                served += 1
                if served == _INLINE_BATCH:
                    break
        except Exception as exc:
            self._inline_error = exc
        if self._resume is not None or self._inline_error is not None or self.stopped or mailbox:
            self._wake()
        else:
            self._parked = True

    def post_ask(self, sub: Subscription, n: int) -> None:
        self.post(self._on_ask, sub, n)

    def post_info(self, message: Any) -> None:
        self.post(self._on_info, message)

    async def call(self, request: Any) -> Any:
        if self.stopped:
            raise RuntimeError(f"stage {self.name!r} is not running (status {self.status!r})")
        reply = _Reply()
        self.post(self._on_call, request, reply)
        await reply.event.wait()
        if reply.error is not None:
            raise reply.error
        return reply.value

    async def _serve(self) -> None:
        mailbox = self.mailbox
        served = 0
        since = clock()
        while not self.stopped:
            if self._inline_error is not None:
                error, self._inline_error = self._inline_error, None
                raise error
            if self._resume is not None:
                pending, self._resume = self._resume, None
                await pending
                if self.finishing and not self.stopped:
                    self._check_finished()
            elif mailbox:
                handler, a, b = mailbox.popleft()
                pending = handler(a, b)
                if pending is not None:
                    await pending
                if self.finishing and not self.stopped:
                    self._check_finished()
                served += 1
                if served == FAIRNESS or not served & 15 and clock() - since > SLICE:
                    # Its turn is up (messages, or time: a few ms whatever the hooks do).
                    served = 0
                    await checkpoint()
                    since = clock()
            else:
                wakeup = self._wakeup = anyio.Event()
                self._parked = True
                try:
                    await wakeup.wait()
                finally:
                    self._parked = False
                since = clock()


__all__ = ["FAIRNESS", "Mailbox"]
