"""Finding ledger records: filtered, cursor-paginated search and a streaming export."""

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from audit.db import READ_ONLY
from audit.ledger import Ledger
from audit.models import LedgerRecord

_records = LedgerRecord.__table__
MAX_PAGE = 1000


@dataclass(frozen=True)
class EventFilter:
    """What to look for; every field is optional and they combine with AND."""

    subject: str | None = None
    domain: str | None = None
    object_prefix: str | None = None
    action: str | None = None
    allowed: bool | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    from_seq: int | None = None
    to_seq: int | None = None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Return the seq a cursor continues after; ValueError if it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, seq = text.split(":")
        if prefix != "seq" or not 0 <= int(seq) < 2**63:
            raise ValueError
        return int(seq)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this server issued") from None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_events(engine: Engine, where: EventFilter, *, limit: int = 100,
                  after_seq: int = 0) -> tuple[list[dict], str | None]:
    """Return one page of matching records, oldest first, and the cursor of the next page (or None)."""
    c = _records.c
    query = select(c.seq, c.prev_hash, c.hash, c.kind, c.body).where(c.seq > after_seq)
    for column, value in ((c.subject, where.subject), (c.domain, where.domain), (c.action, where.action),
                          (c.kind, where.kind), (c.allowed, where.allowed)):
        if value is not None:
            query = query.where(column == value)
    if where.object_prefix is not None:
        prefix = where.object_prefix
        # LIKE finds the candidates; SQLite's LIKE ignores ASCII case, so the prefix is compared exactly too.
        query = query.where(c.object.like(_escape_like(prefix) + "%", escape="\\"),
                            func.substr(c.object, 1, len(prefix)) == prefix)
    if where.since is not None:
        query = query.where(c.created_at >= where.since)
    if where.until is not None:
        query = query.where(c.created_at <= where.until)
    if where.from_seq is not None:
        query = query.where(c.seq >= where.from_seq)
    if where.to_seq is not None:
        query = query.where(c.seq <= where.to_seq)
    with engine.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(query.order_by(c.seq).limit(limit + 1)).all()
    events = [{"seq": r.seq, "kind": r.kind, "prev_hash": r.prev_hash, "hash": r.hash,
               **{k: v for k, v in json.loads(r.body).items() if k in ("time", "data")}} for r in rows[:limit]]
    return events, encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None


def export_records(engine: Engine, since: datetime | None = None, until: datetime | None = None
                   ) -> Iterator[str]:
    """Yield one JSON line per record in the time range, with the exact hashed body and chain fields."""
    c = _records.c
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        first = conn.execute(select(func.min(c.seq)).where(c.created_at >= since)).scalar() if since else 1
        last = conn.execute(select(func.max(c.seq)).where(c.created_at <= until)).scalar() if until else None
        if first is None or (until is not None and last is None):
            return
        for seq, prev_hash, hash_, kind, body in Ledger(engine).records(conn, first - 1, last):
            yield json.dumps({"seq": seq, "prev_hash": prev_hash, "hash": hash_, "kind": kind, "body": body},
                             ensure_ascii=False)
