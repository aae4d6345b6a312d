"""The fused path: one loop drives a chain of stages while the chain has nothing else to do.

A producer whose events flow down single-consumer links (a ``DemandDispatcher`` with one
consumer, automatic demand) through producer-consumers to a consumer, every stage served
inline, need not send a message per list: :func:`pump` hands each list straight to the
next stage's ``handle_events`` and takes the asks straight back, round after round. The
hooks run in the same order, with the same lists, demand and counters as the messages
would give them (``DemandState``'s batch rule and the dispatcher's counters are applied
as the messages would apply them); only the mailboxes are skipped. That is what makes
short lists cheap: at ``max_demand`` 1 every event is a round trip through the chain.

While it pumps, the chain's stages are marked busy (not parked), so whatever a hook posts
to one of them waits in its mailbox. A round goes the ordinary way -- real messages from
the point where it stands -- as soon as anything else is afoot: a message waiting in a
stage's mailbox, a list the consumer must split, events a stage has no demand for, an
async hook, a failure. The loop then ends with that round, and so it does after
``_FAIRNESS`` rounds (the task yields) or when the producer has mail or is finishing; its
pending ask goes to the producer's mailbox as the message it would have been, and the
next ask may start the loop again.
"""

from __future__ import annotations

from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from anyio.lowlevel import checkpoint

from .dispatchers import DemandDispatcher
from .process import _FAIRNESS, _MAX_DEPTH, as_events

if TYPE_CHECKING:
    from .process import Process

#: Switch for the fused path (tests turn it off to compare both paths).
enabled = True

# A level: (subscription, consumer process, its DemandState, its counters, its
# handle_events, its out-dispatcher's one entry [demand, subscription] and the
# dispatcher (None at the end of the chain), its mailbox).
_Level = tuple


#: What ``chain`` returns when the chain could be driven but a stage is busy now.
BUSY: list = []


def chain(producer: Process) -> list[_Level] | None:
    """The levels ``producer`` can drive in one loop right now; ``BUSY`` if it could
    but a stage of the chain is at work (or has mail); None if it cannot."""
    levels: list[_Level] = []
    proc = producer
    busy = False
    while True:
        consumers = proc.consumers
        dispatcher = proc.dispatcher
        if (
            len(consumers) != 1
            or dispatcher.__class__ is not DemandDispatcher
            or dispatcher._pending
            or dispatcher._shuffle
            or dispatcher._max is None
            or len(proc.buffer)
        ):
            return None
        (sub,) = consumers
        to = sub._to
        if (
            to is None
            or to.stopped
            or not to.inline
            or to.executor is not None
            or to._rest is not None
            or sub._demand.manual
            or sub not in to.producers
            or len(levels) == _MAX_LEVELS
        ):
            return None
        if not to._parked or to._wakeup is None or to.mailbox or to._resume is not None:
            busy = True
        if levels:
            levels[-1] = (*levels[-1][:5], dispatcher._demands[0], dispatcher, proc.mailbox)
        levels.append(
            (sub, to, sub._demand, to.counters, to.stage.handle_events, None, None, to.mailbox)
        )
        if not to.pc:
            return BUSY if busy else levels
        if to.pc_queue or to.finishing:
            return None
        proc = to


_MAX_LEVELS = 32


