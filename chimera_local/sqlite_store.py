"""SQLite adapter of the store ports: the embedded default, state under .chimera/.

The same single-table layout as DynamoDB (pk, sk, doc, rev, ttl, gsi1pk, gsi1sk, num, attrs),
every multi-item write one IMMEDIATE transaction, and the same 400 KB item guard (in kv).
After a transaction that wrote outbox items, `on_outbox` runs: the local relay to the bus.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from chimera.adapters.kv import ABSENT, Add, KeyValueStore, Put, Write, _guard
from chimera.domain.errors import ConflictError, ValidationFailedError
from chimera.ports import BlobStore

SCHEMA_VERSION = 2
_TABLE = """
CREATE TABLE IF NOT EXISTS items (
  pk     TEXT NOT NULL,
  sk     TEXT NOT NULL,
  doc    TEXT NOT NULL,
  rev    INTEGER,
  ttl    INTEGER,
  gsi1pk TEXT,
  gsi1sk TEXT,
  num    REAL,
  attrs  TEXT,
  PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
"""
_INDEX = "CREATE INDEX IF NOT EXISTS gsi1 ON items (gsi1pk, gsi1sk) WHERE gsi1pk IS NOT NULL"
_V1_COLUMNS = ("gsi1pk TEXT", "gsi1sk TEXT", "num REAL", "attrs TEXT")


class SqliteStore(KeyValueStore):
    """One file, WAL journal; every multi-item write is one IMMEDIATE transaction."""

    def __init__(
        self,
        path: str | Path,
        blobs: BlobStore,
        on_outbox: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(blobs)
        self.path = str(path)
        self.on_outbox = on_outbox
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate(self._conn())

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Create the table, or bring a state.db written before the index up to date."""
        conn.executescript(_TABLE)
        have = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        for column in _V1_COLUMNS:
            if column.split()[0] not in have:
                try:
                    conn.execute(f"ALTER TABLE items ADD COLUMN {column}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise
        conn.execute(_INDEX)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- primitives -----------------------------------------------------------------------
    def _get(self, pk: str, sk: str) -> str | None:
        row = (
            self._conn()
            .execute("SELECT doc FROM items WHERE pk = ? AND sk = ?", (pk, sk))
            .fetchone()
        )
        return None if row is None else row[0]

    def _get_num(self, pk: str, sk: str) -> float:
        row = (
            self._conn()
            .execute("SELECT num FROM items WHERE pk = ? AND sk = ?", (pk, sk))
            .fetchone()
        )
        return float(row[0]) if row is not None and row[0] is not None else 0.0

    def _query(
        self,
        pk: str,
        *,
        index: bool = False,
        prefix: str | None = None,
        between: tuple[str, str] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[str]:
        key, sort = ("gsi1pk", "gsi1sk") if index else ("pk", "sk")
        sql = f"SELECT doc FROM items WHERE {key} = ?"
        args: list[object] = [pk]
        if prefix is not None:
            sql += f" AND substr({sort}, 1, ?) = ?"
            args += [len(prefix), prefix]
        if between is not None:
            sql += f" AND {sort} BETWEEN ? AND ?"
            args += list(between)
        sql += f" ORDER BY {sort} {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [row[0] for row in self._conn().execute(sql, args).fetchall()]

    def _write(self, writes: Sequence[Write]) -> None:
        if len(writes) > 100:
            raise ValidationFailedError("transaction", f"{len(writes)} items, over 100")
        _guard(writes)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for w in writes:
                if isinstance(w, Add):
                    self._add(conn, w)
                    continue
                self._check(conn, w)
                conn.execute(
                    "INSERT OR REPLACE INTO items (pk, sk, doc, rev, ttl, gsi1pk, gsi1sk, attrs) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    self._row(w),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if self.on_outbox is not None and any(
            isinstance(w, Put) and w.pk.startswith("OUTBOX#") for w in writes
        ):
            self.on_outbox()

    @staticmethod
    def _row(put: Put) -> tuple[object, ...]:
        gsi_pk, gsi_sk = put.gsi1 if put.gsi1 is not None else (None, None)
        attrs = json.dumps(dict(put.attrs)) if put.attrs else None
        return (put.pk, put.sk, put.doc, put.rev, put.ttl, gsi_pk, gsi_sk, attrs)

    @staticmethod
    def _add(conn: sqlite3.Connection, add: Add) -> None:
        row = conn.execute(
            "SELECT num FROM items WHERE pk = ? AND sk = ?", (add.pk, add.sk)
        ).fetchone()
        current = float(row[0]) if row is not None and row[0] is not None else 0.0
        if add.ceiling is not None and current + add.delta > add.ceiling:
            raise ConflictError(
                f"{add.pk}/{add.sk}: {current:g} + {add.delta:g} would pass {add.ceiling:g}"
            )
        conn.execute(
            "INSERT INTO items (pk, sk, doc, num) VALUES (?, ?, '{}', ?) "
            "ON CONFLICT (pk, sk) DO UPDATE SET num = coalesce(num, 0) + excluded.num",
            (add.pk, add.sk, add.delta),
        )

    @staticmethod
    def _check(conn: sqlite3.Connection, put: Put) -> None:
        if put.condition is None:
            return
        row = conn.execute(
            "SELECT rev FROM items WHERE pk = ? AND sk = ?", (put.pk, put.sk)
        ).fetchone()
        if put.condition == ABSENT:
            if row is not None:
                raise ConflictError(f"{put.pk}/{put.sk} already exists")
        elif row is None or row[0] != put.condition:
            raise ConflictError(f"{put.pk}/{put.sk} changed (expected revision {put.condition})")

    def _put_if_absent(self, put: Put) -> bool:
        _guard([put])
        cur = self._conn().execute(
            "INSERT OR IGNORE INTO items (pk, sk, doc, rev, ttl, gsi1pk, gsi1sk, attrs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            self._row(put),
        )
        return cur.rowcount == 1

    def _delete(self, pk: str, sk: str) -> None:
        self._conn().execute("DELETE FROM items WHERE pk = ? AND sk = ?", (pk, sk))
