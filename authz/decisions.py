"""The decision path: decide against the current policy, record in the ledger, then answer."""

import logging
import uuid
from collections.abc import Callable

from sqlalchemy import Engine

from audit.ledger import Entry, Ledger
from authz.decider import Decision
from authz.policy_store import PolicyStore
from authz.requests import AuthorizeRequest

log = logging.getLogger(__name__)


class AuditUnavailable(Exception):
    """The ledger could not commit: the caller must answer deny with 503."""


class DecisionService:
    """Decides requests and returns them only once their ledger records are committed."""

    def __init__(self, engine: Engine, ledger: Ledger, policies: PolicyStore):
        self.engine = engine
        self.ledger = ledger
        self.policies = policies

    def authorize(self, requests: list[AuthorizeRequest], *, service: str, request_id: str,
                  stop: Callable[[Decision], bool] | None = None) -> list[dict]:
        """Return one answer per request, in order, each backed by a durable ledger record.

        With `stop`, deciding ends after the first decision it is true for (AuthZEN's
        short-circuit semantics); only the decisions made are recorded and returned.
        Raises AuditUnavailable when the records cannot be committed: then nothing
        was decided as far as any caller knows.
        """
        try:
            with self.engine.begin() as conn:
                snapshot = self.policies.snapshot(conn)
                decided = []
                for item in requests:
                    decision = snapshot.decider.decide(item.request)
                    decided.append((item, decision, str(uuid.uuid4())))
                    if stop is not None and stop(decision):
                        break
                entries = [Entry("decision", _record(item, decision, decision_id, service, request_id,
                                                     snapshot.version))
                           for item, decision, decision_id in decided]
                appended = self.ledger.append(conn, entries)
        except Exception as exc:  # any failure to commit is a failure to audit
            log.error("ledger append failed, denying %d request(s): %s", len(requests), type(exc).__name__)
            raise AuditUnavailable(str(exc)) from exc
        return [{"allowed": decision.allowed, "decision_id": decision_id, "audit_seq": record.seq,
                 "policy_version": snapshot.version, "reason": decision.reason,
                 "matched": decision.matched, "review": None}
                for (item, decision, decision_id), record in zip(decided, appended)]


def _record(item: AuthorizeRequest, decision: Decision, decision_id: str, service: str,
            request_id: str, version: int) -> dict:
    request = item.request
    return {"decision_id": decision_id, "service": service, "request_id": request_id,
            "subject": request.subject, "domain": request.domain, "object": request.object,
            "action": request.action, "workflow": request.workflow, "context": item.context,
            "allowed": decision.allowed, "reason": decision.reason, "matched": decision.matched,
            "policy_version": version}
