"""SQLite adapter of the Store port: the embedded default, state under .chimera/."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from chimera.adapters.kv import ABSENT, KeyValueStore, Put
from chimera.domain.errors import ConflictError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
  pk  TEXT NOT NULL,
  sk  TEXT NOT NULL,
  doc TEXT NOT NULL,
  rev INTEGER,
  ttl INTEGER,
  PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
"""


class SqliteStore(KeyValueStore):
    """One file, WAL journal; every multi-item write is one IMMEDIATE transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _get(self, pk: str, sk: str) -> str | None:
        row = (
            self._conn()
            .execute("SELECT doc FROM items WHERE pk = ? AND sk = ?", (pk, sk))
            .fetchone()
        )
        return None if row is None else row[0]

    def _query(self, pk: str) -> list[str]:
        rows = (
            self._conn().execute("SELECT doc FROM items WHERE pk = ? ORDER BY sk", (pk,)).fetchall()
        )
        return [r[0] for r in rows]

    def _write(self, puts: Sequence[Put]) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for put in puts:
                self._check(conn, put)
                conn.execute(
                    "INSERT OR REPLACE INTO items (pk, sk, doc, rev, ttl) VALUES (?, ?, ?, ?, ?)",
                    (put.pk, put.sk, put.doc, put.rev, put.ttl),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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
        cur = self._conn().execute(
            "INSERT OR IGNORE INTO items (pk, sk, doc, rev, ttl) VALUES (?, ?, ?, ?, ?)",
            (put.pk, put.sk, put.doc, put.rev, put.ttl),
        )
        return cur.rowcount == 1
