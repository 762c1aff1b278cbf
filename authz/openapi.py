"""The OpenAPI 3.1 description of Warden's HTTP API, served at /openapi.json."""

_NAME = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^*,\"\\x00-\\x1f]+$"}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
_AUTHORIZE_REQUEST = {
    "type": "object", "required": ["subject", "domain", "object", "action"], "additionalProperties": False,
    "properties": {"subject": _NAME, "domain": _NAME, "object": _NAME, "action": _NAME,
                   "context": {"type": "object", "description": "at most 4 KiB; `workflow` names the purpose",
                               "properties": {"workflow": _NAME}}}}
_DECISION = {
    "type": "object",
    "required": ["allowed", "decision_id", "audit_seq", "policy_version", "reason", "matched", "review"],
    "properties": {"allowed": {"type": "boolean"}, "decision_id": {"type": "string"},
                   "audit_seq": {"type": "integer"}, "policy_version": {"type": "integer"},
                   "reason": {"type": "string"},
                   "matched": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
                   "review": {"type": ["object", "null"]}}}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _op(summary: str, scope: str | None, ok: dict | None = None, body: dict | None = None,
        status: str = "200", **extra) -> dict:
    op = {"summary": summary, "responses": {status: {"description": "OK", **(_json(ok) if ok else {})},
                                            "4XX": {"description": "refused", **_json(_ERROR)}}}
    if scope:
        op["security"] = [{"bearer": [scope]}]
        op["responses"]["401"] = {"description": "no valid token", **_json(_ERROR)}
        op["responses"]["403"] = {"description": f"token lacks the {scope} scope", **_json(_ERROR)}
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    op.update(extra)
    return op


def openapi_document(version: str) -> dict:
    """The whole document; deny decisions are 200s, 503 means the ledger could not record the decision."""
    unaudited = {"503": {"description": "denied: the ledger could not commit", **_json(_ERROR)}}
    rows = {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}
    paths = {
        "/v1/authorize": {"post": _op("Decide one request and record it before answering", "authorize",
                                      _DECISION, _AUTHORIZE_REQUEST)},
        "/v1/authorize/batch": {"post": _op(
            "Decide up to 1,000 requests, in order", "authorize",
            {"type": "object", "properties": {"decisions": {"type": "array", "items": _DECISION}}},
            {"type": "object", "required": ["requests"],
             "properties": {"requests": {"type": "array", "maxItems": 1000, "items": _AUTHORIZE_REQUEST}}})},
        "/access/v1/evaluation": {"post": _op("OpenID AuthZEN 1.0 evaluation", "authorize")},
        "/access/v1/evaluations": {"post": _op("OpenID AuthZEN 1.0 evaluations", "authorize")},
        "/v1/audit/events": {
            "get": _op("Search ledger records (filters, cursor pagination)", "audit:read"),
            "post": _op("Report the outcome of an authorized query", "authorize", body={
                "type": "object", "required": ["decision_id", "status"],
                "properties": {"decision_id": {"type": "string"}, "rows": {"type": "integer", "minimum": 0},
                               "bytes": {"type": "integer", "minimum": 0},
                               "duration_ms": {"type": "integer", "minimum": 0}, "status": {"type": "string"}}},
                status="201")},
        "/v1/audit/events/{seq}/reveal": {"post": _op("Who a decision record is about (audited)", "review")},
        "/v1/audit/verify": {"get": _op("Verify the hash chain", "audit:read")},
        "/v1/audit/checkpoints/latest": {"get": _op("The newest signed checkpoint", "audit:read")},
        "/v1/policies": {"get": _op("List p rows", "audit:read"),
                         "post": _op("Add p rows", "policy:write", body={"type": "object",
                                                                         "properties": {"rules": rows}}),
                         "delete": _op("Remove p rows", "policy:write", body={"type": "object",
                                                                              "properties": {"rules": rows}})},
        "/v1/roles": {"get": _op("List g rows", "audit:read"),
                      "post": _op("Add g rows", "policy:write", body={"type": "object",
                                                                      "properties": {"roles": rows}}),
                      "delete": _op("Remove g rows", "policy:write", body={"type": "object",
                                                                           "properties": {"roles": rows}})},
        "/v1/review/items": {"get": _op("Review items, newest first (filters status, priority, detector, "
                                        "subject; limit, cursor)", "review")},
        "/v1/review/items/{id}": {
            "get": _op("One review item", "review"),
            "patch": _op("Triage a review item (audited)", "review", body={
                "type": "object", "properties": {
                    "status": {"enum": ["open", "acknowledged", "resolved", "dismissed"]},
                    "assignee": {"type": ["string", "null"], "maxLength": 100},
                    "note": {"type": "string", "maxLength": 2000}}})},
        "/v1/privacy/requests": {"post": _op("Access, erasure or opt-out request", "privacy", body={
            "type": "object", "required": ["subject", "kind"],
            "properties": {"subject": _NAME, "kind": {"enum": ["access", "erasure", "opt_out"]}}},
            status="201")},
        "/v1/privacy/requests/{id}": {"get": _op("A privacy request and its history", "privacy")},
        "/v1/privacy/requests/{id}/export": {"get": _op("The access export, decrypted", "privacy")},
        "/healthz": {"get": _op("200 when the ledger database answers", None)},
        "/metrics": {"get": _op("Prometheus metrics", None)},
    }
    for path in ("/v1/authorize", "/v1/authorize/batch", "/access/v1/evaluation", "/access/v1/evaluations"):
        paths[path]["post"]["responses"].update(unaudited)
    for path, item in paths.items():
        for name in ("seq", "id"):
            if "{" + name + "}" in path:
                for op in item.values():
                    op["parameters"] = [{"name": name, "in": "path", "required": True,
                                         "schema": {"type": "integer" if name == "seq" else "string"}}]
    return {"openapi": "3.1.0",
            "info": {"title": "Warden", "version": version,
                     "description": "Access decisions with a tamper-evident audit ledger."},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "paths": paths}
