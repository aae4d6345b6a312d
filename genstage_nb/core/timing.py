"""Where a stage's time goes: busy, back-pressured or idle (Flink's three times).

- **busy**: in its hooks (running, or awaiting inside an async hook; for work in flight
  on an executor or in worker tasks, while any is in flight);
- **back-pressured**: it could make or pass on events, but its consumers gave no demand
  (a producer with no demand outstanding, a producer-consumer with none from
  downstream);
- **idle**: waiting for events (or for outside input) with demand outstanding.

The rest of the time, if any, it waited for its turn on the event loop while another
stage's hook ran; so the three add up to at most the time that passed.

The runtime reads the clock when a hook starts and when it ends (per batch, never per
event) and when a producer-consumer's downstream demand comes back; between hooks the
stage is back-pressured or idle by its demand. A chain run by the fused loop
(``pump.py``) times the first round of one loop in 64 and counts it for the rounds
since the last timed one: a stage is busy in its own hook, back-pressured while a stage
after it works (it waits for demand), idle while a stage before it works (it waits for
events).
"""

from __future__ import annotations

from time import perf_counter as clock

BUSY, BACKPRESSURED, IDLE = 0, 1, 2


def _clock_read() -> float:
    """Seconds one clock read takes here (the least of a few tries: a try the system
    interrupted reads long)."""
    best = float("inf")
    for _ in range(5):
        start = clock()
        for _ in range(40):
            clock()
        best = min(best, (clock() - start) / 41)
    return best


#: What a clock read costs on this machine, measured at import.
CLOCK_READ = _clock_read()

#: Seconds a loop of the runtime that makes hook calls (the mailbox, jobs, events, the
#: fused loop) runs at most before it lets the event loop run its other tasks, whatever
#: the hooks do: as long as 50,000 clock reads take here (5 ms where a read costs 100 ns,
#: as on the machines we measure on). Counted in clock reads, not seconds, so that where
#: everything runs slower (under a profiler, or valgrind's 25x slower clock reads) a turn
#: holds as much work as it does at full speed, and the count of instructions per event
#: is the one of a real run.
SLICE = max(0.002, 50_000 * CLOCK_READ)


class StageTime:
    """A stage's cumulative busy / back-pressured / idle seconds, and the open segment."""

    __slots__ = ("backpressured", "busy", "idle", "mode", "since")

    def __init__(self) -> None:
        self.busy = 0.0
        self.backpressured = 0.0
        self.idle = 0.0
        self.mode = IDLE
        self.since = clock()

    def enter(self, now: float) -> None:
        """A hook starts: the rest segment before it ends."""
        mode = self.mode
        if mode == BACKPRESSURED:
            self.backpressured += now - self.since
        elif mode == IDLE:
            self.idle += now - self.since
        else:
            return  # already busy (work in flight): the busy segment goes on
        self.since = now
        self.mode = BUSY

    def leave(self, now: float, rest: int) -> None:
        """A hook ended: the busy segment ends, the stage rests in ``rest``."""
        if self.mode == BUSY:
            self.busy += now - self.since
        self.since = now
        self.mode = rest

    def rest_as(self, now: float, rest: int) -> None:
        """The stage rests in ``rest`` from now (its demand changed between hooks)."""
        if self.mode == BUSY or self.mode == rest:
            return
        self.enter(now)
        self.mode = rest

    def close(self, now: float) -> tuple[float, float, float]:
        """Count the open segment up to ``now`` (for a sample); the totals. (A fused
        loop's estimate may have moved ``since`` a little past ``now``: nothing then.)"""
        mode = self.mode
        elapsed = now - self.since
        if elapsed > 0:
            if mode == BUSY:
                self.busy += elapsed
            elif mode == BACKPRESSURED:
                self.backpressured += elapsed
            else:
                self.idle += elapsed
            self.since = now
        return self.busy, self.backpressured, self.idle

    def estimate(self, busy: float, bp: float, idle: float, rest: int) -> None:
        """Time the fused loop estimates this stage spent (one timed round, weighted
        for the rounds not timed). The rest segment is moved on past it, so that the
        same time is not counted twice; the stage rests in ``rest`` after it."""
        self.busy += busy
        self.backpressured += bp
        self.idle += idle
        if self.mode != BUSY:  # (an async hook the loop handed over runs on)
            self.since += busy + bp + idle
            self.mode = rest


def rest_mode(proc: object) -> int:
    """How a stage rests between hooks: back-pressured without demand from downstream."""
    if proc.pc:  # type: ignore[attr-defined]
        return BACKPRESSURED if proc.pc_demand <= 0 else IDLE  # type: ignore[attr-defined]
    if proc.producing:  # type: ignore[attr-defined]
        return BACKPRESSURED if not proc._ready() else IDLE  # type: ignore[attr-defined]
    return IDLE


__all__ = ["BACKPRESSURED", "BUSY", "IDLE", "StageTime", "clock", "rest_mode"]
