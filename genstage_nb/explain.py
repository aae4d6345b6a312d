"""What limits a running pipeline, and what to change: ``Pipeline.explain()``.

Back-pressure makes every stage run at the pace of the slowest, so throughput alone
never says which stage that is. The three times of ``core/timing.py`` do: over the last
second or so, the **bottleneck** is the stage busiest in its own hooks (the stages
before it are back-pressured, those after it idle); when no stage is busy, a producer
that waits with demand outstanding (for outside input) limits the pipeline. The advice
names the stage and the option to change.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .metrics import rate_label, recent

if TYPE_CHECKING:
    import pandas as pd

#: A stage busier than this for the window is worth advice.
BUSY = 0.5


def find_bottleneck(pipeline: Any, stages: dict[str, dict[str, float]] | None) -> str | None:
    if not stages:
        return None
    busiest = max(stages, key=lambda name: stages[name]["busy"])
    if stages[busiest]["busy"] >= 0.2:
        return busiest
    # Nobody works much: a producer waiting for outside input (idle with demand) limits.
    waiting = [n for n, s in stages.items() if s["kind"] == "producer" and s["idle"] >= 0.5]
    if waiting:
        return max(waiting, key=lambda name: stages[name]["idle"])
    return busiest if stages[busiest]["busy"] > 0 else None


def advise(pipeline: Any, name: str | None, stages: dict[str, dict[str, float]]) -> list[str]:
    """Sentences that name the bottleneck's options (see the module doc); a paused
    stage first (it holds everything before it, whatever the measurements say)."""
    paused = [
        f"Stage {stage!r} is paused after a failure in {failure.hook or 'a hook'} "
        f"({type(failure.exception).__name__}: {failure.exception}): fix it, then "
        f"resume({stage!r}) (or re-run its %%stage cell), or skip({stage!r}) to drop the "
        f"batch; the stages before it wait."
        for stage, failure in pipeline.paused.items()
    ]
    growing = [
        f"Stage {stats.name!r} holds {stats.in_buffer:,} events in its buffer "
        f"(buffer_size={stats.buffer_size}): it makes more than its consumers take. Bound it "
        f"with `buffer_size=` (and `buffer_keep=`), or make fewer events per call."
        for stats in pipeline.statistics().values()
        if stats.growing
    ]
    if paused or name is None:
        return paused + growing
    return growing + _bottleneck_advice(pipeline, name, stages)


def _bottleneck_advice(pipeline: Any, name: str, stages: dict[str, dict[str, float]]) -> list[str]:
    """What to change about the bottleneck ``name``, by its kind and its options."""
    stage = pipeline.stages[name]
    s = stages[name]
    busy = f"{s['busy']:.0%}"
    if stage.kind == "producer":
        return [_producer_advice(name, s, busy)]
    links = [sub for sub in pipeline.subscriptions if sub.consumer is stage]
    if hasattr(stage, "handle_event"):  # a ConcurrentConsumer
        return [
            f"{name!r} (a ConcurrentConsumer) is the bottleneck, busy {busy}: it runs at "
            f"most max_demand events at once; raise `max_demand` of the link "
            f"{sub.producer.name} -> {name} (now {sub.max_demand}) to run more at once."
            for sub in links
        ]
    return [_where_it_runs(stage, name, busy), *_batch_advice(stage, name, links)]


def _producer_advice(name: str, s: dict[str, float], busy: str) -> str:
    if s["busy"] >= 0.2:
        return (
            f"The producer {name!r} is the bottleneck: its handle_demand is busy {busy} of "
            f"the time. Return more events per call (it is asked for up to max_demand at "
            f"once), make it cheaper, or make it async if it waits for I/O."
        )
    return (
        f"The producer {name!r} limits the pipeline: it has demand outstanding and "
        f"waits {s['idle']:.0%} of the time (for outside input); the stages after it "
        f"are idle, so nothing downstream needs to change."
    )


def _where_it_runs(stage: Any, name: str, busy: str) -> str:
    """Advice by where the bottleneck's hook runs: an executor, async calls, the loop."""
    concurrency = getattr(stage, "concurrency", 1)
    if getattr(stage, "executor", None) is not None:
        return (
            f"{name!r} is the bottleneck: its executor is busy {busy} of the time; raise its "
            f"`concurrency` (now {concurrency}) and the executor's workers."
        )
    if is_async(stage):
        return (
            f"{name!r} is the bottleneck: busy {busy} of the time awaiting its async calls; "
            f"raise its `concurrency` (now {concurrency}) to have more calls in flight at once."
        )
    return (
        f"{name!r} is the bottleneck: its sync hook computes on the event loop {busy} of "
        f"the time. If it is CPU-bound, move it to an executor "
        f"(`executor=ProcessPoolExecutor(...)`, `concurrency=` the workers); if it blocks "
        f"on I/O, a thread pool, or make it async."
    )


