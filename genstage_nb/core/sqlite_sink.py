"""``gs.to_sqlite``: a consumer that writes its events as rows of a SQLite table, exactly
once when the pipeline has checkpoints (DESIGN.md section 9)."""

from __future__ import annotations

import sqlite3
from typing import Any

from .stage import Consumer


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteSink(Consumer):
    """``gs.to_sqlite``'s stage. Rows wait in ``pending`` until they are committed: by
    the checkpoint's own transaction in a pipeline with ``checkpoint=`` (``write``),
    else by the stage itself after each batch."""

    _default_name = "to_sqlite"

    def __init__(self, path: str, table: str, **options: Any) -> None:
        if not isinstance(path, str) or not path:
            raise TypeError(f"to_sqlite: path must be a file name, got {path!r}")
        if not isinstance(table, str) or not table:
            raise TypeError(f"to_sqlite: table must be a table name, got {table!r}")
        super().__init__(**options)
        self.path = path
        self.table = table
        self.pending: list = []
        self._columns: list[str] | None = None
        #: Set by the pipeline's checkpoints: rows go in their transactions.
        self._gs_with_checkpoints = False

    def init(self) -> None:
        self.pending = []

    def handle_events(self, events: list) -> None:
        self.pending.extend(events)
        if not self._gs_with_checkpoints:
            connection = sqlite3.connect(self.path)
            try:
                with connection:
                    rows, self.pending = self.pending, []
                    self.write(connection, "main", rows)
            finally:
                connection.close()

    def snapshot(self) -> Any:
        return None  # (its rows are committed with the checkpoint: write)

    def restore(self, state: Any) -> None:
        self.pending = []

    def write(self, connection: sqlite3.Connection, schema: str, rows: list) -> int:
        """Write ``rows`` with ``connection`` (in its open transaction) into the table of
        database ``schema``; make the table from the first dict's keys if it is missing.
        Returns how many rows were written."""
        if not rows:
            return 0
        name = f"{_quoted(schema)}.{_quoted(self.table)}"
        columns = self._table_columns(connection, schema, rows[0])
        marks = ", ".join("?" * len(columns))
        listed = ", ".join(_quoted(c) for c in columns)
        try:
            values = [
                tuple(row[c] for c in columns) if isinstance(row, dict) else tuple(row)
                for row in rows
            ]
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"stage {self.name!r}: to_sqlite takes dicts (column -> value) or tuples in "
                f"the order of the columns of {self.table!r} {columns}; a row did not fit: "
                f"{exc!r}"
            ) from None
        connection.executemany(f"INSERT INTO {name} ({listed}) VALUES ({marks})", values)
        return len(rows)

    def _table_columns(self, connection: sqlite3.Connection, schema: str, first: Any) -> list:
        if self._columns is not None:
            return self._columns
        info = connection.execute(
            f"PRAGMA {_quoted(schema)}.table_info({_quoted(self.table)})"
        ).fetchall()
        if info:
            self._columns = [row[1] for row in info]
        elif isinstance(first, dict):
            self._columns = [str(key) for key in first]
            listed = ", ".join(_quoted(c) for c in self._columns)
            connection.execute(f"CREATE TABLE {_quoted(schema)}.{_quoted(self.table)} ({listed})")
        else:
            raise ValueError(
                f"stage {self.name!r}: table {self.table!r} does not exist in {self.path!r} "
                f"and the first event is not a dict (whose keys would name its columns): "
                f"{first!r}"
            )
        return self._columns


def to_sqlite(path: str, table: str, **options: Any) -> Consumer:
    """A consumer that writes each event as a row of ``table`` in the SQLite file ``path``
    (a dict, column -> value, or a tuple in the table's column order; a missing table is
    made from the first dict's keys).

    In a pipeline with ``checkpoint=``, its rows are written in each checkpoint's own
    transaction, so the table holds every row exactly once across crashes and resumes
    (rows after the last complete checkpoint are written by the next one, or at the end of
    the run). Without checkpoints, it commits after each batch.

    >>> import os, sqlite3, tempfile, genstage_nb as gs
    >>> path = os.path.join(tempfile.mkdtemp(), "out.db")
    >>> p = gs.Pipeline()
    >>> rows = [{"n": n, "square": n * n} for n in range(4)]
    >>> _ = p.link(p.add(gs.from_iterable(rows)), p.add(gs.to_sqlite(path, "squares")))
    >>> p.run_sync()
    >>> sqlite3.connect(path).execute("SELECT sum(square) FROM squares").fetchone()
    (14,)
    """
    return SQLiteSink(path, table, **options)


__all__ = ["SQLiteSink", "to_sqlite"]
