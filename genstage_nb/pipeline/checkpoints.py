"""Durable runs: a pipeline's checkpoints in a SQLite file, and a run that resumes from
the last complete one (DESIGN.md section 9).

Every ``checkpoint_every`` seconds ``Checkpoints.take`` holds the sources, waits until
nothing moves, takes every stage's state in one step (``core/snapshots.py`` says what a
state holds and why that step is a consistent cut), lets the sources go on, and writes
the states in one SQLite transaction in a worker thread -- with the rows the
``gs.to_sqlite`` sinks received before the cut, so their tables hold every row exactly
once. A checkpoint's row is marked complete last, in that transaction: a crash at any
moment leaves the file with the checkpoints before it, never half of one.

A run of a pipeline with an existing file resumes: the same graph (stage names, kinds,
links) gets every stage's state back; another graph is refused with what differs, unless
``checkpoint_mode="fresh"``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sqlite3
import time
from typing import Any

import anyio
from anyio.lowlevel import checkpoint as yield_now

from ..core import snapshots
from ..core.sqlite_sink import SQLiteSink

log = logging.getLogger("genstage_nb")

MODES = ("resume", "fresh")
#: Complete checkpoints whose states are kept (the older ones keep their row only).
KEPT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gs_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS gs_checkpoints (
    id INTEGER PRIMARY KEY, time REAL, took REAL, size INTEGER, rows INTEGER,
    events TEXT, complete INTEGER);
CREATE TABLE IF NOT EXISTS gs_states (
    checkpoint INTEGER, stage TEXT, state BLOB, PRIMARY KEY (checkpoint, stage));
"""