def pump(producer: Process, demand: int, levels: list[_Level]) -> Any:
    """Serve ``demand``, new demand for ``producer``, and the asks that come back up the
    chain, round after round. Returns what ``Process._on_demand`` returns: None, or an
    awaitable for the producer's task.

    The counters of the chain are kept in a few sums per level and added to the stages'
    ``Counters`` when the loop ends (nothing reads them before: the metrics sampler is
    a task of its own, and it runs when this loop has yielded).
    """
    for level in levels:
        level[1]._parked = False  # busy: posts to it wait in its mailbox
    handle_demand = producer.stage.handle_demand
    dispatcher = producer.dispatcher
    entry = dispatcher._demands[0]
    mailbox = producer.mailbox
    k = len(levels)
    asks = [0] * k  # the ask each level makes after its batch of this round
    # Sums per level: events sent to it, batches it took, demand it asked (and of that,
    # what went up as a message rather than straight), events it did not handle here.
    sent = [0] * k
    count = [0] * k
    asked = [0] * k
    posted = [0] * k
    unhandled = [0] * k
    rounds = 0
    fairness = _FAIRNESS
    try:
        while True:
            at = producer  # whose hook runs (the watchdog reads it: blocking_stage)
            try:
                events = handle_demand(demand)
            except BaseException:
                producer.current_hook = "handle_demand"
                producer._demand_in_hand = demand
                raise
            if events.__class__ is not list:
                _release(levels, 0)
                producer.current_hook = "handle_demand"
                producer._demand_in_hand = demand
                if events is not None and isawaitable(events):
                    return producer._handle_demand_async(events)
                producer._demand_handled(events)
                return None
            n = len(events)
            if not n:
                return None
            if n > entry[0]:
                _release(levels, 0)
                producer.counters.made += n
                producer._dispatch(events)
                return None
            entry[0] -= n

            # Down the chain: level i takes ``events`` (``n`` of them).
            i = 0
            while True:
                sub, to, ds, _, handle, out, _, inbox = levels[i]
                sent[i] += n
                max_demand = ds.max_demand
                min_demand = ds.min_demand
                pending = ds.pending
                if (
                    inbox
                    or n > pending
                    or n > max_demand - min_demand
                    or (out is not None and to.pc_demand <= 0)
                ):
                    # Not the simple case: the ordinary message from here on.
                    unhandled[i] += n
                    _release(levels, i)
                    to.post(to._on_events, sub, events)
                    return _unwind_slow(levels, i - 1, asks)
                count[i] += 1
                left = pending - n
                if left <= min_demand:
                    asks[i] = ask = max_demand - left
                    ds.pending = max_demand
                else:
                    asks[i] = ask = 0
                    ds.pending = left
                at = to  # noqa: F841  (read by the watchdog)
                try:
                    result = handle(events)
                    if result.__class__ is not list:
                        if result is not None and isawaitable(result):
                            unhandled[i] += n
                            count[i] -= 1
                            _release(levels, i + 1)
                            batches = [(events, ask)]
                            to.current = events
                            to.current_hook = "handle_events"
                            to._rest = (batches, 0)
                            to._resume = to._consume_async(sub, batches, (0, result))
                            to._wake()
                            return _unwind_slow(levels, i - 1, asks)
                        if out is not None:
                            result = as_events(to.name, "handle_events", result)
                except Exception as exc:
                    unhandled[i] += n
                    count[i] -= 1
                    _release(levels, i + 1)
                    to.current = events
                    to.current_hook = "handle_events"
                    to._batch_failed(sub, [(events, ask)], 0)
                    to._inline_error = exc
                    to._wake()
                    return _unwind_slow(levels, i - 1, asks)
                if out is None:
                    break  # the consumer at the end
                m = len(result)
                if not m:
                    break
                if m > out[0]:
                    # More than the next stage asked for: the dispatcher keeps the rest.
                    _release(levels, i + 1)
                    to.counters.made += m
                    to._dispatch(result)
                    return _unwind_slow(levels, i, asks)
                out[0] -= m
                pc_demand = to.pc_demand
                to.pc_demand = pc_demand - m if pc_demand > m else 0
                events = result
                n = m
                i += 1

            # Back up: each level's ask goes to the level above.
            held = 0
            while i >= 0:
                _, to, _, _, _, out, d, inbox = levels[i]
                if inbox:
                    if held:
                        inbox.append((to._on_ask, levels[i + 1][0], held))
                        posted[i + 1] += held
                    _release(levels, i + 1)
                    return _unwind_slow(levels, i, asks, to)
                if held:
                    # The ask of the level below, as _on_ask and _on_demand take it.
                    if held > d._max:
                        d._max = held
                    out[0] += held
                    to.pc_demand += held
                held = asks[i]
                if held:
                    asked[i] += held
                i -= 1

            if not held:
                return None
            rounds += 1
            if mailbox or producer.finishing or rounds == fairness:
                mailbox.append((producer._on_ask, levels[0][0], held))
                posted[0] += held
                return checkpoint() if rounds == fairness else None
            if held > dispatcher._max:
                dispatcher._max = held
            entry[0] += held
            demand = held
    finally:
        _release(levels, 0)
        _flush(producer, levels, sent, count, asked, posted, unhandled)


def _flush(
    producer: Process,
    levels: list[_Level],
    sent: list[int],
    count: list[int],
    asked: list[int],
    posted: list[int],
    unhandled: list[int],
) -> None:
    """Add the loop's sums to the counters, as the messages would have counted."""
    upstream = producer.counters
    for i, level in enumerate(levels):
        counters = level[3]
        n = sent[i]
        upstream.made += n
        upstream.accepted += n
        upstream.events_out += n
        upstream.demand_in += asked[i] - posted[i]
        counters.events_in += n
        counters.handled += n - unhandled[i]
        counters.batches += count[i]
        counters.demand_out += asked[i]
        upstream = counters


def _release(levels: list[_Level], start: int) -> None:
    """Park the stages from level ``start`` down again (idle, their tasks waiting)."""
    for level in levels[start:]:
        _park(level[1])


def _park(proc: Process) -> None:
    """Park a stage the pump marked busy, and serve what was posted to it meanwhile, as
    ``Process.post`` would have. A stage woken meanwhile is left to its task."""
    if proc._wakeup is None or proc._parked:
        return
    proc._parked = True
    if proc.mailbox:
        supervisor = proc.supervisor
        if supervisor.depth < _MAX_DEPTH:
            supervisor.depth += 1
            try:
                proc._serve_inline()
            finally:
                supervisor.depth -= 1
        else:
            proc._wake()


def _unwind_slow(levels: list[_Level], i: int, asks: list[int], serving: Any = None) -> None:
    """Finish the round the ordinary way from level ``i`` up: each level posts its ask
    (it waits in the mailbox above) and serves its own mailbox. ``serving`` has made its
    ask already and has mail to serve."""
    if serving is not None:
        if asks[i]:
            serving._ask_upstream(levels[i][0], asks[i])
        _park(serving)
        i -= 1
    while i >= 0:
        sub, to, *_ = levels[i]
        if asks[i]:
            to._ask_upstream(sub, asks[i])
        _park(to)
        i -= 1
    return None
