"""A checkpointed job that tests/test_durable.py runs in a subprocess and kills.

``python durable_job.py DB LOG BACKEND SHAPE``: a keyed reduce over 100,000 events into
a ``gs.to_sqlite`` table, checkpointed every 0.05 s to DB. The reduce writes to LOG (one
line each, flushed): ``at SEEN`` after each batch, ``cut SEEN`` when a checkpoint takes its state, ``complete ID`` when
the checkpoint is saved, ``restored SEEN`` when a run resumes, ``done JSON`` at the end.
SHAPE ``class`` is source -> reduce -> table; ``map`` puts an async ``gs.map`` with
concurrency 4 and a ``gs.batcher`` (with its flattening stage) before the reduce;
``flow`` is a Flow: per key, count and sum in event-time windows of 10,000, over two
partitions (its source writes the lines, with its position as SEEN; no table).
"""

from __future__ import annotations

import json
import sys
import time

import anyio

import genstage_nb as gs

N = 100_000
KEYS = 7


class Reduce(gs.ProducerConsumer):
    """Per key: count and sum; each event goes on as a row."""

    def __init__(self, log: str) -> None:
        super().__init__(name="reduce")
        self.log = open(log, "a")  # noqa: SIM115 (set in __init__: not part of the state)

    def init(self) -> None:
        self.sums: dict[int, list[int]] = {}
        self.seen = 0

    def handle_events(self, events: list) -> list:
        sums = self.sums
        for n in events:
            entry = sums.setdefault(n % KEYS, [0, 0])
            entry[0] += 1
            entry[1] += n
        self.seen += len(events)
        self._say(f"at {self.seen}")
        time.sleep(0.001)  # (so that a kill lands inside the run)
        return [{"n": n, "key": n % KEYS} for n in events]

    def snapshot(self) -> dict:
        self._say(f"cut {self.seen}")
        return {"sums": self.sums, "seen": self.seen}

    def restore(self, state: dict) -> None:
        self.sums, self.seen = state["sums"], state["seen"]
        self._say(f"restored {self.seen}")

    def handle_checkpoint(self, checkpoint_id: int) -> None:
        self._say(f"complete {checkpoint_id}")

    def _say(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()


async def twice(n: int) -> int:
    await anyio.sleep(0)
    return n


def flatten(lists: list) -> list:
    return [n for batch in lists for n in batch]


def build(db: str, log: str, shape: str) -> tuple[gs.Pipeline, Reduce]:
    p = gs.Pipeline(checkpoint=db, checkpoint_every=0.05)
    source = p.add(gs.from_iterable(range(N)), name="numbers")
    reduce = p.add(Reduce(log))
    if shape == "map":
        mapped = p.add(gs.map(twice, concurrency=4), name="twice")
        lists = p.add(gs.batcher(10), name="lists")
        flat = p.add(gs.producer_consumer(flatten), name="flat")
        p.link(source, mapped, max_demand=50)
        p.link(mapped, lists, max_demand=50)
        p.link(lists, flat, max_demand=5)
        p.link(flat, reduce, max_demand=100)
    else:
        p.link(source, reduce, max_demand=100)
    p.link(reduce, p.add(gs.to_sqlite(db, "rows"), name="rows"), max_demand=200)
    return p, reduce


def run_flow(db: str, log: str, backend: str) -> None:
    said = Reduce(log)  # (its log)

    def slow(n: int) -> int:
        if n % 100 == 99:
            said._say(f"at {n + 1}")  # (where the map stands: the events it has seen)
            time.sleep(0.001)  # (so that a kill lands inside the run)
        return n

    flow = (
        gs.Flow.from_iterable(range(N))
        .map(slow, max_demand=100)
        .partition(key=lambda n: n % KEYS, stages=2, window=gs.Window.fixed(10_000, time=int))
        .reduce(lambda: [0, 0], lambda acc, n: [acc[0] + 1, acc[1] + n])
        .configure(checkpoint=db, checkpoint_every=0.05)
    )
    source = flow.pipeline._procs["from_iterable"].stage  # its position is what the log says
    snapshot, restore = source.snapshot, source.restore

    def cut() -> dict:
        state = snapshot()
        said._say(f"cut {state['at']}")
        return state

    def restored(state: dict) -> None:
        restore(state)
        said._say(f"restored {state['at']}")

    source.snapshot, source.restore = cut, restored
    source.handle_checkpoint = lambda number: said._say(f"complete {number}")
    results = flow.run(backend=backend)
    done = {f"{r.window[0]}:{r.key}": r.value for r in results}
    said._say("done " + json.dumps(dict(sorted(done.items()))))


def main() -> None:
    db, log, backend, shape = sys.argv[1:5]
    if shape == "flow":
        run_flow(db, log, backend)
        return
    p, reduce = build(db, log, shape)
    p.run_sync(backend=backend)
    reduce._say("done " + json.dumps({str(k): v for k, v in sorted(reduce.sums.items())}))


if __name__ == "__main__":
    main()
