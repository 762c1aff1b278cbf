"""Appending to the ledger and reading it back, inside the caller's transaction or its own."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select

from audit.chain import canonical_json, chain_hash, record_body, utcnow
from audit.db import READ_ONLY
from audit.models import LedgerHead, LedgerRecord

_records = LedgerRecord.__table__
_head = LedgerHead.__table__
_NO_INDEX = dict.fromkeys(("decision_id", "subject", "domain", "object", "action", "allowed"))


@dataclass(frozen=True)
class Entry:
    """What a caller wants recorded: a kind (`decision`, `policy.change`, ...) and its data.

    `index` fills the searchable columns (decision_id, subject, domain, object,
    action, allowed); the chain proves only `data`.
    """

    kind: str
    data: dict
    index: dict = field(default_factory=dict)

    @cached_property
    def data_json(self) -> str:
        """The canonical JSON of `data`; computed once, ideally before the head lock is taken."""
        return canonical_json(self.data)


@dataclass(frozen=True)
class Appended:
    """Where an entry landed in the chain."""

    seq: int
    hash: str
    time: datetime


class Ledger:
    """The append-only, hash-chained audit ledger stored through `engine`."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def append(self, conn: Connection, entries: Iterable[Entry], head: tuple[int, str] | None = None
               ) -> list[Appended]:
        """Chain `entries` after the head inside `conn`'s open transaction.

        The head row is locked until that transaction ends, so concurrent writers
        queue behind it and the chain never forks; the records are durable only
        once the caller commits. Pass `head` when `lock_head` already ran in this
        transaction.
        """
        entries = list(entries)
        if not entries:
            return []
        seq, head_hash = head if head is not None else self.lock_head(conn)
        now = utcnow()
        rows, appended = [], []
        for entry in entries:
            seq += 1
            body = record_body(seq, entry.kind, now, entry.data, entry.data_json)
            record_hash = chain_hash(head_hash, body)
            rows.append({**_NO_INDEX, **entry.index, "seq": seq, "prev_hash": head_hash, "hash": record_hash,
                         "kind": entry.kind, "created_at": now, "body": body})
            appended.append(Appended(seq, record_hash, now))
            head_hash = record_hash
        _insert_records(conn, rows)
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        conn.exec_driver_sql(f"UPDATE ledger_head SET seq = {mark}, hash = {mark} WHERE id = 1", (seq, head_hash))
        return appended

    @staticmethod
    def lock_head(conn: Connection) -> tuple[int, str]:
        """Return the head's (seq, hash), locked until `conn`'s transaction ends (Postgres row lock;
        on SQLite the transaction already holds the write lock)."""
        # Plain SQL on the hot path: building and caching a Core statement per batch
        # costs more CPU than the round trip itself.
        lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
        return tuple(conn.exec_driver_sql(f"SELECT seq, hash FROM ledger_head WHERE id = 1{lock}").one())

    def record(self, *entries: Entry) -> list[Appended]:
        """Append `entries` in a transaction of their own and return once it is committed."""
        with self.engine.begin() as conn:
            return self.append(conn, entries)

    def head(self) -> tuple[int, str]:
        """Return the (seq, hash) the head row names."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return tuple(conn.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == 1)).one())

    def records(self, conn: Connection, after_seq: int = 0, upto_seq: int | None = None, *,
                with_columns: bool = False) -> Iterator[tuple]:
        """Yield (seq, prev_hash, hash, kind, body) of rows with after_seq < seq <= upto_seq, in seq order.

        `with_columns` adds the columns that repeat the body (created_at and the search
        columns), for verification to hold them to it. Streams through the driver's own
        cursor (a server-side one on Postgres): verification reads every row.
        """
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        extra = ""
        if with_columns:
            # created_at as the text the hashed body holds, so verification compares strings.
            created = ("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                       if conn.dialect.name == "postgresql" else "replace(created_at, ' ', 'T') || 'Z'")
            extra = ", " + ", ".join((created, *REPEATED_COLUMNS[1:]))
        sql = (f"SELECT seq, prev_hash, hash, kind, body{extra} FROM ledger_records WHERE seq > {mark}"
               + (f" AND seq <= {mark}" if upto_seq is not None else "") + " ORDER BY seq")
        params = (after_seq,) if upto_seq is None else (after_seq, upto_seq)
        dbapi = conn.connection.dbapi_connection
        if conn.dialect.name == "postgresql":
            cursor = dbapi.cursor(name="warden_ledger_scan")
            cursor.itersize = 20_000
        else:
            cursor = dbapi.cursor()
        try:
            cursor.execute(sql, params)
            while batch := cursor.fetchmany(20_000):
                yield from batch
        finally:
            cursor.close()


# Columns that repeat what the hashed body says (for search and retention).
REPEATED_COLUMNS = ("created_at", "decision_id", "subject", "domain", "object", "action", "allowed")
_COLUMNS = ("seq", "prev_hash", "hash", "kind", "created_at", "body",
            "decision_id", "subject", "domain", "object", "action", "allowed")


def _insert_records(conn: Connection, rows: list[dict]) -> None:
    # The hot path of every decision: on Postgres a COPY into the table is several
    # times cheaper than a multi-row INSERT through the ORM's parameter machinery.
    if conn.dialect.name == "postgresql" and len(rows) > 1:
        cursor = conn.connection.dbapi_connection.cursor()
        with cursor.copy(f"COPY ledger_records ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in _COLUMNS])
        cursor.close()
    else:
        conn.execute(insert(_records), rows)
