"""HTTP adapters for the ledger: health and verification."""

from datetime import datetime, timezone

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import text

from audit.db import READ_ONLY
from audit.group_commit import CommitFailed
from audit.outcomes import DuplicateOutcome, UnknownDecision, as_reported, outcome_problem
from audit.search import MAX_PAGE, EventFilter, decode_cursor, search_events
from audit.verify import verify_ledger
from audit.web import ApiError, error_response, public, read_json, requires_scope

bp = Blueprint("audit", __name__)


@bp.get("/healthz")
@public
def healthz():
    """200 when the ledger's database answers; 503 otherwise (decisions would be denied)."""
    engine = current_app.extensions["warden"].engine
    try:
        with engine.connect().execution_options(**READ_ONLY) as conn:
            conn.execute(text("SELECT seq FROM ledger_head WHERE id = 1")).scalar_one()
    except Exception as exc:
        current_app.logger.error("health check failed: %s", type(exc).__name__)
        return error_response(503, "database_unavailable", "the ledger database does not answer", status="down")
    return jsonify({"status": "ok"})


@bp.get("/metrics")
@public
def metrics():
    """Prometheus text format. Open like /healthz: it holds counts, never identifiers."""
    from flask import Response

    from audit.metrics import exposition
    body, content_type = exposition()
    return Response(body, content_type=content_type)


@bp.get("/v1/audit/verify")
@requires_scope("audit:read")
def verify():
    """The verification report of the whole chain, as `warden audit verify --json` gives it."""
    warden = current_app.extensions["warden"]
    report = verify_ledger(warden.engine, warden.signer)
    return jsonify(report.as_dict())


@bp.get("/v1/audit/checkpoints/latest")
@requires_scope("audit:read")
def latest_checkpoint():
    """The newest signed checkpoint, to keep outside the database; 404 before the first one."""
    checkpoint = current_app.extensions["warden"].checkpoints.latest()
    if checkpoint is None:
        return error_response(404, "not_found", "no checkpoint has been made yet (warden audit checkpoint)")
    return jsonify(checkpoint.as_dict())


@bp.post("/v1/audit/events")
@requires_scope("authorize")
def report_outcome():
    """A service reports what the query it was allowed (or denied) did; chained after the decision."""
    body = as_reported(read_json())
    if problem := outcome_problem(body):
        raise ApiError(400, "invalid_request", problem)
    try:
        record, decision_seq = current_app.extensions["warden"].outcomes.report(g.caller.name, body)
    except UnknownDecision as exc:
        raise ApiError(404, "unknown_decision", str(exc)) from None
    except DuplicateOutcome as exc:
        raise ApiError(409, "already_reported", str(exc)) from None
    except CommitFailed:
        raise ApiError(503, "audit_unavailable", "the audit ledger could not record the outcome") from None
    return jsonify({"audit_seq": record.seq, "decision_id": body["decision_id"],
                    "decision_seq": decision_seq}), 201


_FILTERS = ("subject", "domain", "object", "action", "decision", "kind", "since", "until",
            "from_seq", "to_seq", "limit", "cursor")


def _time_arg(name: str) -> datetime | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name} must be an ISO 8601 time, such as "
                                               "2026-11-29T10:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    value = request.args.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ApiError(400, "invalid_request", f"{name} must be a whole number from {low} to {high}")
    return int(value)


def _pseudonym_of(subject: str | None) -> str | None:
    """Records name people by pseudonym: search by a real identifier through its key row."""
    if subject is None or subject.startswith("p_"):
        return subject
    warden = current_app.extensions["warden"]
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        found = warden.vault.find(conn, subject)
    return found.pseudonym if found else "p_unknown"


@bp.get("/v1/audit/events")
@requires_scope("audit:read")
def list_events():
    """Ledger records matching the filters, oldest first, a page at a time (`next_cursor`)."""
    unknown = sorted(set(request.args) - set(_FILTERS))
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown filter {', '.join(unknown)} "
                                               f"(expected {', '.join(_FILTERS)})")
    decision = request.args.get("decision")
    if decision not in (None, "allow", "deny"):
        raise ApiError(400, "invalid_request", "decision must be allow or deny")
    after = 0
    if cursor := request.args.get("cursor"):
        try:
            after = decode_cursor(cursor)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
    where = EventFilter(
        subject=_pseudonym_of(request.args.get("subject")), domain=request.args.get("domain"),
        object_prefix=request.args.get("object"), action=request.args.get("action"),
        allowed=None if decision is None else decision == "allow", kind=request.args.get("kind"),
        since=_time_arg("since"), until=_time_arg("until"),
        from_seq=_int_arg("from_seq", None, 0, 2**62), to_seq=_int_arg("to_seq", None, 0, 2**62))
    limit = _int_arg("limit", 100, 1, MAX_PAGE)
    events, next_cursor = search_events(current_app.extensions["warden"].engine, where, limit=limit,
                                        after_seq=after)
    return jsonify({"events": events, "next_cursor": next_cursor})
