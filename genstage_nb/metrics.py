"""Metrics: every stage's hot-path counters, sampled while a pipeline runs, as pandas.

The stages count with plain integer increments (``core.counters.Counters``); a sampler
task reads them every ``Pipeline(metrics_interval=...)`` seconds (default 0.25) into a
bounded store, plus one last sample when the pipeline stops. pandas is imported only
when a frame is asked for.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    import pandas as pd

from .core.statistics import StageStatistics

#: Samples kept per run: one hour at the default interval of 0.25 s. Older samples are
#: dropped first, so a long run keeps bounded memory (about 100 bytes per stage and
#: sample).
HISTORY = 14_400

#: The metrics of each sample, in the order of ``Metrics.frame`` (``throughput`` is
#: derived from ``events_in``/``events_out`` between samples).
METRICS = (
    "events_in",
    "events_out",
    "throughput",
    "buffer_size",
    "outstanding_demand",
    "dropped",
    "failed",
    "discarded",
    "late",
    "demand_in",
    "demand_out",
    "restarts",
    "retried",
    "busy",
    "backpressured",
    "idle",
)
#: The three shares of a stage's time over each interval (see ``core/timing.py``).
TIMES = ("busy", "backpressured", "idle")
_COUNTED = (
    "events_in",
    "events_out",
    "dropped",
    "failed",
    "discarded",
    "late",
    "demand_in",
    "demand_out",
    "restarts",
    "retried",
)
#: Extra counts in ``totals()`` and ``balance()``.
_BALANCE = ("made", "accepted", "handled", "unhandled_in", "unhandled_out")


#: Seconds over which events/s is measured, everywhere it is shown (the status table,
#: the explanation, the progress, the throughput panel): at least four samples.
RATE_WINDOW = 1.0


def rate_window(pipeline: Any) -> float:
    """The seconds events/s is measured over for ``pipeline``."""
    return max(RATE_WINDOW, 4 * (pipeline.metrics_interval or 0.0))


def rate_label(pipeline: Any) -> str:
    """How events/s is labelled wherever it is shown."""
    return f"events/s (last {rate_window(pipeline):g} s)"


def recent(pipeline: Any) -> dict[str, dict[str, float]] | None:
    """Stage name -> busy, backpressured, idle, throughput over the rate window (the
    last ``rate_window`` seconds of samples; None before two samples exist): the one
    events/s the status table, the explanation, the progress and the plots show."""
    samples = pipeline.metrics.samples
    if len(samples) < 2:
        return None
    t_last, last = samples[-1]
    span = rate_window(pipeline)
    first = next((s for s in samples[:-1] if t_last - s[0] <= span and t_last > s[0]), samples[-2])
    t_first, before = first
    dt = t_last - t_first
    if dt <= 0:
        return None
    stages: dict[str, dict[str, float]] = {}
    for name, now in last.items():
        old = before.get(name)
        if old is None:
            continue
        pairs = zip(now.times, old.times, strict=True)
        shares = [min(max((a - b) / dt, 0.0), 1.0) for a, b in pairs]
        total = sum(shares)
        if total > 1.0:
            shares = [x / total for x in shares]
        handled = "events_out" if now.kind == "producer" else "events_in"
        handled_now, handled_then = now.counts[handled], old.counts[handled]
        stages[name] = {
            "kind": now.kind,
            "busy": shares[0],
            "backpressured": shares[1],
            "idle": shares[2],
            "throughput": (handled_now - handled_then) / dt,
        }
    return stages or None


def _shares(times: tuple, before: tuple, span: float) -> tuple[float, float, float]:
    """The fractions of ``span`` a stage was busy, back-pressured and idle (at most 1 in
    all: the rest it waited for its turn on the event loop)."""
    shares = [min(max((a - b) / span, 0.0), 1.0) for a, b in zip(times, before, strict=True)]
    total = sum(shares)
    if total > 1.0:  # clock reads a hair apart
        shares = [share / total for share in shares]
    return shares[0], shares[1], shares[2]


def check_balance(pipeline: Any) -> pd.DataFrame:
    """Check that every event a pipeline's producers made is accounted for.

    Each event was consumed, is still buffered or queued, was dropped by a buffer
    overflow, discarded by a partition hash, or is recorded with a stage failure (see
    ``Metrics.balance``). Returns the balance frame; raises ``AssertionError`` naming
    each stage whose books do not balance.

    >>> import genstage_nb as gs
    >>> p = gs.Pipeline()
    >>> _ = p.link(p.add(gs.from_iterable(range(100))), p.add(gs.consumer(lambda e: None)))
    >>> p.run_sync()
    >>> bool(gs.check_balance(p)["balanced"].all())
    True
    """
    frame = pipeline.metrics.balance()
    bad = frame[~frame["balanced"]]
    if len(bad):
        raise AssertionError(
            "events unaccounted for in stage(s) "
            + ", ".join(f"{name!r}: {row.dropna().to_dict()}" for name, row in bad.iterrows())
        )
    sent, received = _links_balance(pipeline)
    if sent != received:
        raise AssertionError(
            f"the stages of this pipeline sent {sent} events and received {received}: "
            f"{abs(sent - received)} went to stages outside this run (a stage of an earlier "
            f"run, or one removed) or were counted twice"
        )
    return frame


def _links_balance(pipeline: Any) -> tuple[int, int]:
    """Events sent on every link, and events received from every link, summed over
    the stages of this run (and of streams that left it): every event sent reaches a
    stage of this run, so the two are equal."""
    sent = received = 0
    for stats in pipeline.statistics().values():
        sent += stats.counts["events_out"]
        received += stats.counts["events_in"]
    for counters in getattr(pipeline, "_departed", ()):
        sent += counters.events_out
        received += counters.events_in
    return sent, received


def frame_of(
    samples: list[tuple[float, dict[str, StageStatistics]]], interval: float | None, window: float
) -> pd.DataFrame:
    """``Metrics.frame`` of these samples (taken every ``interval`` seconds; throughput
    over ``window``): a function of the samples alone, so that a copy of them can be
    drawn in another thread."""
    import pandas as pd

    records: list[tuple[float, str, str, float]] = []
    # Throughput is taken over the rate window (the one events/s shown everywhere,
    # as ``recent`` takes it): from the oldest sample within it. The time
    # shares are per interval, over at least half of one (a sample right after
    # another, the last one at the end of a run, would give a meaningless spike).
    min_span = 0.5 * (interval or 0.0)
    previous: dict[str, tuple[float, tuple, tuple]] = {}
    opened: dict[str, deque[tuple[float, float]]] = {}
    for t, row in samples:
        for name, stats in row.items():
            values: dict[str, float] = {field: stats.counts[field] for field in _COUNTED}
            handled = values["events_out"] if stats.kind == "producer" else values["events_in"]
            seen = opened.setdefault(name, deque())
            seen.append((t, handled))
            while len(seen) > 1 and t - seen[0][0] > window:
                seen.popleft()  # (the window opens with the oldest sample within it)
            t0, h0 = seen[0]
            rate = (handled - h0) / (t - t0) if t > t0 else 0.0
            times = stats.times
            last = previous.get(name)
            if last is None:
                shares = (0.0, 0.0, 0.0)
                previous[name] = (t, times, shares)
            elif t - last[0] >= min_span and t > last[0]:
                shares = _shares(times, last[1], t - last[0])
                previous[name] = (t, times, shares)
            else:
                shares = last[2]
            values.update(zip(TIMES, shares, strict=True))
            values.update(
                throughput=rate,
                buffer_size=stats.buffered + stats.queued_input,
                outstanding_demand=stats.outstanding,
            )
            records.extend((t, name, metric, float(values[metric])) for metric in METRICS)
    return pd.DataFrame.from_records(records, columns=["time", "stage", "metric", "value"])


class Metrics:
    """What every stage of a pipeline did, over time (``Pipeline.metrics``).

    - ``frame()``: a tidy ``pandas.DataFrame`` with columns ``time`` (seconds since
      the run started), ``stage``, ``metric`` and ``value``; metrics are ``events_in``
      and ``events_out`` (cumulative), ``throughput`` (events handled per second over
      the rate window, ``rate_window``: ``events_out`` for producers, ``events_in`` for
      the others),
      ``buffer_size`` (events waiting in the stage), ``outstanding_demand`` (demand the
      stage has asked of its producers and not yet received), ``dropped`` (buffer
      overflow), ``failed`` (events in failed batches), ``discarded`` (partition hash
      ``None``, or sent to a stage that had stopped), ``demand_in``, ``demand_out``,
      ``restarts``, and ``busy``, ``backpressured`` and ``idle``: the fractions of the
      interval the stage spent in its hooks, held back by no demand from its consumers,
      and waiting for events with demand outstanding (at most 1 in all: see
      ``core/timing.py``).
    - ``totals()``: one row per stage with the latest counts.

    The last ``history`` samples are kept (default 14 400: an hour at 0.25 s).

    >>> import genstage_nb as gs
    >>> p = gs.Pipeline()
    >>> _ = p.link(p.add(gs.from_iterable(range(10)), name="src"),
    ...            p.add(gs.consumer(lambda e: None), name="sink"))
    >>> p.run_sync()
    >>> totals = p.metrics.totals()
    >>> int(totals.loc["src", "events_out"]), int(totals.loc["sink", "events_in"])
    (10, 10)
    >>> sorted(set(p.metrics.frame()["metric"]))[:4]
    ['backpressured', 'buffer_size', 'busy', 'demand_in']
    """

    def __init__(self, pipeline: Any, history: int = HISTORY) -> None:
        self._pipeline = pipeline
        self._samples: deque[tuple[float, dict[str, StageStatistics]]] = deque(maxlen=history)
        self._started = time.perf_counter()
        self.peaks: dict[str, dict[str, int]] = {}

    def reset(self) -> None:
        """Forget every sample; time 0 is now (a new run)."""
        self._samples.clear()
        self._started = time.perf_counter()
        self.peaks = {}

    def sample(self) -> None:
        """Take one sample of every stage's counters (and times) now."""
        now = time.perf_counter() - self._started
        row = self._pipeline.statistics()
        for name, stats in row.items():
            buffered = stats.buffered + stats.queued_input
            peak = self.peaks.setdefault(name, {"buffer_size": 0, "outstanding_demand": 0})
            if buffered > peak["buffer_size"]:
                peak["buffer_size"] = buffered
            if stats.outstanding > peak["outstanding_demand"]:
                peak["outstanding_demand"] = stats.outstanding
        self._samples.append((now, row))

    async def run(self, interval: float, ended: anyio.Event) -> None:
        """Sample every ``interval`` seconds until ``ended`` is set."""
        while not ended.is_set():
            with anyio.move_on_after(interval):
                await ended.wait()
            if not ended.is_set():
                self.sample()

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def samples(self) -> list[tuple[float, dict[str, StageStatistics]]]:
        """The samples kept: (seconds since the run started, stage -> its statistics)."""
        return list(self._samples)

    def frame(self, since: float | None = None) -> pd.DataFrame:
        """The samples as a tidy DataFrame: ``time``, ``stage``, ``metric``, ``value``
        (with ``since``: only those of the last ``since`` seconds).

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable(range(10)), name="src")
        >>> _ = p.link(src, p.add(gs.consumer(len), name="sink"))
        >>> p.run_sync()
        >>> df = p.metrics.frame()
        >>> list(df.columns), df[(df.metric == "events_in") & (df.stage == "sink")].value.iloc[-1]
        (['time', 'stage', 'metric', 'value'], np.float64(10.0))
        """
        samples = list(self._samples)
        if since is not None and samples:
            t_last = samples[-1][0]
            samples = [s for s in samples if t_last - s[0] <= since]
        interval = self._pipeline.metrics_interval
        return frame_of(samples, interval, rate_window(self._pipeline))

    def totals(self) -> pd.DataFrame:
        """One row per stage: kind, status and the latest counts (live while running).

        >>> import genstage_nb as gs
        >>> p = gs.Pipeline()
        >>> src = p.add(gs.from_iterable(range(10)), name="src")
        >>> _ = p.link(src, p.add(gs.consumer(len), name="sink"))
        >>> p.run_sync()
        >>> columns = ["kind", "status", "events_in", "events_out"]
        >>> p.metrics.totals()[columns]  # doctest: +NORMALIZE_WHITESPACE
                   kind status  events_in  events_out
        stage
        src    producer   done          0          10
        sink   consumer   done         10           0
        """
        import pandas as pd

        rows = []
        for name, stats in self._pipeline.statistics().items():
            peak = self.peaks.get(name, {})
            rows.append(
                {
                    "stage": name,
                    "kind": stats.kind,
                    "status": stats.status,
                    **{field: stats.counts[field] for field in _COUNTED + _BALANCE},
                    "buffer_size": stats.buffered,
                    "queued": stats.queued,
                    "peak_buffer_size": peak.get("buffer_size", 0),
                    "peak_outstanding_demand": peak.get("outstanding_demand", 0),
                }
            )
        return pd.DataFrame(rows).set_index("stage")

    def balance(self) -> pd.DataFrame:
        """Where every event went, per stage, and whether the books balance.

        Input side (stages that consume): ``events_in`` = ``handled`` + ``failed``
        (in failure records) + ``unhandled_in`` (the stage stopped first) + ``queued``
        (received, not handled yet). Output side (stages that produce): ``made`` =
        ``accepted`` by the dispatcher + ``buffered`` + ``dropped`` (overflow) +
        ``unhandled_out``; and, except with a BroadcastDispatcher (which copies),
        ``accepted`` = ``events_out`` + ``discarded`` (partition hash ``None``) + what
        the dispatcher still holds. ``balanced`` is True when every equation holds.
        """
        import pandas as pd

        rows = []
        for name, stats in self._pipeline.statistics().items():
            c = stats.counts
            row: dict[str, Any] = {"stage": name, "kind": stats.kind}
            ok = True
            if stats.kind != "producer":
                row.update(
                    events_in=c["events_in"],
                    handled=c["handled"],
                    failed=c["failed"],
                    unhandled_in=c["unhandled_in"],
                    queued=stats.queued,
                )
                accounted = c["handled"] + c["failed"] + c["unhandled_in"] + stats.queued
                ok &= c["events_in"] == accounted
            if stats.producing:
                held = stats.held  # (in the dispatcher, or held back by the rate limit)
                buffered = stats.buffered - held
                row.update(
                    made=c["made"],
                    accepted=c["accepted"],
                    buffered=buffered,
                    dropped=c["dropped"],
                    unhandled_out=c["unhandled_out"],
                    events_out=c["events_out"],
                    discarded=c["discarded"],
                    held=held,
                )
                ok &= c["made"] == c["accepted"] + buffered + c["dropped"] + c["unhandled_out"]
                if not stats.copies:
                    ok &= c["accepted"] == c["events_out"] + c["discarded"] + held
            row["balanced"] = bool(ok)
            rows.append(row)
        return pd.DataFrame(rows).set_index("stage")
