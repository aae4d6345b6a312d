"""The fused path: one loop drives a chain of stages while the chain has nothing else to do.

A producer whose events flow down single-consumer links (a ``DemandDispatcher`` with one
consumer, automatic demand) through producer-consumers to a consumer, every stage served
inline, need not send a message per list: :func:`pump` hands each list straight to the
next stage's ``handle_events`` and takes the asks straight back, round after round. Each
step is what its message would do (``DemandState``'s batch rule, the dispatcher's demand
counter, the stages' counters), in the order the messages would do it; only the
mailboxes are skipped. That is what makes short lists cheap: at ``max_demand`` 1 every
event is a round trip through the chain. (``tests/test_fused.py`` runs random chains
both ways and compares.)

While it pumps, the chain's stages are marked busy (not parked), so whatever a hook posts
to one of them waits in its mailbox. A round goes the ordinary way -- real messages from
the point where it stands -- as soon as anything else is afoot: a message waiting in a
stage's mailbox, a list the consumer must split, events a stage has no demand for, an
async hook, a failure. The loop then ends with that round, and so it does after
``FAIRNESS`` rounds (the task yields) or when the producer has mail or is finishing; its
pending ask goes to the producer's mailbox as the message it would have been, and the
next ask may start the loop again.
"""

from __future__ import annotations

import linecache
import re
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from anyio.lowlevel import checkpoint

from .counters import ON_THE_LOOP, as_events
from .dispatchers import DemandDispatcher
from .mailbox import FAIRNESS
from .timing import CLOCK_READ, SLICE, clock, rest_mode

assert FAIRNESS % 16 == 0  # the loop yields at a multiple of 16 rounds

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
            or to.jobs  # work in flight: on an executor, or calls on the loop
            or to.concurrent  # a ConcurrentConsumer: an event at a time, in its workers
            or not to.fits_loop  # an option the loop does not handle (options.py)
            or to._rest is not None
            or sub._demand.manual
            or sub._demand.realign is not None  # (the loop knows GenStage's rule only)
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


_MAX_LEVELS = 16  # the loop is written out per level (see _loop)


def pump(producer: Process, demand: int, levels: list[_Level]) -> Any:
    """Serve ``demand``, new demand for ``producer``, and the asks that come back up the
    chain, round after round. Returns what ``Process._on_demand`` returns: None, or an
    awaitable for the producer's task.

    The loop is written out for the chain's length (``_loop``): every level's state in
    local variables, no loop over levels. The counters of the chain are kept in sums
    per level and added to the stages' ``Counters`` when the loop ends (nothing reads
    them before: the metrics sampler is a task of its own, and runs once this loop has
    yielded).
    """
    loop = _LOOPS.get(len(levels))
    if loop is None:
        loop = _LOOPS[len(levels)] = _loop(len(levels))
    for level in levels:
        level[1]._parked = False  # busy: posts to it wait in its mailbox
    return loop(producer, demand, levels)


_LOOPS: dict[int, Any] = {}
#: The code of every loop made so far, with the lines where it calls a hook and the
#: local that holds that hook's stage (the watchdog finds the stage at work by them).
HOOK_LINES: dict[Any, dict[int, str]] = {}


def _loop(k: int) -> Any:
    """The pump loop for a chain of ``k`` levels: its source compiled under a name that
    tracebacks show (and in linecache, so they show its lines too)."""
    text = loop_source(k)
    filename = f"<genstage_nb fused loop of {k}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    namespace = {
        "__name__": __name__,  # a runtime frame, left out of logged tracebacks
        "_not_a_list": _not_a_list,
        "_receipt": _receipt,
        "_to_task": _to_task,
        "_dispatch": _dispatch,
        "_mail": _mail,
        "_release": _release,
        "_park": _park,
        "_timed": _timed,
        "as_events": as_events,
        "isawaitable": isawaitable,
        "checkpoint": checkpoint,
        "FAIRNESS": FAIRNESS,
        "SLICE": SLICE,
        "clock": clock,
    }
    exec(compile(text, filename, "exec"), namespace)  # noqa: S102  (our template, as dataclasses does)
    fn: Any = namespace[f"pump_{k}"]
    HOOK_LINES[fn.__code__] = _hook_lines(text)
    return fn


_CALL = re.compile(r"= handle(_demand|\d+)\(")


