"""Durable runs in one process (DESIGN.md section 9): a run stopped midway resumes from
its last complete checkpoint with every count exact; a changed graph is refused with what
differs; what cannot be saved is named; sources say where they stand; Flow's reduces,
windows and results come back; the records a user reads."""

from __future__ import annotations

import sqlite3
import threading

import anyio
import pytest
from helpers import settle

import genstage_nb as gs
from genstage_nb.flow.reducer import MISSING, Reducer

pytestmark = pytest.mark.anyio

N = 600


class Numbers(gs.Producer):
    """0 .. N-1, but no further than ``allowed`` until it is raised: the pipeline comes
    to rest there (where the test takes a checkpoint)."""

    def __init__(self, allowed: int = N):
        super().__init__()
        self.allowed = allowed
        self.wanted = 0

    def init(self):
        self.n = 0

    def handle_demand(self, demand):
        self.wanted += demand
        return self._make()

    def _make(self):
        stop = min(self.n + self.wanted, self.allowed, N)
        events = list(range(self.n, stop))
        self.n, self.wanted = stop, self.wanted - len(events)
        if self.n == N:
            self.finish()
        return events


class Sums(gs.ProducerConsumer):
    """Per key (n % 3): count and sum; each event goes on as a row. Sets ``reached``
    once it has seen ``at`` events."""

    def __init__(self, at: int = N):
        super().__init__()
        self.at = at
        self.reached = anyio.Event()
        self.checkpoints: list[int] = []
        self.restored: int | None = None

    def init(self):
        self.sums = {}
        self.seen = 0

    def handle_events(self, events):
        for n in events:
            entry = self.sums.setdefault(n % 3, [0, 0])
            entry[0] += 1
            entry[1] += n
        self.seen += len(events)
        if self.seen >= self.at:
            self.reached.set()
        return [{"n": n} for n in events]

    def restore(self, state):
        super().restore(state)
        self.restored = self.seen

    def handle_checkpoint(self, checkpoint_id):
        self.checkpoints.append(checkpoint_id)


def expected_sums(n: int = N) -> dict:
    sums: dict = {}
    for x in range(n):
        entry = sums.setdefault(x % 3, [0, 0])
        entry[0] += 1
        entry[1] += x
    return sums


def build(path, sums: Sums, source: gs.Stage | None = None, **options) -> gs.Pipeline:
    p = gs.Pipeline(checkpoint=path, checkpoint_every=3600, **options)
    numbers = p.add(source or gs.from_iterable(range(N)), name="numbers")
    stage = p.add(sums, name="sums")
    p.link(numbers, stage, max_demand=20)
    p.link(stage, p.add(gs.to_sqlite(str(path), "rows"), name="rows"), max_demand=20)
    return p


def rows(path) -> tuple[int, int]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT count(*), count(DISTINCT n) FROM rows").fetchone()


