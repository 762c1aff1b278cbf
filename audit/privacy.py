"""People's requests about their data: access, erasure (crypto-shredding) and opt-out of profiling.

A request moves received -> verified -> in_progress -> completed (or denied,
failed); each step is kept with who acted and when, and each request is written
to the ledger by pseudonym only. The caller (a service with the `privacy` scope,
or the signed-in person on the self-service page) vouches for the identity.
"""

import json
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, insert, select, update

from audit.chain import format_time, utcnow
from audit.db import READ_ONLY
from audit.ledger import Entry, Ledger
from audit.models import LedgerRecord, PrivacyRequest
from audit.vault import Unreadable, Vault

KINDS = ("access", "erasure", "opt_out")
_requests = PrivacyRequest.__table__
_records = LedgerRecord.__table__
# An eraser removes what another part of Warden holds about a person (say, their policy rows):
# called with (identifier, actor).
Eraser = Callable[[str, str], object]


def due_date(received: datetime) -> datetime:
    """One month after receipt (GDPR Art. 12(3)): the same day next month, or the month's last day."""
    year, month = (received.year + 1, 1) if received.month == 12 else (received.year, received.month + 1)
    for day in (received.day, 30, 29, 28):
        try:
            return received.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


class UnknownRequest(LookupError):
    """No privacy request has that id."""