def _hook_lines(text: str) -> dict[int, str]:
    """The lines of a loop's source that call a hook, and the local naming its stage."""
    lines = {}
    for number, line in enumerate(text.splitlines(), 1):
        call = _CALL.search(line)
        if call:
            level = call.group(1)
            lines[number] = "producer" if level == "_demand" else f"to{level}"
    return lines


def loop_source(k: int) -> str:
    """The source of the pump loop for a chain of ``k`` levels (links), written out
    level by level: locals per level, no loop over levels. The first round of one loop
    in 64 is a timed copy of the round (a clock read after each hook: see ``timing.py``).
    docs/architecture.md shows it for a three-stage chain (``k=2``)."""
    r = range(k)
    sums = ", ".join(f"c{j}, sent{j}, count{j}, asked{j}, posted{j}, unhandled{j}" for j in r)
    src = [
        f"def pump_{k}(producer, demand, levels):",
        "    ({},) = levels".format(", ".join(f"L{j}" for j in r)),
    ]
    for j in r:
        src.append(f"    sub{j}, to{j}, ds{j}, c{j}, handle{j}, out{j}, d{j}, inbox{j} = L{j}")
        src.append(f"    sent{j} = count{j} = asked{j} = posted{j} = unhandled{j} = 0")
    src += [
        "    handle_demand = producer.stage.handle_demand",
        "    dispatcher = producer.dispatcher",
        "    entry = dispatcher._demands[0]",
        "    dmax = dispatcher._max",
        *(f"    dmax{j} = d{j}._max" for j in range(k - 1)),
        "    mailbox = producer.mailbox",
        "    rounds = 0",
        "    on_ask = producer._on_ask",
        "    producer._until_timed -= 1",
        "    began = 0.0  # (the turn counts from the first look at the clock)",
        "    try:",
        "        if producer._until_timed < 0:  # the first round of some loops: timed",
        "            began = clock()",
        *_round(k, "            ", timed=True),
        "        while True:",
        *_round(k, "            ", timed=False),
        "    finally:",
        # (kept short: Python copies a finally block to every return inside its try)
        *(f"        _park(to{j})" for j in r),
        f"        count_{k}(producer, {sums})",
        "",
        # The loop's sums go to the counters, as the messages would have counted them.
        f"def count_{k}(producer, {sums}):",
        "    producer._untimed += count0  # rounds the next timed round stands for",
        "    c = producer.counters",
    ]
    for j in r:  # (the counters' rules: counters.ON_THE_LOOP)
        for side in ("out", "in"):
            if side == "in":
                src.append(f"    c = c{j}")
            src += [
                f"    c.{name} += {sum_.format(j=j)}"
                for name, (at, sum_) in ON_THE_LOOP.items()
                if at == side
            ]
    return "\n".join(src) + "\n"


def _ask(j: int) -> str:
    """The local holding level ``j``'s ask in a round: level 0's is the producer's next
    demand."""
    return "demand" if j == 0 else f"ask{j}"


