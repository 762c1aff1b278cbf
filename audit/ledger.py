"""Appending to the ledger and reading it back, inside the caller's transaction or its own."""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import NamedTuple

from sqlalchemy import Connection, Engine, insert, select

from audit.chain import canonical_json, chain_hash, record_body, utcnow
from audit.columns import CREATED_AT_TEXT_POSTGRES, REPEATED_COLUMNS
from audit.db import READ_ONLY
from audit.models import LedgerHead, LedgerRecord

_records = LedgerRecord.__table__
_head = LedgerHead.__table__


_SERVER_ROW = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


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

    @cached_property
    def server_row(self) -> str:
        """This entry as one element of the Postgres append's JSON batch (see `server_batch`)."""
        return _SERVER_ROW.encode([self.kind, canonical_json(self.kind), self.data_json,
                                   *(self.index.get(name) for name in REPEATED_COLUMNS[1:])])


class Head(NamedTuple):
    """The chain head: the last record's seq and hash, and the epoch (see LedgerHead)."""

    seq: int
    hash: str
    epoch: int


class StaleEpoch(Exception):
    """Nothing was appended: the entries were made for an epoch the head has moved past."""

    def __init__(self, epoch: int):
        super().__init__(f"the ledger epoch is now {epoch}")
        self.epoch = epoch


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

    def append(self, conn: Connection, entries: Iterable[Entry], head: Head | None = None, *,
               expect_epoch: int | None = None, bump_epoch: bool = False) -> list[Appended]:
        """Chain `entries` after the head inside `conn`'s transaction (or as one statement in autocommit).

        The head row is locked until that transaction ends, so concurrent writers
        queue behind it and the chain never forks; the records are durable only
        once the transaction commits. `expect_epoch`: append only if the head's
        epoch is still that, else raise StaleEpoch. `bump_epoch`: these entries
        change what decisions are made from. On SQLite pass `head` when `lock_head`
        already ran in this transaction.
        """
        entries = list(entries)
        if conn.dialect.name == "postgresql":
            return _append_on_server(conn, entries, expect_epoch, bump_epoch)
        if not entries and not bump_epoch:
            return []
        seq, head_hash, epoch = head if head is not None else self.lock_head(conn)
        if expect_epoch is not None and epoch != expect_epoch:
            raise StaleEpoch(epoch)
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
        if rows:
            conn.execute(insert(_records), rows)
        conn.exec_driver_sql("UPDATE ledger_head SET seq = ?, hash = ?, epoch = ? WHERE id = 1",
                             (seq, head_hash, epoch + int(bump_epoch)))
        return appended

    def serialize(self, entries: Iterable[Entry]) -> None:
        """Make now, in the caller's thread, the text `append` will send for `entries`: a writer
        that appends for many callers then only joins it."""
        postgres = self.engine.dialect.name == "postgresql"
        for entry in entries:
            entry.server_row if postgres else entry.data_json  # noqa: B018 - cached on the entry

    @staticmethod
    def lock_head(conn: Connection) -> Head:
        """Return the head, locked until `conn`'s transaction ends (Postgres row lock; on SQLite the
        transaction already holds the write lock)."""
        # Plain SQL on the hot path: building and caching a Core statement per batch
        # costs more CPU than the round trip itself.
        lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
        return Head(*conn.exec_driver_sql(f"SELECT seq, hash, epoch FROM ledger_head WHERE id = 1{lock}").one())

    @staticmethod
    def epoch(conn: Connection) -> int:
        """The head's epoch as `conn` sees it (read before the state it vouches for)."""
        return conn.exec_driver_sql("SELECT epoch FROM ledger_head WHERE id = 1").scalar_one()

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
            created = (CREATED_AT_TEXT_POSTGRES if conn.dialect.name == "postgresql"
                       else "replace(created_at, ' ', 'T') || 'Z'")
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


_NO_INDEX = dict.fromkeys(REPEATED_COLUMNS[1:])
# The append function of migration 0005, called with (expect_epoch, bump_epoch, time, entries as JSON).
APPEND_CALL = "SELECT seq, hash, epoch FROM warden_ledger_append($1::bigint, $2::boolean, $3::timestamptz, $4::jsonb)"
_APPEND = "SELECT seq, hash, epoch FROM warden_ledger_append(%s, %s, %s, %s::jsonb)"


def server_batch(entries: list[Entry]) -> str:
    """The entries argument of the Postgres append: one JSON text, far cheaper to send than an
    array per column."""
    return "[" + ",".join(e.server_row for e in entries) + "]"


def appended_on_server(rows: list[tuple], at: datetime) -> list[Appended]:
    """What the append function's rows (seq, hash, epoch) say, for a call made with time `at`;
    raises StaleEpoch when it appended nothing because the head's epoch had moved."""
    if rows and rows[0][0] is None:
        raise StaleEpoch(int(rows[0][2]))
    return [Appended(int(seq), record_hash, at) for seq, record_hash, _ in rows]


def _append_on_server(conn: Connection, entries: list[Entry], expect_epoch: int | None,
                      bump_epoch: bool) -> list[Appended]:
    # One statement chains and inserts the whole batch (migration 0005), so on Postgres
    # the head lock never waits for this process between round trips.
    cursor = conn.connection.dbapi_connection.cursor()
    # The time is this process's clock, as on SQLite (one clock per writer, freezable in tests).
    at = utcnow()
    try:
        cursor.execute(_APPEND, (expect_epoch, bump_epoch, at, server_batch(entries)))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return appended_on_server(rows, at)
