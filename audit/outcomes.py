"""What an authorized query did: outcome reports, chained after the decision they belong to."""

import json
import re

from sqlalchemy import select

from audit.group_commit import GroupCommitter, Refused
from audit.ledger import Appended, Entry
from audit.models import LedgerRecord

_records = LedgerRecord.__table__
_STATUS = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
FIELDS = ("decision_id", "rows", "bytes", "duration_ms", "status")


class UnknownDecision(Refused):
    """No decision with that id was made for this service."""


class DuplicateOutcome(Refused):
    """The decision's outcome was reported already."""


def as_reported(body: dict) -> dict:
    """`body` with `duration` (what DESIGN.md's endpoint list calls it) read as `duration_ms` (what the
    client and the records call it); both are milliseconds. Giving both is left to `outcome_problem`."""
    if "duration" in body and "duration_ms" not in body:
        body = {("duration_ms" if key == "duration" else key): value for key, value in body.items()}
    return body


def outcome_problem(body: dict) -> str | None:
    """Return what is wrong with an outcome report, or None when it is well-formed."""
    if "duration" in body and "duration_ms" in body:
        return "give duration_ms (or its other name, duration), not both"
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        return f"unknown field {', '.join(unknown)} (expected {', '.join(FIELDS)})"
    decision_id = body.get("decision_id")
    if decision_id is None:
        return "decision_id is required: the decision_id /v1/authorize returned"
    if not isinstance(decision_id, str) or not 1 <= len(decision_id) <= 36:
        return "decision_id must be the decision_id string /v1/authorize returned"
    for name in ("rows", "bytes", "duration_ms"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63):
            return f"{name} must be a whole number >= 0"
    status = body.get("status")
    if status is None:
        return "status is required (a short word such as ok or error): one report per decision, so send it whole"
    if not isinstance(status, str) or not _STATUS.match(status):
        return "status must be a short word (letters, digits, . _ -), such as ok or error"
    return None


class OutcomeService:
    """Appends outcome reports through the group committer."""

    def __init__(self, committer: GroupCommitter):
        self.committer = committer

    def report(self, service: str, body: dict) -> tuple[Appended, int]:
        """Record the outcome in `body` for `service`'s decision; return (its record, the decision's seq).

        Raises UnknownDecision or DuplicateOutcome; CommitFailed when the ledger cannot commit.
        """
        decision_id = body["decision_id"]

        def prepare(conn, memo):
            c = _records.c
            decision = conn.execute(select(c.seq, c.body).where(c.kind == "decision",
                                                                c.decision_id == decision_id)).first()
            if decision is None or json.loads(decision.body)["data"].get("service") != service:
                raise UnknownDecision(f"no decision {decision_id} was made for this service")
            reported = memo.setdefault("outcomes", set())
            if decision_id in reported or conn.execute(
                    select(c.seq).where(c.kind == "outcome", c.decision_id == decision_id)).first():
                raise DuplicateOutcome(f"the outcome of decision {decision_id} was reported already")
            reported.add(decision_id)
            data = {"decision_id": decision_id, "decision_seq": decision.seq, "service": service,
                    "rows": body.get("rows"), "bytes": body.get("bytes"),
                    "duration_ms": body.get("duration_ms"), "status": body["status"]}
            return [Entry("outcome", data, {"decision_id": decision_id})], decision.seq

        appended, decision_seq = self.committer.submit(prepare, under_lock=True)
        return appended[0], decision_seq
