"""Appending to the ledger and reading it back, inside the caller's transaction or its own."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select, update

from audit.chain import chain_hash, record_body, utcnow
from audit.db import READ_ONLY
from audit.models import LedgerHead, LedgerRecord

_records = LedgerRecord.__table__
_head = LedgerHead.__table__


@dataclass(frozen=True)
class Entry:
    """What a caller wants recorded: a kind (`decision`, `policy.change`, ...) and its data."""

    kind: str
    data: dict


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

    def append(self, conn: Connection, entries: Iterable[Entry]) -> list[Appended]:
        """Chain `entries` after the head inside `conn`'s open transaction.

        The head row is locked until that transaction ends, so concurrent writers
        queue behind it and the chain never forks; the records are durable only
        once the caller commits.
        """
        entries = list(entries)
        if not entries:
            return []
        seq, head_hash = conn.execute(
            select(_head.c.seq, _head.c.hash).where(_head.c.id == 1).with_for_update()
        ).one()
        now = utcnow()
        rows, appended = [], []
        for entry in entries:
            seq += 1
            body = record_body(seq, entry.kind, now, entry.data)
            record_hash = chain_hash(head_hash, body)
            rows.append({"seq": seq, "prev_hash": head_hash, "hash": record_hash,
                         "kind": entry.kind, "created_at": now, "body": body})
            appended.append(Appended(seq, record_hash, now))
            head_hash = record_hash
        conn.execute(insert(_records), rows)
        conn.execute(update(_head).where(_head.c.id == 1).values(seq=seq, hash=head_hash))
        return appended

    def record(self, *entries: Entry) -> list[Appended]:
        """Append `entries` in a transaction of their own and return once it is committed."""
        with self.engine.begin() as conn:
            return self.append(conn, entries)

    def head(self) -> tuple[int, str]:
        """Return the (seq, hash) the head row names."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return tuple(conn.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == 1)).one())

    def records(self, conn: Connection, after_seq: int = 0) -> Iterator:
        """Yield the stored rows with seq > `after_seq` in seq order, streamed."""
        query = (select(_records.c.seq, _records.c.prev_hash, _records.c.hash, _records.c.kind, _records.c.body)
                 .where(_records.c.seq > after_seq).order_by(_records.c.seq))
        with conn.execution_options(yield_per=5000).execute(query) as result:
            yield from result
