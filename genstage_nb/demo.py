"""The book-signing demo: a crowd of readers arrives faster than one author signs.

The author asks for at most ``max_demand`` readers at a time; the queue at the door
(the producer's buffer) never overwhelms her, and the terminal shows it batch by batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import anyio

from .core.stage import Consumer, Producer, ProducerConsumer
from .pipeline import Pipeline


class Crowd(Producer):
    """Readers arrive in groups, whether or not the author is ready."""

    def __init__(self, readers: int, **options: Any) -> None:
        super().__init__(**options)
        self.readers = readers

    def init(self) -> None:
        self.arrived = 0

    def handle_demand(self, demand: int) -> list[str]:
        # The crowd does not care about demand: a group of up to 3 * demand arrives,
        # and whatever the author did not ask for waits in the buffer (the queue).
        group = min(3 * demand, self.readers - self.arrived)
        readers = [f"reader {i + 1}" for i in range(self.arrived, self.arrived + group)]
        self.arrived += group
        if self.arrived >= self.readers:
            self.finish()
        return readers


class Author(ProducerConsumer):
    """Signs one book per reader; takes a little time per batch."""

    def __init__(self, seconds_per_book: float, **options: Any) -> None:
        super().__init__(**options)
        self.seconds_per_book = seconds_per_book

    async def handle_events(self, readers: list[str]) -> list[str]:
        await anyio.sleep(self.seconds_per_book * len(readers))
        return [f"signed for {reader}" for reader in readers]


class Exit(Consumer):
    """Readers leave with their signed book; prints the progress."""

    def __init__(self, out: Any, total: int, **options: Any) -> None:
        super().__init__(**options)
        self.out = out
        self.total = total

    def init(self) -> None:
        self.signed = 0
        self.started = time.perf_counter()

    def handle_events(self, books: list[str]) -> None:
        self.signed += len(books)
        crowd = self._pipeline.stages["crowd"]
        elapsed = time.perf_counter() - self.started
        bar = "#" * int(30 * self.signed / self.total)
        print(
            f"[{bar:<30}] signed {self.signed:>5}/{self.total}  "
            f"batch {len(books):>3}  queue at the door {crowd.buffered:>5}  "
            f"{elapsed:6.2f}s",
            file=self.out,
        )


def build(readers: int, max_demand: int, seconds_per_book: float, out: Any) -> Pipeline:
    p = Pipeline("book signing")
    crowd = p.add(Crowd(readers, buffer_size=readers), name="crowd")
    author = p.add(Author(seconds_per_book), name="author")
    leave = p.add(Exit(out, readers), name="exit")
    p.link(crowd, author, max_demand=max_demand)
    p.link(author, leave, max_demand=max_demand)
    return p


def main(argv: list[str] | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="genstage-nb demo", description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="readers in the crowd")
    parser.add_argument("--max-demand", type=int, default=100, help="readers per ask")
    parser.add_argument(
        "--seconds-per-book", type=float, default=0.001, help="signing time per book"
    )
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    try:
        p = build(args.events, args.max_demand, args.seconds_per_book, out)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    print(
        f"Book signing: {args.events} readers, the author asks for {args.max_demand} at a time",
        file=out,
    )
    started = time.perf_counter()
    p.run_sync()
    elapsed = time.perf_counter() - started
    print(f"\nAll {args.events} books signed in {elapsed:.2f}s.", file=out)
    print(f"{'stage':<8} {'kind':<18} {'status':<7} {'in':>7} {'out':>7}", file=out)
    for name, stage in p.stages.items():
        c = stage._process.counters
        print(
            f"{name:<8} {stage.kind:<18} {p.status[name]:<7} {c.events_in:>7} {c.events_out:>7}",
            file=out,
        )
    return 0
