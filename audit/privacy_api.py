"""HTTP adapters for privacy: people's requests, and revealing who a ledger record is about."""

import json
import re

from flask import Blueprint, current_app, g, jsonify
from sqlalchemy import select

from audit.db import READ_ONLY
from audit.ledger import Entry
from audit.models import LedgerRecord
from audit.privacy import KINDS, UnknownRequest
from audit.vault import Unreadable, Vault
from audit.web import ApiError, read_json, requires_scope

bp = Blueprint("privacy", __name__)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_records = LedgerRecord.__table__


def subject_problem(value) -> str | None:
    """Why `value` cannot be a person's identifier, or None."""
    if not isinstance(value, str) or not value.strip():
        return "subject is required: the person's identifier as services send it to /v1/authorize"
    if len(value) > 255 or _CONTROL.search(value) or value != value.strip():
        return "subject must be at most 255 characters, without control characters or outer spaces"
    if any(mark in value for mark in '*,"'):  # /v1/authorize refuses them in a subject: nobody is named so
        return "subject may not contain '*', ',' or '\"': no person's identifier does"
    return None


@bp.post("/v1/privacy/requests")
@requires_scope("privacy")
def submit_request():
    """Take a request {subject, kind: access|erasure|opt_out}; it is carried out before the answer."""
    body = read_json()
    unknown = sorted(set(body) - {"subject", "kind"})
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown field {', '.join(unknown)} (expected subject, kind)")
    if problem := subject_problem(body.get("subject")):
        raise ApiError(400, "invalid_request", problem)
    if body.get("kind") not in KINDS:
        raise ApiError(400, "invalid_request", f"kind must be one of {', '.join(KINDS)}")
    privacy = current_app.extensions["warden"].privacy
    return jsonify(privacy.submit(body["subject"], body["kind"], actor=f"service:{g.caller.name}")), 201


def _request_or_404(request_id: str) -> dict:
    try:
        return current_app.extensions["warden"].privacy.get(request_id)
    except UnknownRequest:
        raise ApiError(404, "not_found", f"no privacy request {request_id}") from None


@bp.get("/v1/privacy/requests/<request_id>")
@requires_scope("privacy")
def get_request(request_id: str):
    return jsonify(_request_or_404(request_id))


@bp.get("/v1/privacy/requests/<request_id>/export")
@requires_scope("privacy")
def export_request(request_id: str):
    """The access export: everything Warden holds about the person, decrypted."""
    request = _request_or_404(request_id)
    if request["kind"] != "access":
        raise ApiError(404, "not_found", f"request {request_id} is a {request['kind']} request, not access")
    try:
        return jsonify(current_app.extensions["warden"].privacy.export(request_id))
    except Unreadable:
        raise ApiError(410, "erased", "this person's data was erased since the request") from None


@bp.post("/v1/audit/events/<int:seq>/reveal")
@requires_scope("review")
def reveal(seq: int):
    """Who a decision record is about. Each reveal is itself written to the ledger."""
    warden = current_app.extensions["warden"]
    if seq >= 2**63:
        raise ApiError(404, "not_found", f"record {seq} is not a decision record")
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        row = conn.execute(select(_records.c.body).where(_records.c.seq == seq, _records.c.kind == "decision")
                           ).first()
        if row is None:
            raise ApiError(404, "not_found", f"record {seq} is not a decision record")
        data = json.loads(row.body)["data"]
        person = warden.vault.by_pseudonym(conn, data["subject"])
    try:
        subject = Vault.open(person, data["subject_enc"], f"{data['decision_id']}:subject")
    except Unreadable:
        raise ApiError(410, "erased", "this person's key was destroyed (erasure): the record cannot be "
                                      "tied to anyone any more") from None
    record = warden.ledger.record(Entry("privacy.reveal", {"seq": seq, "subject": data["subject"],
                                                           "by": f"service:{g.caller.name}"}))[0]
    return jsonify({"seq": seq, "subject": subject, "pseudonym": data["subject"], "audit_seq": record.seq})