async def crash_after_a_checkpoint(p: gs.Pipeline, reached: anyio.Event) -> int | None:
    """Run ``p`` until ``reached``, take a checkpoint, then end the run as a crash would
    (its tasks cancelled: no stop, no last checkpoint). Returns the checkpoint's id."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await reached.wait()
        await settle(p)
        number = await p.save_checkpoint()
        await settle(p)
        tg.cancel_scope.cancel()
    return number


async def test_a_crashed_run_resumes_from_its_last_checkpoint_and_counts_once(tmp_path):
    path = tmp_path / "run.db"
    first = Sums(at=200)
    number = await crash_after_a_checkpoint(build(path, first, Numbers(allowed=200)), first.reached)
    assert number == 1 and first.checkpoints == [1]  # handle_checkpoint, once it was saved
    assert first.seen == 200

    again = Sums()
    p = build(path, again, Numbers())
    await p.run()
    assert again.restored == 200  # the state at the cut
    assert again.sums == expected_sums()  # every event counted once
    assert again.seen == N
    assert p.resumed == "resumed from checkpoint 1 (200 events already done)"
    assert rows(path) == (N, N)  # the table: every row once
    saved = p.checkpoints
    assert list(saved["id"]) == [1, 2]  # and the last one, of the run that ended
    stages = ["numbers", "sums", "rows (stage)"]  # (a stage named as a column)
    assert list(saved.columns) == ["id", "time", "took", "size", "rows", *stages]
    assert list(saved["sums"]) == [200, N] and list(saved["rows"]) == [200, N - 200]
    assert (saved["took"] > 0).all() and (saved["size"] > 0).all()
    assert again.checkpoints == [2]  # (the last one's hook: after the stages ended)


async def test_events_after_the_cut_are_done_again_and_counted_once(tmp_path):
    path = tmp_path / "run.db"
    first = Sums(at=300)
    source = Numbers(allowed=200)
    p = build(path, first, source)

    async def let_go_after_the_checkpoint():
        await settle(p)
        assert await p.save_checkpoint() == 1
        source.allowed = 300  # these 100 are done, then lost with the crash
        source.send("more")

    source.handle_info = lambda message: source._make()
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await let_go_after_the_checkpoint()
        await first.reached.wait()
        await settle(p)
        tg.cancel_scope.cancel()
    assert first.seen == 300
    again = Sums()
    p = build(path, again, Numbers())
    await p.run()
    assert again.restored == 200 and again.sums == expected_sums()
    assert rows(path) == (N, N)


async def test_a_finished_run_run_again_does_no_work_twice(tmp_path):
    path = tmp_path / "run.db"
    first = Sums()
    await build(path, first).run()
    assert first.sums == expected_sums()
    again = Sums()
    p = build(path, again)
    await p.run()
    assert first.checkpoints == [1]  # the last checkpoint's hook
    assert again.restored == N and again.seen == N  # nothing left to do
    assert again.sums == expected_sums()
    assert rows(path) == (N, N)
    assert p.resumed is not None and f"({N:,} events already done)" in p.resumed


async def test_a_changed_graph_is_refused_with_what_differs_or_starts_fresh(tmp_path):
    path = tmp_path / "run.db"
    await build(path, Sums()).run()
    p = gs.Pipeline(checkpoint=path)
    source = p.add(gs.from_iterable(range(N)), name="numbers")
    p.link(source, p.add(Sums(), name="totals"))
    p.link("totals", p.add(gs.consumer(list), name="rows"))
    with pytest.raises(ValueError) as caught:
        await p.run()
    said = str(caught.value)
    assert "stage 'totals' is new" in said and "stage 'sums' is gone" in said
    assert (
        "link numbers -> totals is new" in said
        and "was a consumer, now a" not in said
        and "checkpoint_mode='fresh'" in said
    )
    assert not p.running

    fresh = Sums()
    p = build(path, fresh, checkpoint_mode="fresh")
    await p.run()
    assert fresh.restored is None and fresh.sums == expected_sums()
    assert p.resumed is None
    assert rows(path) == (N, N)  # the rows of the run before were removed


async def test_what_cannot_be_saved_is_named_with_its_stage_and_attribute(tmp_path):
    class Locked(gs.Consumer):
        def init(self):
            self.lock = threading.Lock()
            self.seen = 0

        def handle_events(self, events):
            self.seen += len(events)

    p = gs.Pipeline(checkpoint=tmp_path / "run.db", checkpoint_every=3600)
    p.link(p.add(gs.from_iterable(range(10)), name="numbers"), p.add(Locked(), name="locked"))
    with pytest.raises(TypeError, match=r"stage 'locked': attribute 'lock' cannot be saved"):
        await p.run()


async def test_a_source_that_cannot_say_where_it_stands_is_refused(tmp_path):
    p = gs.Pipeline(checkpoint=tmp_path / "run.db")
    numbers = (n for n in range(10))
    p.link(p.add(gs.from_iterable(numbers), name="numbers"), p.add(gs.consumer(print)))
    with pytest.raises(ValueError, match=r"stage 'numbers': checkpoint= needs every source"):
        await p.run()


async def test_a_file_source_resumes_at_the_line_after_the_cut(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("".join(f"line {n}\n" for n in range(N)))
    path = tmp_path / "run.db"

    class Lines(gs.Consumer):
        def __init__(self):
            super().__init__()
            self.reached = anyio.Event()

        def init(self):
            self.lines = []

        async def handle_events(self, events):
            await anyio.sleep(0)
            self.lines.extend(events)
            if len(self.lines) >= 100:
                self.reached.set()

    def build_lines(sink):
        p = gs.Pipeline(checkpoint=path, checkpoint_every=3600)
        source = p.add(gs.from_iterable(open(text)), name="lines")  # noqa: SIM115
        p.link(source, p.add(sink, name="sink"), max_demand=10)
        return p

    first = Lines()
    await crash_after_a_checkpoint(build_lines(first), first.reached)
    again = Lines()
    await build_lines(again).run()
    assert again.lines == [f"line {n}\n" for n in range(N)]


async def test_a_flow_resumes_its_windows_and_results(tmp_path):
    path = tmp_path / "flow.db"
    events = [(t, t % 4) for t in range(400)]  # (event time, key)
    reached = anyio.Event()

    async def seen(event):
        await anyio.sleep(0)
        if event[0] >= 150:
            reached.set()
        return event

    def flow():
        return (
            gs.Flow.from_iterable(events)
            .map(seen, max_demand=10)
            .partition(
                key=lambda e: e[1], stages=2, window=gs.Window.fixed(50, time=lambda e: e[0])
            )
            .reduce(lambda: 0, lambda acc, e: acc + 1)
            .configure(checkpoint=path, checkpoint_every=3600)
        )

    want = sorted(map(repr, await flow().configure(checkpoint_mode="fresh").run_async()))
    path.unlink()
    first = flow()
    await crash_after_a_checkpoint(first.pipeline, reached)
    again = flow()
    got = await again.run_async()
    assert sorted(map(repr, got)) == want
    assert len(got) == len(want)  # (the results before the cut came back, once)
    assert again.pipeline.resumed is not None


def test_a_reducer_state_keeps_no_value_apart_from_a_value():
    import pickle

    r = Reducer("r", lambda: 0, lambda a, e: a + e, window=gs.Window.fixed(10, time=int))
    r.push([1, 2, 15])
    state = pickle.loads(pickle.dumps(r.saved()))
    assert state["watermark"] == 15
    fresh = Reducer("r", lambda: 0, lambda a, e: a + e, window=gs.Window.fixed(10, time=int))
    assert pickle.loads(pickle.dumps(fresh.saved()))["watermark"] is MISSING
    fresh.load(state)
    assert fresh.finish() == r.finish()


async def test_options_are_checked_and_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every must be a number of seconds"):
        gs.Pipeline(checkpoint=tmp_path / "x.db", checkpoint_every=0)
    with pytest.raises(ValueError, match="checkpoint_mode must be 'resume' or 'fresh'"):
        gs.Pipeline(checkpoint=tmp_path / "x.db", checkpoint_mode="again")
    with pytest.raises(TypeError, match="checkpoint must be a file name"):
        gs.Pipeline(checkpoint=3)
    p = gs.Pipeline()
    assert list(p.checkpoints.columns) == ["id", "time", "took", "size", "rows"]
    assert p.resumed is None
    with pytest.raises(ValueError, match=r"save_checkpoint\(\) needs Pipeline\(checkpoint"):
        await p.save_checkpoint()


async def test_to_sqlite_names_its_stage_when_a_row_does_not_fit(tmp_path):
    path = str(tmp_path / "out.db")
    p = gs.Pipeline()
    p.link(p.add(gs.from_iterable([(1, 2)])), p.add(gs.to_sqlite(path, "t"), name="out"))
    with pytest.raises(gs.PipelineError, match=r"stage 'out'.*not a dict"):
        await p.run()


async def test_resume_with_rewind_replays_from_the_checkpoint_with_the_fixed_code(tmp_path):
    path = tmp_path / "run.db"

    class Batches(gs.ProducerConsumer):
        """Counts what it sees before it checks the batch: a failing batch has been
        counted in part when it raises (what a plain resume would count twice)."""

        def __init__(self):
            super().__init__()
            self.bad = {400}

        def init(self):
            self.seen = 0

        def handle_events(self, events):
            for n in events:
                self.seen += 1
                if n in self.bad:
                    raise ValueError(f"cannot take {n} yet")
            return [{"n": n} for n in events]

    stage = Batches()
    source = Numbers(allowed=200)
    p = gs.Pipeline(checkpoint=path, checkpoint_every=3600, on_failure="pause")
    p.link(p.add(source, name="numbers"), p.add(stage, name="batches"), max_demand=20)
    p.link("batches", p.add(gs.to_sqlite(str(path), "rows"), name="rows"), max_demand=20)
    source.handle_info = lambda message: source._make()
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await settle(p)
        assert await p.save_checkpoint() == 1  # at 200
        source.allowed = N
        source.send("more")
        failure = await p.wait_paused("batches")
        assert failure.events and 400 in failure.events
        assert stage.seen > 400  # (counted in part: 400 and those before it in its batch)
        with pytest.raises(RuntimeError, match="is not paused"):
            p.resume("rows", rewind=True)
        stage.bad.clear()  # the fix
        p.resume("batches", rewind=True)
    assert stage.seen == N  # back to 200 at the checkpoint, then 400 more: none twice
    assert p.failures == {} and p.error is None
    assert rows(path) == (N, N)
    assert p.resumed == "resumed from checkpoint 1 (200 events already done)"


async def test_rewind_needs_a_checkpoint(tmp_path):
    def bad(events):
        raise ValueError("always")

    async def run(p):
        with pytest.raises(gs.PipelineError):  # (stopped while paused: a failure)
            await p.run()

    for options, said in [
        ({}, r"rewind=True\) needs Pipeline\(checkpoint"),
        ({"checkpoint": tmp_path / "run.db"}, "holds no complete checkpoint yet"),
    ]:
        p = gs.Pipeline(on_failure="pause", **options)
        p.link(p.add(gs.from_iterable(range(5))), p.add(gs.consumer(bad), name="sink"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, p)
            await p.wait_paused("sink")
            with pytest.raises(ValueError, match=said):
                p.resume("sink", rewind=True)
            assert p.paused  # (still paused: nothing changed)
            p.stop()
