"""The sanctioned way ledger records leave: a purge past retention that leaves a signed seal.

The seal names the last purged record (seq, hash); verification starts from it
and still proves every record after. The purge is itself appended to the chain.
"""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, insert, select, text

from audit.chain import format_time, utcnow
from audit.checkpoints import statement_text
from audit.db import READ_ONLY
from audit.ledger import Entry, Ledger
from audit.models import LedgerRecord, LedgerSeal
from audit.signing import LedgerSigner

_records = LedgerRecord.__table__
_seals = LedgerSeal.__table__


class PurgeRefused(RuntimeError):
    """The rows do not agree with what was hashed: purging now could remove records still in retention."""


@dataclass(frozen=True)
class Purged:
    """What a purge removed: records up to `through_seq`, `count` of them, sealed with `hash`."""

    through_seq: int
    hash: str
    count: int
    audit_seq: int


def purge_ledger(engine: Engine, ledger: Ledger, signer: LedgerSigner, older_than_days: int, *,
                 actor: str, now: datetime | None = None) -> Purged | None:
    """Remove records created more than `older_than_days` ago, seal them, and record the purge.

    Returns None when nothing is that old. All of it happens in one transaction.
    """
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    c = _records.c
    # Found before the head is locked (appends go on meanwhile: they are all newer), from the
    # created_at index: max(seq) over old rows makes Postgres walk the primary key backwards through
    # every newer record, which took 6 s on 400,000 records, with every decision waiting for the lock.
    with engine.connect().execution_options(**READ_ONLY) as conn:
        through = conn.execute(select(c.seq).where(c.created_at < cutoff)
                               .order_by(c.created_at.desc(), c.seq.desc()).limit(1)).scalar()
    if through is None:
        return None
    with engine.begin() as conn:
        head = ledger.lock_head(conn)
        row = conn.execute(select(c.hash, c.body).where(c.seq == through)).first()
        if row is None:  # another process purged it meanwhile
            return None
        through_hash, body = row
        recorded = json.loads(body)["time"]
        if recorded >= format_time(cutoff):
            # created_at is a search column; the hashed time is what counts. They disagree: refuse.
            raise PurgeRefused(f"record {through}'s created_at is before the cutoff but it was recorded at "
                               f"{recorded}: the row was edited; run warden audit verify")
        count = conn.execute(select(func.count()).where(c.seq <= through)).scalar_one()
        sealed_at = utcnow()
        statement = statement_text("seal", through, through_hash, format_time(sealed_at), purged=count)
        kid, signature = signer.sign(statement.encode("utf-8"))
        conn.execute(insert(_seals).values(seq=through, hash=through_hash, created_at=sealed_at, key_id=kid,
                                           signature=signature, statement=statement))
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL warden.ledger_purge = 'on'"))  # the trigger's one exception
        conn.execute(delete(_records).where(c.seq <= through))
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL warden.ledger_purge = 'off'"))
        record = ledger.append(conn, [Entry("ledger.purge", {
            "actor": actor, "through_seq": through, "through_hash": through_hash, "purged": count,
            "older_than_days": older_than_days, "cutoff": format_time(cutoff)})], head=head)[0]
    return Purged(through, through_hash, count, record.seq)