def _round(k: int, base: str, timed: bool) -> list[str]:
    """One round of the loop: handle_demand, then each level's handle_events. Level
    ``j`` takes the list ``e{j}`` of ``n{j}`` events; a producer-consumer's result is the
    next level's ``e{j+1}``."""
    lines: list[str] = []

    def put(pad: str, *text: str) -> None:
        lines.extend(pad + line for line in text)

    def lap(pad: str, i: int) -> None:
        if timed:  # the time since the last read goes to the hook that just ran
            put(pad, "now = clock()", f"took{i} = now - t", "t = now")

    if timed:  # (a level the round does not reach took no time)
        put(base, "{} = 0.0".format(" = ".join(f"took{i}" for i in range(k + 1))), "t = clock()")
    put(
        base,
        "try:",
        "    e0 = handle_demand(demand)",  # (the watchdog knows this line: HOOK_LINES)
        "except BaseException:",
        "    producer.current_hook = 'handle_demand'",
        "    producer._demand_in_hand = demand",
        "    raise",
    )
    lap(base, 0)
    put(
        base,
        "if e0.__class__ is not list:",
        "    return _not_a_list(producer, levels, demand, e0)",
        "n0 = len(e0)",
        "if not n0:",
        "    return None",
        "left = entry[0] - n0",
        "if left < 0:",
        "    _release(levels, 0)",
        "    producer.counters.made += n0",
        "    producer._dispatch(e0)",
        "    return None",
        "entry[0] = left",
    )

    def level(j: int, pad: str) -> None:
        asks = "({})".format("".join(f"{_ask(i)}, " for i in range(j)))
        asks_j = "({})".format("".join(f"{_ask(i)}, " for i in range(j + 1)))
        ask, below = _ask(j), _ask(j + 1)
        pc = j < k - 1
        e, n = f"e{j}", f"n{j}"
        out = f"e{j + 1}" if pc else "result"
        put(
            pad,
            f"sent{j} += {n}",
            f"max_demand = ds{j}.max_demand",
            f"min_demand = ds{j}.min_demand",
            f"pending = ds{j}.pending",
            f"if inbox{j} or {n} > pending or {n} > max_demand - min_demand"
            + (f" or to{j}.pc_demand <= 0:" if pc else ":"),
            f"    unhandled{j} += {n}",
            f"    return _receipt(levels, {j}, {e}, {asks})",
            f"count{j} += 1",
            f"left = pending - {n}",
            "if left <= min_demand:",
            f"    {ask} = max_demand - left",
            f"    ds{j}.pending = max_demand",
            f"    if ds{j}.realign is not None:  # (a tuner changed the link meanwhile)",
            f"        ds{j}._realigned()",
            "else:",
            f"    {ask} = 0",
            f"    ds{j}.pending = left",
            "try:",
            # (the watchdog knows this line: HOOK_LINES)
            f"    {out} = handle{j}({e})",
        )
        lap(pad + "    ", j + 1)
        slow = [
            f"        unhandled{j} += {n}",
            f"        count{j} -= 1",
            f"        return _to_task(levels, {j}, {e}, {ask}, {asks}, {out})",
        ]
        if pc:
            put(
                pad,
                f"    if {out}.__class__ is not list:",
                f"        if {out} is not None and isawaitable({out}):",
                *["    " + line for line in slow],
                f"        {out} = as_events(to{j}.name, 'handle_events', {out})",
            )
        else:  # (a consumer's result is not used)
            put(
                pad,
                f"    if {out} is not None and {out}.__class__ is not list and isawaitable({out}):",
                *slow,
            )
        put(
            pad,
            "except Exception as exc:",
            f"    unhandled{j} += {n}",
            f"    count{j} -= 1",
            f"    return _to_task(levels, {j}, {e}, {ask}, {asks}, error=exc)",
        )
        if pc:
            m = f"n{j + 1}"
            put(
                pad,
                f"{m} = len({out})",
                f"if {m}:",
                f"    left = out{j}[0] - {m}",
                "    if left < 0:",
                f"        return _dispatch(levels, {j}, {out}, {asks_j})",
                f"    out{j}[0] = left",
                f"    pc_demand = to{j}.pc_demand",
                f"    to{j}.pc_demand = pc_demand - {m} if pc_demand > {m} else 0",
            )
            level(j + 1, pad + "    ")
            # Back up: the ask of the level below, then this level's own.
            put(
                pad,
                "else:",
                f"    {below} = 0",
                f"if inbox{j}:",
                f"    if {below}:",
                f"        inbox{j}.append((to{j}._on_ask, sub{j + 1}, {below}))",
                f"        posted{j + 1} += {below}",
                f"    return _mail(levels, {j}, {asks_j})",
                f"if {below}:",
                f"    if {below} > dmax{j}:",
                f"        d{j}._max = dmax{j} = {below}",
                f"    out{j}[0] += {below}",
                f"    to{j}.pc_demand += {below}",
            )
        else:
            put(pad, f"if inbox{j}:", f"    return _mail(levels, {j}, {asks_j})")
        put(pad, f"if {ask}:", f"    asked{j} += {ask}")

    level(0, base)
    if timed:
        put(
            base,
            "_timed(producer, levels, ({},))".format(", ".join(f"took{i}" for i in range(k + 1))),
        )
    put(
        base,
        "if mailbox:",
        # Mail for the producer: the ask goes behind it. If the first message is an ask
        # of the chain's own consumer, the loop serves it as the mailbox would (at a
        # small max_demand two asks take turns through the mailbox).
        "    if demand:",
        "        mailbox.append((on_ask, sub0, demand))",
        "        posted0 += demand",
        "    message = mailbox[0]",
        "    if message[1] is not sub0 or message[0] != on_ask:",
        "        return None",
        "    mailbox.popleft()",
        "    demand = message[2]",
        "    posted0 -= demand",
        "elif not demand:",
        "    return None",
        "rounds += 1",
        # (FAIRNESS is a multiple of 16: the turn is looked at every 16 rounds)
        f"if producer.finishing or not rounds & 15 and (rounds == {FAIRNESS} or (now := clock())"
        " - (began := began or now) > SLICE):",
        "    mailbox.appendleft((on_ask, sub0, demand))  # (first: it was the first to wait)",
        "    posted0 += demand",
        "    return checkpoint() if not rounds & 15 else None",
        "if demand > dmax:",
        "    dispatcher._max = dmax = demand",
        "entry[0] += demand",
    )
    return lines