class PrivacyService:
    """Takes, carries out and reports people's privacy requests."""

    def __init__(self, engine: Engine, ledger: Ledger, vault: Vault, erasers: list[Eraser] | None = None,
                 holdings: dict[str, Callable[[str], object]] | None = None,
                 forget_keys: Callable[[], None] | None = None):
        self.engine = engine
        self.ledger = ledger
        self.vault = vault
        self.erasers = erasers or []
        self.forget_keys = forget_keys  # drops the keys this process cached, once a key is destroyed
        self.holdings = holdings or {}  # what other parts of Warden hold about a person, for access exports

    def submit(self, subject: str, kind: str, actor: str) -> dict:
        """Record a request by (or for) `subject`, carry it out, and return it as `get` would."""
        request_id = str(uuid.uuid4())
        now = utcnow()
        with self.engine.begin() as conn:
            # An opt-out must be remembered for later; for access and erasure, nobody is made up.
            person = (self.vault.subjects(conn, [subject])[subject] if kind == "opt_out"
                      else self.vault.find(conn, subject))
            pseudonym = person.pseudonym if person else ""
            history = [_step("received", actor, now), _step("verified", actor, now,
                                                            "identity vouched for by the caller"),
                       _step("in_progress", actor, now)]
            conn.execute(insert(_requests).values(
                id=request_id, kind=kind, status="in_progress", pseudonym=pseudonym,
                subject_enc=Vault.seal(person, subject, f"privacy:{request_id}") if person else None,
                received_at=now, due_at=due_date(now), history=json.dumps(history)))
            self.ledger.append(conn, [Entry("privacy.request", {"request_id": request_id, "kind": kind,
                                                                "subject": pseudonym, "actor": actor})])
        if person is None:
            self._finish(request_id, "completed", actor, "Warden holds no data about this person")
            return self.get(request_id)
        try:
            note = self._carry_out(request_id, kind, subject, pseudonym, actor)
            self._finish(request_id, "completed", actor, note)
        except Exception as exc:
            self._finish(request_id, "failed", actor, f"{type(exc).__name__}")
            raise
        return self.get(request_id)

    def _carry_out(self, request_id: str, kind: str, subject: str, pseudonym: str, actor: str) -> str:
        if kind == "access":
            return "export ready"
        if kind == "opt_out":
            with self.engine.begin() as conn:
                self.vault.opt_out(conn, subject)
                # The epoch moves so that every process's cached keys (which carry the opt-out) are renewed.
                self.ledger.append(conn, [Entry("privacy.opt_out", {"request_id": request_id,
                                                                    "subject": pseudonym})], bump_epoch=True)
            if self.forget_keys:
                self.forget_keys()
            return "excluded from behavioural profiling from now on"
        for erase in self.erasers:
            erase(subject, f"privacy:{request_id}")
        with self.engine.begin() as conn:
            self.vault.erase(conn, subject)
            # Pseudonym only: once the key is gone it no longer leads back to the person.
            self.ledger.append(conn, [Entry("privacy.erasure", {"request_id": request_id, "subject": pseudonym})],
                               bump_epoch=True)  # other processes drop the keys they cached
        if self.forget_keys:
            self.forget_keys()
        return "key and salt destroyed; personal data outside the ledger deleted"

    def _finish(self, request_id: str, status: str, actor: str, note: str) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(select(_requests.c.history).where(_requests.c.id == request_id)).one()
            history = json.loads(row.history) + [_step(status, actor, now, note)]
            conn.execute(update(_requests).where(_requests.c.id == request_id).values(
                status=status, completed_at=now, history=json.dumps(history)))

    def get(self, request_id: str) -> dict:
        """The request: kind, status, dates and its history of who acted."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(select(_requests).where(_requests.c.id == request_id)).first()
        if row is None:
            raise UnknownRequest(request_id)
        return {"id": row.id, "kind": row.kind, "status": row.status, "subject": row.pseudonym,
                "received_at": format_time(row.received_at), "due_at": format_time(row.due_at),
                "completed_at": format_time(row.completed_at) if row.completed_at else None,
                "history": json.loads(row.history)}

    def requests_of(self, subject: str) -> list[dict]:
        """Every request `subject` made that can still be tied to them, newest first."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            person = self.vault.find(conn, subject)
            if person is None:
                return []
            ids = conn.execute(select(_requests.c.id).where(_requests.c.pseudonym == person.pseudonym)
                               .order_by(_requests.c.received_at.desc())).scalars().all()
        return [self.get(i) for i in ids]

    def export(self, request_id: str) -> dict:
        """Everything Warden holds about the person of an access request, decrypted."""
        request = self.get(request_id)
        if request["kind"] != "access":
            raise UnknownRequest(request_id)
        if not request["subject"]:
            return {"subject": None, "pseudonym": None, "generated_at": format_time(utcnow()), "decisions": [],
                    "note": "Warden held no data about this person when the request was made"}
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            person = self.vault.by_pseudonym(conn, request["subject"])
            if person is None:
                raise Unreadable("this person's data was erased")
            subject = Vault.open(person, conn.execute(select(_requests.c.subject_enc).where(
                _requests.c.id == request_id)).scalar_one(), f"privacy:{request_id}")
            decisions, outcomes = [], {}
            rows = conn.execute(select(_records.c.seq, _records.c.kind, _records.c.body).where(
                _records.c.subject == person.pseudonym)).all()
            ids = []
            for row in rows:
                record = json.loads(row.body)
                data = record["data"]
                ids.append(data["decision_id"])
                decisions.append({
                    "seq": row.seq, "time": record["time"], "service": data["service"],
                    "domain": data["domain"], "object": data["object"], "action": data["action"],
                    "workflow": data["workflow"], "allowed": data["allowed"],
                    "reason": data["reason"].replace(person.pseudonym, subject),
                    "context": Vault.open(person, data["context_enc"], f"{data['decision_id']}:context")
                    if data.get("context_enc") else {}})
            if ids:
                for row in conn.execute(select(_records.c.body).where(_records.c.kind == "outcome",
                                                                      _records.c.decision_id.in_(ids))):
                    data = json.loads(row.body)["data"]
                    outcomes[data["decision_seq"]] = {k: data[k] for k in ("rows", "bytes", "duration_ms", "status")}
        for decision in decisions:
            decision["outcome"] = outcomes.get(decision["seq"])
        return {"subject": subject, "pseudonym": person.pseudonym, "generated_at": format_time(utcnow()),
                "opted_out_of_profiling": person.opted_out, "decisions": decisions,
                "privacy_requests": self.requests_of(subject),
                **{name: holding(subject) for name, holding in self.holdings.items()}}


def _step(status: str, actor: str, at: datetime, note: str = "") -> dict:
    return {"status": status, "by": actor, "at": format_time(at), **({"note": note} if note else {})}