def fingerprint(pipeline: Any) -> dict[str, Any]:
    """What makes two pipelines the same for a checkpoint: stage names and kinds, links."""
    graph = pipeline._graph
    stages = {name: data["stage"].kind for name, data in graph.nodes(data=True)}
    links = sorted(f"{a} -> {b}" for a, b in graph.edges())
    return {"stages": dict(sorted(stages.items())), "links": links}


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the graph that wrote a checkpoint and this one, in words."""
    said: list[str] = []
    old, new = saved["stages"], now["stages"]
    said += [f"stage {name!r} is new" for name in new if name not in old]
    said += [f"stage {name!r} is gone" for name in old if name not in new]
    said += [
        f"stage {name!r} was a {old[name]}, now a {new[name]}"
        for name in new
        if name in old and old[name] != new[name]
    ]
    said += [f"link {link} is new" for link in now["links"] if link not in saved["links"]]
    said += [f"link {link} is gone" for link in saved["links"] if link not in now["links"]]
    return said


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.executescript(_SCHEMA)
    return connection


class Checkpoints:
    """A pipeline's checkpoints: the file, the coordinator of each run, the records."""

    #: The columns of ``Pipeline.checkpoints`` before the per-stage counts.
    COLUMNS = ("id", "time", "took", "size", "rows")

    def __init__(self, pipeline: Any, path: str, every: float, mode: str) -> None:
        self.pipeline = pipeline
        self.path = path
        self.every = every
        self.mode = mode
        self.resumed: tuple[int, int] | None = None  # (checkpoint id, events done)
        self.skipped: list[tuple[float, str]] = []  # (time, why) of checkpoints not taken
        self._writing: anyio.Event | None = None  # set once the write at work is done
        self._taking = False  # a take at work (one at a time)
        self._last_id = 0

    # -- a run begins: resume, or start over -------------------------------------------

    def last_complete(self) -> int | None:
        """The id of the file's last complete checkpoint (None: there is none)."""
        if not os.path.exists(self.path):
            return None
        connection = _connect(self.path)
        try:
            found = connection.execute(
                "SELECT max(id) FROM gs_checkpoints WHERE complete = 1"
            ).fetchone()
        finally:
            connection.close()
        return found[0]

    def begin(self, rewind: bool = False) -> None:
        """Before a run's stages start: check the sources can say where they stand, then
        give every stage the state of the last complete checkpoint (if any; ``fresh``
        mode starts over, except for a ``rewind``, which always goes back to it)."""
        p = self.pipeline
        for name, proc in p._procs.items():
            why = getattr(proc.stage, "_gs_not_checkpointable", lambda: None)()
            if why is not None:
                raise ValueError(
                    f"stage {name!r}: checkpoint= needs every source to say where it stands: {why}"
                )
            if isinstance(proc.stage, SQLiteSink):
                proc.stage._gs_with_checkpoints = True
        now = fingerprint(p)
        connection = _connect(self.path)
        try:
            if self.mode == "fresh" and not rewind:
                self._start_over(connection, now)
                self.resumed = None
                return
            last = connection.execute(
                "SELECT id, events FROM gs_checkpoints WHERE complete = 1 ORDER BY id DESC"
            ).fetchone()
            saved = connection.execute("SELECT value FROM gs_meta WHERE key = 'graph'").fetchone()
            if last is None:
                self._start_over(connection, now)
                self.resumed = None
                return
            if saved is not None and json.loads(saved[0]) != now:
                said = "; ".join(differences(json.loads(saved[0]), now))
                raise ValueError(
                    f"Pipeline: checkpoint {self.path!r} was written by another pipeline "
                    f"({said}); run the same stages and links to resume, or pass "
                    f"checkpoint_mode='fresh' to start over"
                )
            states = dict(
                connection.execute(
                    "SELECT stage, state FROM gs_states WHERE checkpoint = ?", (last[0],)
                ).fetchall()
            )
        finally:
            connection.close()
        for name, proc in p._procs.items():
            snapshots.put(proc, pickle.loads(states[name]))
        self._last_id = last[0]
        self.resumed = (last[0], sum(json.loads(last[1]).get("(sources)", {}).values()))
        log.info("pipeline %s resumed from checkpoint %d", p._label, last[0])

    def _start_over(self, connection: sqlite3.Connection, now: dict[str, Any]) -> None:
        """No checkpoint (or a fresh start): an empty file for this graph, and the rows its
        to_sqlite sinks wrote before removed."""
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("DELETE FROM gs_states")
        connection.execute("DELETE FROM gs_checkpoints")
        connection.execute("INSERT OR REPLACE INTO gs_meta VALUES ('graph', ?)", (json.dumps(now),))
        connection.execute("COMMIT")
        self._last_id = 0
        for proc in self.pipeline._procs.values():
            sink = proc.stage
            if isinstance(sink, SQLiteSink) and os.path.exists(sink.path):
                out = sqlite3.connect(sink.path)
                try:
                    with out:
                        exists = out.execute(
                            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (sink.table,),
                        ).fetchone()
                        if exists:
                            out.execute(f'DELETE FROM "{sink.table}"')
                finally:
                    out.close()

    # -- during a run ------------------------------------------------------------------

    async def run(self, ended: anyio.Event) -> None:
        """Take a checkpoint every ``every`` seconds until the run ends."""
        while True:
            with anyio.move_on_after(self.every):
                await ended.wait()
            if ended.is_set():
                break
            await self.take()
        await self.written()

    async def written(self) -> None:
        """Wait for the last checkpoint's write to be done."""
        while self._writing is not None:
            await self._writing.wait()

    async def take(self, final: bool = False) -> int | None:
        """Take a checkpoint now: hold, settle, snapshot, let go, write. Returns its id,
        or None if it could not be taken (a stage paused or failed, a stop, or nothing at
        rest within ``every`` seconds: it is taken at the next tick)."""
        p = self.pipeline
        await self.written()  # (one write at a time, in their order)
        if p._starting is not None or self._taking:
            return None  # (not started yet, or another take at work: one at a time)
        self._taking = True
        try:
            return await self._take(final)
        finally:
            self._taking = False

    async def _take(self, final: bool) -> int | None:
        p = self.pipeline
        procs = list(p._procs.values())
        held: list = []  # the sources this checkpoint holds (set accumulating)
        try:
            why = await self._settle(procs, final, held)
            if why is not None:
                self.skipped.append((time.time(), why))
                log.info("pipeline %s: checkpoint skipped: %s", p._label, why)
                return None
            began = time.perf_counter()
            states, rows, events = self._cut(procs)
        finally:
            for proc in held:
                proc.post(proc._on_demand_mode, "forward")
        self._last_id += 1
        number = self._last_id
        record = (number, time.time(), began, events, states, rows)
        if final:  # (the stages have ended: their hooks are called here)
            await anyio.to_thread.run_sync(self._write, *record)
            for proc in procs:
                await proc._hook(proc.stage.handle_checkpoint, number)
        else:
            self._writing = anyio.Event()
            p._tg.start_soon(self._write_in_thread, record)
        return number

    async def _settle(self, procs: list, final: bool, held: list) -> str | None:
        """Hold every running source (its demand, and what it makes, kept as the
        accumulate mode keeps them), each between two of its steps (none is held in
        the middle of one), then wait until no stage has anything moving
        (None), or say why not. ``held`` gets the sources held."""
        p = self.pipeline
        deadline = time.perf_counter() + max(1.0, self.every)
        to_hold = [
            proc
            for proc in procs
            if proc.kind == "producer" and proc.running and not proc.accumulating
        ]
        spins = 0
        while True:
            for proc in list(to_hold):
                if snapshots.between_steps(proc):
                    proc.accumulating = True
                    held.append(proc)
                    to_hold.remove(proc)
            busy = [(proc.name, why) for proc in procs if (why := snapshots.unsettled(proc))]
            if not busy and not to_hold:
                return None
            name, why = busy[0] if busy else (to_hold[0].name, "is at work")
            if why in ("paused", "failed") or (p.stopping and not final):
                return f"stage {name!r} is {why}"
            if time.perf_counter() > deadline:
                return f"stage {name!r} {why} (waited {max(1.0, self.every):g} s)"
            spins += 1
            await (yield_now() if spins < 64 else anyio.sleep(0.001))

    def _cut(self, procs: list) -> tuple[dict[str, bytes], list, dict[str, Any]]:
        """Every stage's state now, pickled, and the to_sqlite rows before the cut."""
        states: dict[str, bytes] = {}
        rows: list[tuple[SQLiteSink, list]] = []
        sources: dict[str, int] = {}
        stages: dict[str, int] = {}
        for proc in procs:
            state = snapshots.take(proc)
            states[proc.name] = _pickled(proc.name, state)
            counts = proc.counters
            if proc.kind == "producer":
                sources[proc.name] = counts.made
                stages[proc.name] = counts.made
            else:
                stages[proc.name] = counts.handled
            if isinstance(proc.stage, SQLiteSink) and proc.stage.pending:
                rows.append((proc.stage, proc.stage.pending))
                proc.stage.pending = []
        return states, rows, {"(sources)": sources, **stages}

    async def _write_in_thread(self, record: tuple) -> None:
        try:
            await anyio.to_thread.run_sync(self._write, *record)
        finally:
            done, self._writing = self._writing, None
            if done is not None:
                done.set()
        self._completed(record[0])

    def _write(
        self,
        number: int,
        at: float,
        began: float,
        events: dict[str, Any],
        states: dict[str, bytes],
        rows: list,
    ) -> None:
        """One checkpoint in one transaction; its row is marked complete last."""
        connection = _connect(self.path)
        try:
            schemas: dict[str, str] = {}
            for sink, _ in rows:
                if os.path.abspath(sink.path) == os.path.abspath(self.path):
                    schemas[sink.path] = "main"
                elif sink.path not in schemas:
                    schemas[sink.path] = f"sink{len(schemas)}"
                    connection.execute("ATTACH DATABASE ? AS ?", (sink.path, schemas[sink.path]))
            connection.execute("BEGIN IMMEDIATE")
            size = sum(len(state) for state in states.values())
            written = sum(sink.write(connection, schemas[sink.path], r) for sink, r in rows)
            connection.execute(
                "INSERT OR REPLACE INTO gs_checkpoints VALUES (?, ?, NULL, ?, ?, ?, 0)",
                (number, at, size, written, json.dumps(events)),
            )
            connection.executemany(
                "INSERT OR REPLACE INTO gs_states VALUES (?, ?, ?)",
                [(number, name, state) for name, state in states.items()],
            )
            connection.execute("DELETE FROM gs_states WHERE checkpoint <= ?", (number - KEPT,))
            took = time.perf_counter() - began
            connection.execute(
                "UPDATE gs_checkpoints SET complete = 1, took = ? WHERE id = ?", (took, number)
            )
            connection.execute("COMMIT")
        finally:
            connection.close()

    def _completed(self, number: int) -> None:
        """Checkpoint ``number`` is saved: every running stage's ``handle_checkpoint``."""
        for proc in self.pipeline._procs.values():
            if proc.running and not proc.stopped:
                proc.post(proc._on_checkpoint, number)

    # -- what a person reads -----------------------------------------------------------

    def frame(self) -> Any:
        """``Pipeline.checkpoints``: one row per complete checkpoint."""
        import pandas as pd

        found = []
        if os.path.exists(self.path):
            connection = _connect(self.path)
            try:
                found = connection.execute(
                    "SELECT id, time, took, size, rows, events FROM gs_checkpoints "
                    "WHERE complete = 1 ORDER BY id"
                ).fetchall()
            finally:
                connection.close()
        records = []
        for number, at, took, size, rows, events in found:
            counts = json.loads(events)
            counts.pop("(sources)", None)
            at = pd.Timestamp(at, unit="s")
            records.append(dict(zip(self.COLUMNS, (number, at, took, size, rows), strict=True)))
            records[-1].update(  # (a stage named as a column gets its own)
                {f"{k} (stage)" if k in self.COLUMNS else k: v for k, v in counts.items()}
            )
        stages = [k for k in records[-1] if k not in self.COLUMNS] if records else []
        return pd.DataFrame(records, columns=[*self.COLUMNS, *stages])

    def describe(self) -> str | None:
        """ "resumed from checkpoint N (... events already done)", or None."""
        if self.resumed is None:
            return None
        number, done = self.resumed
        return f"resumed from checkpoint {number} ({done:,} events already done)"


def _pickled(name: str, state: dict[str, Any]) -> bytes:
    """``state`` pickled; what cannot be is named, with the stage."""
    try:
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        user = state["user"]
        if isinstance(user, dict):
            for attribute, value in user.items():
                try:
                    pickle.dumps(value)
                except Exception as inner:
                    raise TypeError(
                        f"stage {name!r}: attribute {attribute!r} cannot be saved in a "
                        f"checkpoint ({type(inner).__name__}: {inner}); set it up in "
                        f"__init__ instead of init(), or define snapshot() and restore() to "
                        f"save what can be"
                    ) from None
        raise TypeError(
            f"stage {name!r}: its state cannot be saved in a checkpoint "
            f"({type(exc).__name__}: {exc}); define snapshot() and restore() to save what "
            f"can be"
        ) from None


__all__ = ["MODES", "Checkpoints", "differences", "fingerprint"]
