"""HTTP adapters for the review queue: list, read and triage items (scope `review`)."""

from flask import Blueprint, current_app, g, jsonify, request

from audit.web import ApiError, read_json, requires_scope
from detectors.findings import PRIORITIES
from detectors.review import MAX_NOTE, STATUSES, UnknownItem

bp = Blueprint("review", __name__)
_FILTERS = ("status", "priority", "detector", "subject")
_PATCHABLE = {"status", "assignee", "note"}


def _queue():
    return current_app.extensions["warden"].review


@bp.get("/v1/review/items")
@requires_scope("review")
def list_items():
    unknown = set(request.args) - {*_FILTERS, "limit", "cursor"}
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown parameter(s): {', '.join(sorted(unknown))}")
    status, priority = request.args.get("status"), request.args.get("priority")
    if status is not None and status not in STATUSES:
        raise ApiError(400, "invalid_request", f"status must be one of {', '.join(STATUSES)}")
    if priority is not None and priority not in PRIORITIES:
        raise ApiError(400, "invalid_request", f"priority must be one of {', '.join(PRIORITIES)}")
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 200:
        raise ApiError(400, "invalid_request", "limit must be a whole number from 1 to 200")
    try:
        items, cursor = _queue().list(limit=limit, cursor=request.args.get("cursor"),
                                      **{name: request.args.get(name) for name in _FILTERS})
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    return jsonify({"items": items, "next_cursor": cursor})


@bp.get("/v1/review/items/<item_id>")
@requires_scope("review")
def get_item(item_id: str):
    try:
        return jsonify(_queue().get(item_id))
    except UnknownItem:
        raise ApiError(404, "not_found", f"no review item {item_id}") from None


@bp.patch("/v1/review/items/<item_id>")
@requires_scope("review")
def patch_item(item_id: str):
    body = read_json()
    if unknown := set(body) - _PATCHABLE:
        raise ApiError(400, "invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}; "
                                           "send status, assignee and/or note")
    if not body:
        raise ApiError(400, "invalid_request", "send status, assignee and/or note")
    status, assignee, note = body.get("status"), body.get("assignee"), body.get("note")
    if status is not None and status not in STATUSES:
        raise ApiError(400, "invalid_request", f"status must be one of {', '.join(STATUSES)}")
    if "assignee" in body and assignee is not None and (not isinstance(assignee, str) or not 1 <= len(assignee) <= 100):
        raise ApiError(400, "invalid_request", "assignee must be a name of 1 to 100 characters, or null")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise ApiError(400, "invalid_request", f"note must be text of at most {MAX_NOTE} characters")
    try:
        item = _queue().update(item_id, actor=f"service:{g.caller.name}", status=status, note=note,
                               assignee=assignee, clear_assignee="assignee" in body and assignee is None)
    except UnknownItem:
        raise ApiError(404, "not_found", f"no review item {item_id}") from None
    return jsonify(item)
