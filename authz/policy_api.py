"""HTTP adapters for policy administration: /v1/policies (p rows) and /v1/roles (g rows).

GET needs `audit:read`; POST (add) and DELETE (remove) need `policy:write`. Bodies
carry rows as lists of fields, as `warden policy export` prints them:
`{"rules": [["role:eng", "prod", "db/*", "read", "maintenance", "allow"]]}` and
`{"roles": [["alice", "role:eng", "*"]]}`. Every row is validated as a policy
file's would be; one bad row and nothing changes. Every change is audited.
"""

from flask import Blueprint, current_app, g, jsonify

from audit.db import READ_ONLY
from audit.web import ApiError, read_json, requires_scope
from authz.rules import Policy, make_rule

bp = Blueprint("policy_api", __name__)
MAX_ROWS = 10_000


def _store():
    return current_app.extensions["warden"].policies


def _rows(ptype: str, key: str) -> Policy:
    body = read_json()
    if set(body) != {key}:
        raise ApiError(400, "invalid_request", f"send {{\"{key}\": [[...fields...], ...]}}")
    rows = body[key]
    if not isinstance(rows, list) or not rows:
        raise ApiError(400, "invalid_request", f"{key} must be a non-empty list of rows")
    if len(rows) > MAX_ROWS:
        raise ApiError(400, "invalid_request", f"at most {MAX_ROWS} rows at once")
    made = []
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise ApiError(400, "invalid_request", f"{key}[{i}]: a row is a list of fields")
        try:
            made.append(make_rule(ptype, row))
        except ValueError as exc:
            raise ApiError(400, "invalid_request", f"{key}[{i}]: {exc}") from None
    if ptype == "p":
        return Policy(rules=frozenset(made))
    return Policy(roles=frozenset(made))


def _listing(key: str, rows) -> dict:
    store = _store()
    with store.engine.connect().execution_options(**READ_ONLY) as conn:
        version = store.version(conn)
    return {key: [r.fields() for r in sorted(rows)], "version": version}


def _change(change) -> dict:
    return {"added": change.added, "removed": change.removed, "version": change.version}


def _register(path: str, ptype: str, key: str, rows_of) -> None:
    """GET, POST and DELETE for one kind of row (p rows at /v1/policies, g rows at /v1/roles)."""
    name = path.rsplit("/", 1)[-1]

    def listing():
        return jsonify(_listing(key, rows_of(_store().export())))

    def add():
        return jsonify(_change(_store().apply(_rows(ptype, key), replace=False, actor=f"service:{g.caller.name}")))

    def remove():
        return jsonify(_change(_store().remove(_rows(ptype, key), actor=f"service:{g.caller.name}")))

    bp.add_url_rule(path, f"list_{name}", requires_scope("audit:read")(listing), methods=["GET"])
    bp.add_url_rule(path, f"add_{name}", requires_scope("policy:write")(add), methods=["POST"])
    bp.add_url_rule(path, f"remove_{name}", requires_scope("policy:write")(remove), methods=["DELETE"])


_register("/v1/policies", "p", "rules", lambda policy: policy.rules)
_register("/v1/roles", "g", "roles", lambda policy: policy.roles)