# The ordinary way, from wherever a round stands (the loop's exits).


def _not_a_list(producer: Process, levels: list[_Level], demand: int, events: Any) -> Any:
    """handle_demand returned something else than a list: as ``_handle_demand`` does."""
    _release(levels, 0)
    producer.current_hook = "handle_demand"
    producer._demand_in_hand = demand
    if events is not None and isawaitable(events):
        producer.time.enter(clock())  # busy while it awaits
        return producer._handle_demand_async(events)
    producer._demand_handled(events)
    return None


def _receipt(levels: list[_Level], j: int, events: list, asks: tuple) -> None:
    """Level ``j`` cannot take ``events`` the simple way: post them."""
    sub, to = levels[j][:2]
    _release(levels, j)
    to.post(to._on_events, sub, events)
    return _unwind_slow(levels, j - 1, asks)


def _to_task(
    levels: list[_Level],
    j: int,
    events: list,
    ask: int,
    asks: tuple,
    pending: Any = None,
    error: Exception | None = None,
) -> None:
    """Level ``j``'s handle_events is async (``pending``) or raised (``error``): its own
    task awaits it or handles the failure, as after a message served inline."""
    sub, to = levels[j][:2]
    _release(levels, j + 1)
    batches = [(events, ask)]
    to.current = events
    to.current_hook = "handle_events"
    if error is None:
        to._rest = (batches, 0)
        to.time.enter(clock())  # busy while it awaits
        to._resume = to._consume_async(sub, batches, (0, pending))
    else:
        to._batch_failed(sub, batches, 0)
        to._inline_error = error
    to._wake()
    return _unwind_slow(levels, j - 1, asks)


def _dispatch(levels: list[_Level], j: int, events: list, asks: tuple) -> None:
    """Level ``j`` made more than the next level asked for: its dispatcher keeps the
    rest."""
    to = levels[j][1]
    _release(levels, j + 1)
    to.counters.made += len(events)
    to._dispatch(events)
    return _unwind_slow(levels, j, asks)


def _mail(levels: list[_Level], j: int, asks: tuple) -> None:
    """Level ``j`` got mail during the round: it serves it after making its ask."""
    _release(levels, j + 1)
    return _unwind_slow(levels, j, asks, levels[j][1])


#: The first round of one loop in this many is timed while rounds are cheap (a loop runs
#: up to ``FAIRNESS`` rounds); every loop's first round once a round takes ``COSTLY``
#: seconds or more: the time of 400 clock reads, beside which a timed round's reads (two
#: per hook) are nothing. (Measured against the clock, not in seconds: where everything
#: runs slower, under a profiler or valgrind, the same rounds stay cheap.) A timed round
#: that leaves the loop early (for the messages) leaves the next loop to be timed. A loop
#: whose first round is not timed reads the clock first when it looks whether its turn
#: is up (round 16): no clock read per ask.
TIMED_EVERY = 64
COSTLY = 400 * CLOCK_READ


def _timed(producer: Process, levels: list[_Level], times: tuple) -> None:
    """A timed round: each stage busy in its own hook, back-pressured while a stage
    after it worked (it waited for demand), idle while a stage before it worked (it
    waited for events); it stands for the rounds since the last timed one
    (``timing.py``)."""
    total = sum(times)
    before = 0.0
    weight = max(producer._untimed, 1)  # the rounds since the last timed one
    producer._untimed = 0
    producer._until_timed = 0 if total >= COSTLY else TIMED_EVERY - 1
    stages = [producer, *(level[1] for level in levels)]
    for i, proc in enumerate(stages):
        own = times[i]
        proc.time.estimate(
            weight * own, weight * (total - before - own), weight * before, rest_mode(proc)
        )
        before += own


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
        proc._take_mail()


def _unwind_slow(levels: list[_Level], i: int, asks: tuple, serving: Any = None) -> None:
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
