"""``Pipeline.autotune()``: max_demand chosen from measured throughput, within bounds.

Bigger batches amortise what a stage pays per batch (a round trip, a query), but every
event asked for and not yet handled is in flight, and takes memory and time (Flink's
buffer debloating sizes the data in flight to a target time). The tuner grows the
``max_demand`` of the links through the bottleneck (``Pipeline.bottleneck``) while the
end-to-end throughput (events the consumers handle per second) grows, keeps it when
growing stops helping, and never lets the events in flight (pending demand plus
buffers) exceed ``max_in_flight`` nor what the pipeline handles in ``target_latency``
seconds at the measured rate (it backs off when they do). Then it settles and stops
moving, and tunes again when the throughput shifts (the workload changed).

``TuneRule`` is the decision rule as a pure state machine (throughput samples in,
max_demand decisions out); ``Tuner`` measures, applies the decisions with
``Subscription.tune`` (so it composes with the dashboard's sliders) and keeps the
history.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio

#: A trial must gain this much throughput to be kept (and more than the noise measured).
GAIN = 0.05
#: A change must beat this many times the noise measured (the relative standard error
#: of the throughput), so that noise alone never moves the tuner.
NOISE_SIGMAS = 3.0
#: A settled tuner tunes again when the throughput moves this much (and beats the noise).
SHIFT = 0.3
#: How far over the bounds a rule at rest lets the events in flight be (a value at the
#: bound must not be halved by a measurement low by chance).
SLACK = 0.5
#: Measurements in a row beyond the shift that make a settled tuner start again.
SHIFTED = 3
#: Where a doubling would cross a bound, a last step up to the bound is tried when it
#: is at least this much bigger.
FILL = 0.25
#: The parts of a measurement whose spread is its noise.
WINDOWS = 4
#: The most values one rule proposes: then it stays where it is, whatever it measures.
MAX_STEPS = 16
#: How many times a settled rule starts again on a changed workload.
RETUNES = 2


class TuneRule:
    """The decision rule for one ``max_demand`` (pure: no clock, no I/O).

    ``observe(throughput, in_flight, noise)`` takes the throughput measured at the
    current value (events/s), the events in flight and the noise of the measurement (its
    relative standard error), and returns the next value to try, or None to keep it. It
    doubles the value while each doubling gains at least ``GAIN`` and ``NOISE_SIGMAS``
    times the noise, goes back to the last value that did when one does not, and
    settles; where a doubling would put more in flight than ``max_in_flight`` or
    ``throughput * target_latency`` (in flight projected in proportion to the value), it
    tries the largest value within them instead (if ``FILL`` bigger), and settles after
    that. It halves the value when the events in flight exceed the bounds (by ``SLACK``
    more once it has come to rest), never to grow to a value that crossed them again,
    and settles once they are within. Settled, it
    starts again when ``SHIFTED`` measurements in a row are ``SHIFT`` away from its level
    (the workload changed). It settles for good after ``MAX_STEPS`` proposals, or after
    ``RETUNES`` new starts; ``reason`` says why it stopped moving.

    >>> rule = TuneRule(10, max_in_flight=1000, target_latency=1.0)
    >>> rule.observe(100.0, 30)   # the base: try twice as much
    20
    >>> rule.observe(190.0, 60)   # it helped: again
    40
    >>> rule.observe(195.0, 120)  # it did not: back to 20, settled
    20
    >>> rule.settled, rule.observe(191.0, 60)
    (True, None)
    >>> rule.reason
    'max_demand 40 gained 3% over 20, less than the 5% a step must gain'
    """

    def __init__(
        self,
        max_demand: int,
        *,
        max_in_flight: int,
        target_latency: float,
        factor: int = 2,
        ceiling: int = 1_000_000,
    ) -> None:
        self.current = max_demand
        self.max_in_flight = max_in_flight
        self.target_latency = target_latency
        self.factor = factor
        self.ceiling = ceiling
        self.phase = "base"
        self.best = 0.0
        self.previous: int | None = None
        self.steps = 0
        self.retunes = 0
        self.shifted = 0  # measurements in a row beyond the shift (signed: the direction)
        self.reason = ""

    @property
    def settled(self) -> bool:
        return self.phase in ("settled", "done")

    def bound(self, throughput: float) -> float:
        """The most events that may be in flight at this throughput."""
        by_time = throughput * self.target_latency if throughput > 0 else float("inf")
        return min(self.max_in_flight, by_time)

    def observe(self, throughput: float, in_flight: int, noise: float = 0.0) -> int | None:
        # (The latency bound is taken at the throughput plus its noise: a measurement
        # low by chance does not make it back off.)
        bound = self.bound(throughput * (1 + NOISE_SIGMAS * noise))
        # Where it has come to rest, a little over is let be (the latency bound is an
        # estimate): a value at the bound must not be halved by a low measurement.
        slack = 1.0 + SLACK if self.phase in ("settled", "done") else 1.0
        if in_flight > bound * slack and self.current > 1:
            return self._back_off(throughput, in_flight, bound)
        if self.phase == "done":
            return None
        if self.phase == "backed-off":
            # Within the bounds again: stay (growing would only cross them again).
            self.phase = "settled"
            self.best = throughput
            return None
        if self.phase == "base":
            self.best = throughput
            return self._grow(throughput, in_flight)
        if self.phase == "trial":
            return self._trial(throughput, in_flight, noise)
        return self._at_rest(throughput, in_flight, noise)

    def _back_off(self, throughput: float, in_flight: int, bound: float) -> int:
        """Too much in flight: halve the value, and never grow this high again."""
        self.ceiling = min(self.ceiling, self.current - 1)
        self.previous = self.current
        self.current = max(1, self.current // self.factor)
        self.phase = "backed-off"
        self.best = 0.0
        self.reason = (
            f"backed off from max_demand {self.previous}: {in_flight} events in flight, "
            f"over the {bound:.0f} allowed (max_in_flight, or target_latency at "
            f"{throughput:.0f} events/s)"
        )
        return self._step(self.current)

    def _trial(self, throughput: float, in_flight: int, noise: float) -> int | None:
        """A trial measured: go on growing if it gained enough, else go back and stay."""
        need = max(GAIN, NOISE_SIGMAS * noise)
        if throughput > 0 and throughput >= self.best * (1 + need):
            self.best = throughput
            return self._grow(throughput, in_flight)
        self.phase = "settled"
        back, self.previous = self.previous, None
        gain = throughput / self.best - 1 if self.best > 0 else 0.0
        change = (
            f"gained {gain:.0%}"
            if gain >= 0.005
            else f"lost {-gain:.0%}"
            if gain <= -0.005
            else "gained nothing"
        )
        self.reason = (
            f"max_demand {self.current} {change} over {back}, less than the "
            f"{need:.0%} a step must gain"
            + (f" (3x the noise measured, {noise:.1%})" if need > GAIN else "")
        )
        if back is not None and back != self.current:
            self.current = back
            return self._step(back)
        return None

    def _at_rest(self, throughput: float, in_flight: int, noise: float) -> int | None:
        """Settled: tune again only when the workload changed: the throughput away from
        its settled level (a running mean) by more than the shift and the noise, in the
        same direction, ``SHIFTED`` times in a row (one odd measurement is noise)."""
        shift = max(SHIFT, NOISE_SIGMAS * noise)
        away = (throughput - self.best) / self.best if self.best > 0 else 0.0
        if abs(away) <= shift:
            self.best += 0.2 * (throughput - self.best)
            self.shifted = 0
            return None
        direction = 1 if away > 0 else -1
        self.shifted = self.shifted + direction if self.shifted * direction >= 0 else direction
        if abs(self.shifted) < SHIFTED:
            return None
        self.shifted = 0
        if self.retunes >= RETUNES:
            self.phase = "done"
            self.reason += f"; it has started again {RETUNES} times, and stays"
            return None
        self.retunes += 1
        self.phase = "base"
        return self.observe(throughput, in_flight, noise)

    def _step(self, value: int) -> int:
        self.steps += 1
        if self.steps >= MAX_STEPS:
            self.phase = "done"
            self.reason = f"it made the {MAX_STEPS} steps a tuner may make, and stays"
        return value

    def _grow(self, throughput: float, in_flight: int) -> int | None:
        new = min(self.ceiling, self.current * self.factor)
        bound = self.bound(throughput)
        per_unit = in_flight / self.current  # in flight grows with max_demand
        if per_unit * new > bound:
            # A doubling would cross a bound: the largest value within it, if that is
            # worth a trial (the last step fills up to the bound).
            new = min(self.ceiling, int(bound / per_unit))
            if new < self.current * (1 + FILL):
                new = self.current
        if new <= self.current:
            self.phase = "settled"
            self.reason = (
                f"a bigger max_demand than {self.current} would put more than the "
                f"{bound:.0f} events allowed in flight (max_in_flight, or target_latency)"
                if new < self.ceiling
                else f"max_demand {self.current} is as high as it may go"
            )
            return None
        self.previous, self.current = self.current, new
        self.phase = "trial"
        return self._step(new)


class Tuner:
    """Tunes a pipeline's ``max_demand`` while it runs (``Pipeline.autotune``).

    - ``history``: a DataFrame, a row per link changed (``time``: seconds since the run
      started, as in the metrics; ``link``; the new ``max_demand``; the ``throughput``
      measured before the change); ``p.plot()`` marks each change;
    - ``settled``: True once it has stopped moving (``await tuner.wait_settled()``);
      ``state`` ("tuning", "settled" or "stopped") and ``reason``, why it stopped moving;
    - ``notices``: what it said (a link a user changed is left to the user from then on:
      a slider, a cell or ``Subscription.tune``; ``released`` holds those links);
    - ``stop()``: stop tuning (the links keep their values). A tuner serves one run: it
      stops when the run ends (call ``autotune()`` again for the next).
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        target_latency: float = 1.0,
        max_in_flight: int = 100_000,
        interval: float | None = None,
    ) -> None:
        if (
            isinstance(target_latency, bool)
            or not isinstance(target_latency, (int, float))
            or not target_latency > 0
        ):
            raise ValueError(
                f"autotune: target_latency must be a number of seconds > 0, got {target_latency!r}"
            )
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ValueError(f"autotune: max_in_flight must be an int >= 1, got {max_in_flight!r}")
        self.pipeline = pipeline
        self.target_latency = float(target_latency)
        self.max_in_flight = max_in_flight
        self.interval = (
            interval if interval is not None else max(0.2, pipeline.metrics_interval or 0.25)
        )
        self._rows: list[tuple[float, str, int, float]] = []
        self._rule: TuneRule | None = None
        self._links: list[Any] = []
        self._before: dict[Any, tuple[int, int]] = {}
        self._started = time.perf_counter()
        self._stopped = False
        self._done: set[str] = set()
        self.listeners: list[Any] = []  # called with (subscription, max_demand) on a change
        self._settled_seen: anyio.Event | None = None  # set when it settles (for waiting)
        self.noise = 0.0  # the last measurement's relative standard error
        self.notices: list[str] = []
        self.released: list[Any] = []  # links a user changed: no longer the tuner's
        self._set: dict[Any, int] = {}  # the max_demand the tuner gave each link
        self._why_stopped = ""

    @property
    def state(self) -> str:
        """``"tuning"``, ``"settled"`` or ``"stopped"``."""
        if self._stopped:
            return "stopped"
        return "settled" if self.settled else "tuning"

    @property
    def reason(self) -> str:
        """Why it stopped moving (empty while it tunes)."""
        if self._why_stopped:
            return self._why_stopped
        if self._rule is not None and self._rule.settled:
            return self._rule.reason
        return ""

    @property
    def settled(self) -> bool:
        return self._rule is not None and self._rule.settled and not self._pending_links()

    @property
    def history(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self._rows, columns=["time", "link", "max_demand", "throughput"])

    def stop(self) -> None:
        """Stop tuning; the links keep the values they have."""
        self._stopped = True
        self._why_stopped = self._why_stopped or "stopped by stop()"

    def _notice(self, text: str, show: bool = False) -> None:
        """Keep ``text`` in ``notices`` (the dashboard shows the last ones); ``show``:
        print it too (a user's change released, which they must hear of)."""
        self.notices.append(text)
        if show:
            print(f"autotune: {text}")

    def _release_changed(self) -> None:
        """A link whose max_demand is not what the tuner gave it was changed by a user:
        it is theirs from now on."""
        mine = []
        for sub in self._links:
            given = self._set.get(sub)
            if given is not None and sub.max_demand != given:
                self.released.append(sub)
                self._notice(
                    f"{sub.producer.name} -> {sub.consumer.name}: max_demand set to "
                    f"{sub.max_demand} by you; the tuner leaves this link alone from now on",
                    show=True,
                )
            else:
                mine.append(sub)
        if len(mine) != len(self._links):
            self._links = mine
            if not mine and self._rule is not None:
                self._rule.phase = "done"
                self._rule.reason = "its links were changed by you"

    async def wait_settled(self) -> None:
        """Wait until the tuner has settled (it keeps watching the workload after), or
        has stopped (the run ended first: ``state`` says which)."""
        if not self.settled and not self._stopped:
            await self._settled_event().wait()

    def _settled_event(self) -> anyio.Event:
        if self._settled_seen is None:
            self._settled_seen = anyio.Event()
        return self._settled_seen

    # -- measuring -----------------------------------------------------------------

    def _handled(self) -> int:
        return sum(
            stats.counts["handled"]
            for stats in self.pipeline.statistics().values()
            if stats.kind == "consumer"
        )

    def _in_flight(self) -> int:
        """The events that may be in flight: the pending demand of each link at its
        highest (its ``max_demand``: an automatic link asks up to it) plus what the
        stages hold in their buffers now. A bound that holds at any moment, not a
        sample of a quantity that swings between min_demand and max_demand."""
        pending = sum(max(sub.pending, sub.max_demand) for sub in self.pipeline.subscriptions)
        return pending + sum(stats.buffered for stats in self.pipeline.statistics().values())

    async def _measure(self, ended: anyio.Event) -> float | None:
        """Throughput over one interval, after one interval to let a change settle; the
        interval is taken in ``WINDOWS`` parts, whose spread is the noise
        (``self.noise``: the relative standard error of the throughput)."""
        with anyio.move_on_after(self.interval):
            await ended.wait()
        rates = []
        for _ in range(WINDOWS):
            begin, handled = time.perf_counter(), self._handled()
            with anyio.move_on_after(self.interval / WINDOWS):
                await ended.wait()
            if ended.is_set() or self._stopped:
                return None
            rates.append((self._handled() - handled) / (time.perf_counter() - begin))
        mean = statistics.fmean(rates)
        self.noise = statistics.stdev(rates) / mean / WINDOWS**0.5 if mean > 0 else 0.0
        return mean

    # -- deciding ------------------------------------------------------------------

    def _bottleneck(self) -> str | None:
        """The bottleneck from the samples the sampler took (reading ``settled`` must not
        add samples, as ``Pipeline.bottleneck()`` does on a running pipeline)."""
        from .explain import find_bottleneck, recent

        return find_bottleneck(self.pipeline, recent(self.pipeline))

    def _pending_links(self) -> bool:
        name = self._bottleneck()
        return name is not None and name not in self._done and self._path(name) != []

    def _path(self, name: str) -> list[Any]:
        """The links through stage ``name``: those before it and after it (a stage's
        batches are no bigger than what its producer was asked for upstream, and a
        producer-consumer takes input only as far as its consumers ask)."""
        import networkx as nx

        graph = self.pipeline.graph
        if name not in graph:
            return []
        around = nx.ancestors(graph, name) | nx.descendants(graph, name) | {name}
        return [
            d["subscription"] for a, b, d in graph.edges(data=True) if a in around and b in around
        ]

    def _apply(self, value: int) -> None:
        for sub in self._links:
            self._set[sub] = value
            if sub.max_demand != value:
                defaulted = sub._min_default  # (a defaulted min_demand follows max_demand)
                sub.tune(max_demand=value, min_demand=value // 2)
                sub._min_default = defaulted
                # Once what the old asks left in flight is in, the lists come in whole
                # batches of the new size again (DemandState.realign_to; set after
                # tune(), which cancels a realignment in course). Otherwise a remainder
                # is carried on forever: a batch for a few events, each time.
                sub._demand.realign_to(value // 2)
                for listener in self.listeners:
                    listener(sub, value)

    async def run(self, ended: anyio.Event) -> None:
        """Tune until ``ended`` is set (the run is over: a tuner serves one run) or
        ``stop()`` is called."""
        try:
            await self._tune(ended)
        finally:
            self._stopped = True
            self._why_stopped = self._why_stopped or "the run ended"
            self._settled_event().set()  # (a waiter learns it stopped)

    async def _tune(self, ended: anyio.Event) -> None:
        pipeline = self.pipeline
        while not ended.is_set() and not self._stopped:
            if self._rule is None or (self._rule.settled and self._pending_links()):
                name = self._bottleneck()
                links = [
                    sub
                    for sub in (self._path(name) if name is not None else [])
                    if sub not in self.released
                ]
                if not links:
                    if await self._measure(ended) is None:
                        return
                    continue
                self._done.add(str(name))
                self._links = links
                value = max(sub.max_demand for sub in links)
                self._apply(value)
                self._rule = TuneRule(
                    value, max_in_flight=self.max_in_flight, target_latency=self.target_latency
                )
                self._name = name
            throughput = await self._measure(ended)
            if throughput is None:
                return
            if pipeline.paused:
                continue  # a paused stage holds the flow: nothing to learn from it
            self._release_changed()
            was_settled = self._rule.settled
            new = self._rule.observe(throughput, self._in_flight(), self.noise)
            if self._rule.settled and not was_settled:
                self._notice(f"settled at max_demand {self._rule.current}: {self._rule.reason}")
            if was_settled and not self._rule.settled:
                self._done = {str(self._name)}  # the workload changed: tune again
            if self._rule.settled and not self._pending_links():
                self._settled_event().set()
            if new is not None:
                now = time.perf_counter() - pipeline.metrics._started  # as in the metrics
                for sub in self._links:
                    self._rows.append(
                        (now, f"{sub.producer.name} -> {sub.consumer.name}", new, throughput)
                    )
                self._apply(new)


__all__ = ["TuneRule", "Tuner"]
