"""SQLite adapter of the store ports: the embedded default, state under .chimera/.

The same single-table layout as DynamoDB (pk, sk, doc, rev, ttl, gsi1pk, gsi1sk, num, attrs),
every multi-item write one IMMEDIATE transaction, and the same 400 KB item guard (in kv).
After a transaction that wrote outbox items, `on_outbox` runs: the local relay to the bus.

A damaged file is refused when the store opens: `PRAGMA integrity_check` (up to
FULL_CHECK_BYTES, `quick_check` beyond) must answer ok. integrity_check also compares the
gsi1 index with the table, which quick_check skips: of 200 random overwrites of a
state.db, 38 passed quick_check, failed integrity_check and left every query answering, and
integrity_check cost 0.21 s against quick_check's 0.07 s on 47 MB (bench/state_check_bench.py). Every sqlite3 error is translated: a damaged or foreign file
is a CorruptStateError naming it and what to do; a locked, full or unreadable one is
UnavailableError, also naming it. A document that is not valid UTF-8 reads as unreadable
(named and skipped by the reader, kv), not as an error of the whole query.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from chimera.adapters.kv import (
    ABSENT,
    Add,
    KeyValueStore,
    Put,
    Query,
    Row,
    Versioned,
    Write,
    unreadable,
)
from chimera.domain.errors import ConflictError, CorruptStateError, UnavailableError
from chimera.ports import BlobStore

SCHEMA_VERSION = 2
FULL_CHECK_BYTES = 256 * 2**20  # integrity_check up to here (~1 s), quick_check above
log = logging.getLogger(__name__)
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
_COLUMNS = "items (pk, sk, doc, rev, ttl, gsi1pk, gsi1sk, attrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT = f"INSERT INTO {_COLUMNS}"
_REPLACE = f"INSERT OR REPLACE INTO {_COLUMNS}"
_INDEX = "CREATE INDEX IF NOT EXISTS gsi1 ON items (gsi1pk, gsi1sk) WHERE gsi1pk IS NOT NULL"
_V1_COLUMNS = ("gsi1pk TEXT", "gsi1sk TEXT", "num REAL", "attrs TEXT")
# The first layout kept runs under RUNS/<id>, KPIs under KPIS#<agent>/<job> and costs under
# COSTS/<at#id>, with no index. Move them to today's keys, filling gsi1 from the documents.
# A run left running then holds an optimizer state of the first format, which today's
# optimizers do not read: it is closed as failed, with the reason, and the next cycle starts
# afresh from the live genome (agents, genomes, aliases and generations keep their keys).
_MOVE_V1_ROWS = (
    """INSERT OR IGNORE INTO items (pk, sk, doc, rev, gsi1pk, gsi1sk)
       SELECT 'RUN#' || sk, 'RUN',
              CASE json_extract(doc, '$.status') WHEN 'running' THEN json_set(
                  doc, '$.status', 'failed', '$.revision', 1,
                  '$.decision', 'failed: stored by an older Chimera; start a new run')
              ELSE json_set(doc, '$.revision', 1) END,
              1,
              'RUNS#' || json_extract(doc, '$.agent_id'),
              replace(json_extract(doc, '$.status'), 'running', 'failed') || '#' ||
                  json_extract(doc, '$.started_at') || '#' || sk
       FROM items WHERE pk = 'RUNS'""",
    "DELETE FROM items WHERE pk = 'RUNS'",
    """INSERT OR IGNORE INTO items (pk, sk, doc, ttl, gsi1pk, gsi1sk)
       SELECT 'KPI#' || substr(pk, 6), 'JOB#' || sk, doc, ttl,
              'KPI#' || substr(pk, 6) || '#v' ||
                  printf('%08d', json_extract(doc, '$.genome_version')),
              json_extract(doc, '$.recorded_at') || '#' || sk
       FROM items WHERE pk LIKE 'KPIS#%'""",
    "DELETE FROM items WHERE pk LIKE 'KPIS#%'",
    """INSERT OR IGNORE INTO items (pk, sk, doc, gsi1pk, gsi1sk)
       SELECT 'COST#' || json_extract(doc, '$.run_id'), json_extract(doc, '$.entry_id'), doc,
              'COSTS#' || substr(json_extract(doc, '$.at'), 1, 7), sk
       FROM items WHERE pk = 'COSTS'""",
    "DELETE FROM items WHERE pk = 'COSTS'",
)


class SqliteStore(KeyValueStore):
    """One file, WAL journal; every multi-item write is one IMMEDIATE transaction."""

    # SQLite has no per-transaction item limit (DynamoDB's is 100): put_kpis commits a whole
    # IngestRequest (1,000 records at most) with its rollups as one transaction.
    kpi_txn_items = 2000

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
        with self._translated():
            conn = self._conn()
            self._verify(conn)
            self._migrate(conn)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.text_factory = bytes  # decoded per column: a damaged doc must not fail a query
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def _advice(self) -> str:
        return (
            f"move it aside (mv {self.path} {self.path}.corrupt; the next `chimera run` starts "
            "a fresh store and rediscovers the agents) or restore it from a backup"
        )

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """sqlite3 errors as Chimera's, naming the file (nothing above the adapter sees one)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:  # also OperationalError, its subclass
            name = getattr(exc, "sqlite_errorname", "") or ""
            if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
                raise CorruptStateError(
                    self.path,
                    f"the database is damaged or not a database ({exc}); " + self._advice(),
                ) from exc
            if name.startswith(
                ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN")
                + ("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_NOMEM")
            ):
                raise UnavailableError(f"{self.path}: {exc} ({name})") from exc
            raise

    def _verify(self, conn: sqlite3.Connection) -> None:
        """Refuse a damaged file before anything reads or writes it (see the module doc)."""
        if self.path == ":memory:":
            return
        size = Path(self.path).stat().st_size if Path(self.path).exists() else 0
        pragma = "integrity_check" if size <= FULL_CHECK_BYTES else "quick_check"
        found = [_text(row[0]) for row in conn.execute(f"PRAGMA {pragma}(5)").fetchall()]
        if found != ["ok"]:
            raise CorruptStateError(
                self.path,
                f"the database fails PRAGMA {pragma} ({'; '.join(found)[:500]}); " + self._advice(),
            )

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Create the table, or bring a state.db written before the index up to date."""
        conn.executescript(_TABLE)
        have = {_text(row[1]) for row in conn.execute("PRAGMA table_info(items)")}
        for column in _V1_COLUMNS:
            if column.split()[0] not in have:
                try:
                    conn.execute(f"ALTER TABLE items ADD COLUMN {column}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise
        conn.execute(_INDEX)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MOVE_V1_ROWS:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- primitives -----------------------------------------------------------------------
    def _get(self, pk: str, sk: str) -> str | None:
        with self._translated():
            row = (
                self._conn()
                .execute("SELECT doc FROM items WHERE pk = ? AND sk = ?", (pk, sk))
                .fetchone()
            )
        return None if row is None else _doc(row[0])

    def _get_num(self, pk: str, sk: str) -> float:
        with self._translated():
            row = (
                self._conn()
                .execute("SELECT num FROM items WHERE pk = ? AND sk = ?", (pk, sk))
                .fetchone()
            )
        return float(row[0]) if row is not None and row[0] is not None else 0.0

    def _run_query(self, q: Query) -> list[Row]:
        key, sort = ("gsi1pk", "gsi1sk") if q.index else ("pk", "sk")
        sql = f"SELECT pk, sk, doc FROM items WHERE {key} = ?"
        args: list[object] = [q.pk]
        if q.prefix is not None:
            sql += f" AND substr({sort}, 1, ?) = ?"
            args += [len(q.prefix), q.prefix]
        if q.between is not None:
            sql += f" AND {sort} BETWEEN ? AND ?"
            args += list(q.between)
        sql += f" ORDER BY {sort} {'DESC' if q.newest_first else 'ASC'}"
        if q.limit is not None:
            sql += " LIMIT ?"
            args.append(q.limit)
        with self._translated():
            found = self._conn().execute(sql, args).fetchall()
        return [Row(_text(pk), _text(sk), _doc(doc)) for pk, sk, doc in found]

    def _get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Versioned]:
        by_pk: dict[str, list[str]] = {}
        for pk, sk in keys:
            by_pk.setdefault(pk, []).append(sk)
        out: dict[tuple[str, str], Versioned] = {}
        with self._translated():
            conn = self._conn()
            for pk, sks in by_pk.items():  # one indexed query per partition
                marks = ",".join("?" * len(sks))
                found = conn.execute(
                    f"SELECT sk, doc, rev FROM items WHERE pk = ? AND sk IN ({marks})", (pk, *sks)
                ).fetchall()
                for sk, doc, rev in found:
                    out[(pk, _text(sk))] = Versioned(_doc(doc), rev)
        return out

    def _commit(self, writes: Sequence[Write]) -> None:
        with self._translated():
            self._transact(writes)

    def _transact(self, writes: Sequence[Write]) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh: list[Put] = []  # puts that must be absent: one INSERT each, run together
            for w in writes:
                if isinstance(w, Put) and w.condition == ABSENT:
                    fresh.append(w)
                    continue
                self._insert_all(conn, fresh)
                fresh = []
                if isinstance(w, Add):
                    self._add(conn, w)
                    continue
                self._check(conn, w)
                conn.execute(_REPLACE, self._row(w))
            self._insert_all(conn, fresh)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # keep the first error, not the rollback's
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if self.on_outbox is not None and any(
            isinstance(w, Put) and w.pk.startswith("OUTBOX#") for w in writes
        ):
            try:
                self.on_outbox()
            except Exception:  # the write committed; its events stay in the outbox for later
                log.exception("outbox relay failed; events stay pending")

    def _insert_all(self, conn: sqlite3.Connection, puts: Sequence[Put]) -> None:
        """INSERT puts that must be absent: the key's uniqueness is their condition."""
        if not puts:
            return
        try:
            conn.executemany(_INSERT, [self._row(p) for p in puts])
        except sqlite3.IntegrityError:
            first = f"{puts[0].pk}/{puts[0].sk}" + (", ..." if len(puts) > 1 else "")
            raise ConflictError(f"{first}: an item that must be new already exists") from None

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

    def _insert(self, put: Put) -> bool:
        with self._translated():
            cur = self._conn().execute(
                "INSERT OR IGNORE INTO items (pk, sk, doc, rev, ttl, gsi1pk, gsi1sk, attrs) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self._row(put),
            )
        return cur.rowcount == 1

    def _delete(self, pk: str, sk: str) -> None:
        with self._translated():
            self._conn().execute("DELETE FROM items WHERE pk = ? AND sk = ?", (pk, sk))


def _text(value: object) -> str:
    """A key or a pragma's answer (bytes under text_factory=bytes), damage shown, not raised."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _doc(value: object) -> str:
    """A stored document, or `unreadable(...)` if its bytes are not UTF-8 (a damaged page)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return unreadable(f"not UTF-8 text (byte {exc.start}: damaged?)")
    if isinstance(value, str):
        return value
    return unreadable(f"doc is {type(value).__name__}, not text")