def _batch_advice(stage: Any, name: str, links: list) -> list[str]:
    """Full batches on a small max_demand: larger ones pay a per-batch cost less often."""
    proc = stage._process
    counters = proc.counters if proc is not None else None
    if counters is None or not counters.batches or getattr(stage, "_gs_map", None):
        return []
    mean = counters.handled / counters.batches
    advice = []
    for sub in links:
        full = sub.max_demand - sub.min_demand
        if sub.max_demand < 1000 and mean >= 0.9 * full:
            advice.append(
                f"If {name!r} pays its cost per batch (a round trip, a query), raise "
                f"`max_demand` of the link {sub.producer.name} -> {name} (now "
                f"{sub.max_demand}): its batches are full ({mean:.0f} events), so larger "
                f"ones pay that cost less often."
            )
    return advice


def is_async(stage: Any) -> bool:
    fn = getattr(stage, "_gs_map", None) or getattr(stage, "handle_events", None)
    return inspect.iscoroutinefunction(fn)


@dataclass
class Explanation:
    """What limits a pipeline now (``Pipeline.explain()``).

    - ``bottleneck``: the name of the stage that limits throughput (None before two
      metric samples exist);
    - ``stages``: a DataFrame, one row per stage: ``busy``, ``backpressured``, ``idle``
      (fractions of the rate window, the last second or so) and ``throughput``
      (events/s over the same window: ``rate``, its label, says how long);
    - ``advice``: sentences that name a stage and the option to change;
    - ``stalls``: the ``Stall`` notices of this run (``Pipeline(stall_after=...)``).

    Shown as Markdown in a notebook, as text by ``str()``.

    >>> import genstage_nb as gs
    >>> p = gs.Pipeline()
    >>> _ = p.link(p.add(gs.from_iterable(range(10)), name="src"), p.add(gs.consumer(len)))
    >>> print(p.explain())  # before a run: no samples yet
    No bottleneck yet: the pipeline needs two metric samples (it has not run).
    """

    bottleneck: str | None
    stages: pd.DataFrame
    advice: list[str] = field(default_factory=list)
    stalls: list[Any] = field(default_factory=list)
    rate: str = "events/s"

    def _lines(self) -> list[str]:
        if self.bottleneck is None:
            return ["No bottleneck yet: the pipeline needs two metric samples (it has not run)."]
        return [f"Bottleneck: {self.bottleneck}"]

    def __str__(self) -> str:
        lines = self._lines()
        if len(self.stages):
            table = self.stages[["busy", "backpressured", "idle", "throughput"]]
            lines += ["", table.to_string(float_format=lambda x: f"{x:.2f}")]
        lines += [f"- {a}" for a in self.advice]
        lines += [f"stall: {s}" for s in self.stalls]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        if self.bottleneck is None:
            return f"**{self._lines()[0]}**"
        out = [f"**Bottleneck: `{self.bottleneck}`**", ""]
        out += [
            f"| stage | busy | back-pressured | idle | {self.rate} |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in self.stages.iterrows():
            mark = " ⬅" if name == self.bottleneck else ""
            out.append(
                f"| `{name}`{mark} | {row.busy:.0%} | {row.backpressured:.0%} | "
                f"{row.idle:.0%} | {row.throughput:,.0f} |"
            )
        out += [""] + [f"- {a}" for a in self.advice]
        out += [f"- **stall**: {s}" for s in self.stalls]
        return "\n".join(out)


def explain(pipeline: Any) -> Explanation:
    import pandas as pd

    if pipeline.running:
        pipeline.metrics.sample()  # the latest, not up to an interval old
    stages = recent(pipeline)
    name = find_bottleneck(pipeline, stages)
    columns = ["kind", "busy", "backpressured", "idle", "throughput"]
    frame = pd.DataFrame.from_dict(stages or {}, orient="index", columns=columns)
    frame.index.name = "stage"
    stalls = [w for w in pipeline.warnings if type(w).__name__ == "Stall"]
    advice = advise(pipeline, name, stages or {})
    return Explanation(name, frame, advice, stalls, rate_label(pipeline))


__all__ = ["Explanation", "explain", "find_bottleneck", "recent"]
