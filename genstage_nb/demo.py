"""The book-signing demo: a crowd of readers arrives faster than one author signs.

The author asks for at most ``max_demand`` readers at a time; the rest of the crowd waits
in the queue at the door (the producer's buffer), so the author is never overwhelmed.
The terminal shows live progress, then a per-stage summary; the metrics plot is saved as
a PNG.

    genstage-nb demo [--events 2000] [--max-demand 100] [--output book_signing.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import anyio

from .core.stage import Consumer, Producer, ProducerConsumer
from .pipeline import Pipeline


class Crowd(Producer):
    """Readers arrive at ``rate`` per second, whether or not the author is ready.

    Whoever has arrived when the author asks is let in line; what she did not ask for
    waits at the door (the producer's buffer).
    """

    def __init__(self, readers: int, rate: float, **options: Any) -> None:
        super().__init__(**options)
        self.readers = readers
        self.rate = rate

    def init(self) -> None:
        self.arrived = 0
        self.opened = time.perf_counter()

    def handle_demand(self, demand: int) -> list[str]:
        due = int(self.rate * (time.perf_counter() - self.opened)) - self.arrived
        left = self.readers - self.arrived
        group = min(max(due, demand), left)
        readers = [f"reader {i + 1}" for i in range(self.arrived, self.arrived + group)]
        self.arrived += group
        if self.arrived >= self.readers:
            self.finish()
        return readers


class Author(ProducerConsumer):
    """Signs one book per reader, ``seconds_per_book`` each."""

    def __init__(self, seconds_per_book: float, **options: Any) -> None:
        super().__init__(**options)
        self.seconds_per_book = seconds_per_book

    async def handle_events(self, readers: list[str]) -> list[str]:
        await anyio.sleep(self.seconds_per_book * len(readers))
        return [f"signed for {reader}" for reader in readers]


class Exit(Consumer):
    """Readers leave with their signed book; shows the progress."""

    def __init__(self, progress: Progress, **options: Any) -> None:
        super().__init__(**options)
        self.progress = progress

    def init(self) -> None:
        self.signed = 0

    def handle_events(self, books: list[str]) -> None:
        self.signed += len(books)
        self.progress.update(self.signed)


class Progress:
    """One live line on a terminal (a line per tenth of the work elsewhere)."""

    def __init__(self, out: Any, total: int, pipeline: Pipeline | None = None) -> None:
        self.out = out
        self.total = total
        self.pipeline = pipeline
        self.live = hasattr(out, "isatty") and out.isatty()
        self.started = time.perf_counter()
        self.shown = -1.0
        self.tenth = -1

    def update(self, signed: int) -> None:
        now = time.perf_counter()
        tenth = 10 * signed // self.total
        if self.live and now - self.shown < 0.1 and signed < self.total:
            return
        if not self.live and tenth == self.tenth:
            return
        self.shown, self.tenth = now, tenth
        crowd = self.pipeline.stages["crowd"] if self.pipeline else None
        waiting = crowd.buffered if isinstance(crowd, Producer) else 0
        bar = "#" * (30 * signed // self.total)
        line = (
            f"[{bar:<30}] {signed:>6}/{self.total} signed  "
            f"{waiting:>6} waiting at the door  {now - self.started:6.2f}s"
        )
        if self.live:
            print("\r" + line, end="" if signed < self.total else "\n", file=self.out, flush=True)
        else:
            print(line, file=self.out)


def build(readers: int, max_demand: int, seconds_per_book: float, out: Any) -> Pipeline:
    """The book-signing pipeline: crowd -> author -> exit."""
    p = Pipeline("book signing", metrics_interval=0.05)
    progress = Progress(out, readers, p)
    # The crowd arrives twice as fast as the author signs.
    rate = 2.0 / seconds_per_book if seconds_per_book > 0 else float(readers)
    crowd = p.add(Crowd(readers, rate, buffer_size=None), name="crowd")
    author = p.add(Author(seconds_per_book), name="author")
    leave = p.add(Exit(progress), name="exit")
    p.link(crowd, author, max_demand=max_demand)
    p.link(author, leave, max_demand=max_demand)
    return p


def summary(p: Pipeline) -> str:
    """The per-stage table printed at the end (events/s as everywhere: over the last
    second of the run, labelled so)."""
    from .metrics import rate_label, recent

    rates = {name: row["throughput"] for name, row in (recent(p) or {}).items()}
    label = rate_label(p)
    totals = p.metrics.totals()
    lines = [
        f"{'stage':<8} {'kind':<18} {'events in':>10} {'events out':>11} "
        f"{label:>20} {'peak buffer':>12} {'peak demand':>12}"
    ]
    for name, row in totals.iterrows():
        lines.append(
            f"{name:<8} {row['kind']:<18} {row['events_in']:>10} {row['events_out']:>11} "
            f"{rates.get(name, 0.0):>20.0f} {row['peak_buffer_size']:>12} "
            f"{row['peak_outstanding_demand']:>12}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="genstage-nb demo",
        description="A crowd of readers arrives faster than one author signs; she asks "
        "for at most --max-demand readers at a time.",
    )
    parser.add_argument("--events", type=int, default=2000, help="readers (default 2000)")
    parser.add_argument(
        "--max-demand", type=int, default=100, help="readers the author asks for at a time"
    )
    parser.add_argument(
        "--seconds-per-book", type=float, default=0.001, help="signing time (default 0.001)"
    )
    parser.add_argument(
        "--output", default="book_signing.png", help="where to save the metrics plot (PNG)"
    )
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    if args.seconds_per_book < 0:
        parser.error("--seconds-per-book must be 0 or more")
    try:
        p = build(args.events, args.max_demand, args.seconds_per_book, out)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    print(
        f"Book signing: {args.events} readers arrive; the author asks for at most "
        f"{args.max_demand} at a time.",
        file=out,
    )
    started = time.perf_counter()
    p.run_sync()
    elapsed = time.perf_counter() - started
    print(f"\nAll {args.events} books signed in {elapsed:.2f}s.\n", file=out)
    print(summary(p), file=out)
    fig = p.plot()
    fig.savefig(args.output, dpi=100)
    print(f"\nMetrics plot: {os.path.abspath(args.output)}", file=out)
    return 0
