"""HTTP adapters for decisions: /v1/authorize, its batch form, and OpenID AuthZEN evaluations."""

import re

from flask import Blueprint, current_app, g, jsonify, request

from audit.randomness import uuid4_hex
from audit.web import error_response, public, read_json, requires_scope
from authz.openapi import openapi_document
from authz.decisions import AuditUnavailable
from authz.requests import parse_authorize, parse_batch, parse_evaluation, parse_evaluations

bp = Blueprint("authz", __name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _decide(items, stop=None):
    service = current_app.extensions["warden"].decisions
    return service.authorize(items, service=g.caller.name, stop=stop,
                             request_id=request_id(request.headers.get("X-Request-Id", "")))


UNAUDITED_MESSAGE = "the audit ledger could not record the decision, so access is denied"


def _unaudited(count: int):
    body = {"allowed": False} if count == 1 else {"decisions": [{"allowed": False}] * count}
    return error_response(503, "audit_unavailable", UNAUDITED_MESSAGE, **body)


def request_id(header: str) -> str:
    """The caller's X-Request-Id when it is a sensible one, else a fresh id."""
    return header if _REQUEST_ID.match(header) else uuid4_hex()


@bp.post("/v1/authorize")
@requires_scope("authorize")
def authorize():
    item = parse_authorize(read_json())
    try:
        return jsonify(_decide([item])[0])
    except AuditUnavailable:
        return _unaudited(1)


@bp.post("/v1/authorize/batch")
@requires_scope("authorize")
def authorize_batch():
    items = parse_batch(read_json())
    try:
        return jsonify({"decisions": _decide(items)})
    except AuditUnavailable:
        return _unaudited(len(items))


def _authzen(answer: dict) -> dict:
    return {"decision": answer["allowed"],
            "context": {"reason": answer["reason"], "decision_id": answer["decision_id"],
                        "audit_seq": answer["audit_seq"], "policy_version": answer["policy_version"]}}


def _authzen_unaudited():
    return error_response(503, "audit_unavailable", UNAUDITED_MESSAGE, decision=False)


@bp.post("/access/v1/evaluation")
@requires_scope("authorize")
def evaluation():
    item = parse_evaluation(read_json())
    try:
        return jsonify(_authzen(_decide([item])[0]))
    except AuditUnavailable:
        return _authzen_unaudited()


_STOPS = {"execute_all": None,
          "deny_on_first_deny": lambda decision: not decision.allowed,
          "permit_on_first_permit": lambda decision: decision.allowed}


@bp.post("/access/v1/evaluations")
@requires_scope("authorize")
def evaluations():
    body = read_json()
    batch = parse_evaluations(body)
    try:
        if batch is None:
            return jsonify(_authzen(_decide([parse_evaluation(body)])[0]))
        items, semantic = batch
        return jsonify({"evaluations": [_authzen(a) for a in _decide(items, stop=_STOPS[semantic])]})
    except AuditUnavailable:
        return _authzen_unaudited()


@bp.get("/openapi.json")
@public
def openapi():
    """The OpenAPI 3.1 description of this API."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        release = version("warden")
    except PackageNotFoundError:
        release = "dev"
    return jsonify(openapi_document(release))
