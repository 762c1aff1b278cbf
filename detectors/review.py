"""The review queue: items the detectors open, and the security team's triage of them (audited)."""

import base64
import json
import uuid
from datetime import datetime

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from audit.chain import format_time, utcnow
from audit.db import READ_ONLY
from audit.ledger import Entry, Ledger
from audit.pii import scrub
from audit.vault import Vault
from detectors.features import DecisionEvent
from detectors.findings import Finding
from detectors.rules import immediate_finding
from detectors.models import ReviewItem

STATUSES = ("open", "acknowledged", "resolved", "dismissed")
MAX_NOTE = 2000
_items = ReviewItem.__table__


class UnknownItem(Exception):
    """No review item has that id."""


class ReviewQueue:
    """Opens, lists and triages review items; every triage step is a ledger record."""

    def __init__(self, engine: Engine, ledger: Ledger, vault: Vault | None = None):
        self.engine = engine
        self.ledger = ledger
        self.vault = vault  # to find a person's items for an access export or an erasure

    def _pseudonym(self, identifier: str) -> str | None:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            subject = self.vault.find(conn, identifier)
        return subject.pseudonym if subject else None

    def items_about(self, identifier: str) -> list[dict]:
        """Every item about `identifier` (for their access export)."""
        pseudonym = self._pseudonym(identifier)
        if pseudonym is None:
            return []
        return self.list(subject=pseudonym, limit=10_000)[0]

    def erase_person(self, identifier: str, actor: str) -> None:
        """Eraser for privacy requests: reviewers' notes on the person's items may name them, so they
        are removed (the items stay, under a pseudonym that leads nowhere once the key is gone)."""
        pseudonym = self._pseudonym(identifier)
        if pseudonym is None:
            return
        with self.engine.begin() as conn:
            for row in conn.execute(select(_items.c.id, _items.c.history).where(_items.c.subject == pseudonym)):
                history = [{**step, "note": "[removed by an erasure request]"} if "note" in step else step
                           for step in json.loads(row.history)]
                conn.execute(update(_items).where(_items.c.id == row.id).values(history=json.dumps(history)))

    def open(self, conn: Connection, findings: list[Finding], now: datetime | None = None) -> list[str]:
        """Open an item per finding, inside `conn`'s transaction; one already open for the same
        detector and first record is not opened twice. Returns the ids opened."""
        now = now or utcnow()
        opened = []
        insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        for finding in findings:
            item_id = str(uuid.uuid4())
            result = conn.execute(insert_(_items).on_conflict_do_nothing(
                index_elements=["detector", "first_seq"]).values(
                id=item_id, opened_at=now, updated_at=now, detector=finding.detector,
                first_seq=min(finding.seqs), seqs=json.dumps(sorted(finding.seqs)), subject=finding.subject,
                score=round(float(finding.score), 4), priority=finding.priority,
                reasons=json.dumps(list(finding.reasons)), status="open", assignee=None,
                history=json.dumps([{"at": format_time(now), "actor": f"detector:{finding.detector}",
                                     "status": "open"}])))
            if result.rowcount:
                opened.append(item_id)
        return opened

    def flags(self, records: list[dict]) -> bool:
        """Whether `open_for_records` would open anything for these records (no database work)."""
        return any(not r["opted_out"] and immediate_finding(_event(r)) for r in records)

    def open_for_records(self, records: list[dict]) -> list[dict | None]:
        """`open_at_once` for decision records as the decision service has them ({data, seq, time, opted_out});
        people who opted out of profiling are left out, as they are from scoring."""
        reviewed = [r for r in records if not r["opted_out"]]
        answers = iter(self.open_at_once([_event(r) for r in reviewed]))
        return [None if r["opted_out"] else next(answers) for r in records]

    def open_at_once(self, events: list[DecisionEvent]) -> list[dict | None]:
        """Open items for the decisions just recorded that the history-free rules flag; return, per
        decision, what its answer's `review` says (None when nothing was opened)."""
        findings = [immediate_finding(event) for event in events]
        if not any(findings):
            return [None] * len(events)
        with self.engine.begin() as conn:
            ids = self.open(conn, [f for f in findings if f])
        if len(ids) != sum(1 for f in findings if f):  # a scoring run got there first: look them up
            return [self._ref_of(f) if f else None for f in findings]
        opened = iter(ids)
        return [{"id": next(opened), "detector": f.detector, "priority": f.priority} if f else None
                for f in findings]

    def _ref_of(self, finding: Finding) -> dict | None:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(select(_items.c.id).where(_items.c.detector == finding.detector,
                                                         _items.c.first_seq == min(finding.seqs))).first()
        return {"id": row.id, "detector": finding.detector, "priority": finding.priority} if row else None

    def list(self, *, status: str | None = None, priority: str | None = None, detector: str | None = None,
             subject: str | None = None, limit: int = 50, cursor: str | None = None) -> tuple[list[dict], str | None]:
        """One page of items, newest first, and the cursor of the next page (or None)."""
        query = select(_items).order_by(_items.c.opened_at.desc(), _items.c.id.desc()).limit(limit + 1)
        for column, value in (("status", status), ("priority", priority), ("detector", detector),
                              ("subject", subject)):
            if value is not None:
                query = query.where(_items.c[column] == value)
        if cursor is not None:
            opened_at, item_id = decode_cursor(cursor)
            query = query.where((_items.c.opened_at < opened_at)
                                | ((_items.c.opened_at == opened_at) & (_items.c.id < item_id)))
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            rows = conn.execute(query).all()
        page = [_shape(row) for row in rows[:limit]]
        more = len(rows) > limit
        return page, encode_cursor(rows[limit - 1].opened_at, rows[limit - 1].id) if more else None

    def counts(self) -> dict[str, int]:
        """How many items there are in each status."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            found = dict(conn.execute(select(_items.c.status, func.count()).group_by(_items.c.status)).all())
        return {status: found.get(status, 0) for status in STATUSES}

    def get(self, item_id: str) -> dict:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(select(_items).where(_items.c.id == item_id)).first()
        if row is None:
            raise UnknownItem(item_id)
        return _shape(row)

    def update(self, item_id: str, *, actor: str, status: str | None = None, assignee: str | None = None,
               note: str | None = None, clear_assignee: bool = False) -> dict:
        """Change an item's status, assignee or add a note (scrubbed of PII); audited in the ledger."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(select(_items).where(_items.c.id == item_id).with_for_update()).first()
            if row is None:
                raise UnknownItem(item_id)
            step: dict = {"at": format_time(now), "actor": actor}
            values: dict = {"updated_at": now}
            if status is not None and status != row.status:
                step["status"] = values["status"] = status
            if clear_assignee or (assignee is not None and assignee != row.assignee):
                step["assignee"] = values["assignee"] = None if clear_assignee else assignee
            if note:
                step["note"] = scrub(note)[0]
            if len(step) > 2:
                values["history"] = json.dumps(json.loads(row.history) + [step])
                conn.execute(update(_items).where(_items.c.id == item_id).values(**values))
                self.ledger.append(conn, [Entry("review.update", {
                    "item": item_id, "actor": actor, "previous_status": row.status,
                    "status": values.get("status", row.status), "assigned": "assignee" in step,
                    "noted": "note" in step})])
        return self.get(item_id)


def _shape(row) -> dict:
    return {"id": row.id, "opened_at": format_time(row.opened_at), "updated_at": format_time(row.updated_at),
            "detector": row.detector, "subject": row.subject, "seqs": json.loads(row.seqs), "score": row.score,
            "priority": row.priority, "reasons": json.loads(row.reasons), "status": row.status,
            "assignee": row.assignee, "history": json.loads(row.history)}


def encode_cursor(opened_at: datetime, item_id: str) -> str:
    return base64.urlsafe_b64encode(f"{format_time(opened_at)}|{item_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(opened_at, id) a cursor continues after; ValueError if it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, item_id = text.split("|")
        return datetime.fromisoformat(when.replace("Z", "+00:00")), str(uuid.UUID(item_id))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("cursor is not one this server issued") from exc



def _event(record: dict) -> DecisionEvent:
    """A decision record as the decision service has it ({data, seq, time, ...}), as the detectors see it."""
    data = record["data"]
    return DecisionEvent(record["seq"], record["time"], data["subject"], data["domain"], data["object"],
                         data["action"], data["workflow"], data["allowed"])
