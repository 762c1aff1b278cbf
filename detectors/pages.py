"""/review: the security team's queue in the browser (reviewers and admins, second factor passed)."""

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from authz.accounts import ADMIN, REVIEWER
from authz.pages import signed_in
from detectors.review import MAX_NOTE, STATUSES, UnknownItem

bp = Blueprint("review_pages", __name__, template_folder="templates")
_PRIORITY_ORDER = {"high": 0, "medium": 1, "low": 2}


@bp.get("/review")
@signed_in(REVIEWER, ADMIN)
def review():
    status = request.args.get("status", "open")
    if status not in STATUSES:
        status = "open"
    queue = current_app.extensions["warden"].review
    items, cursor = queue.list(status=status, limit=200)
    items.sort(key=lambda item: (_PRIORITY_ORDER.get(item["priority"], 9), item["opened_at"]))
    counts = queue.counts()
    return render_template("review.html", items=items, status=status, statuses=STATUSES, counts=counts,
                           more=cursor is not None, max_note=MAX_NOTE)


@bp.post("/review/<item_id>")
@signed_in(REVIEWER, ADMIN)
def triage(item_id: str):
    form = request.form
    status = form.get("status") or None
    if status is not None and status not in STATUSES:
        return render_template("message.html", title="Not changed", message="Choose a status from the list."), 400
    note = (form.get("note") or "").strip()[:MAX_NOTE] or None
    assignee = g.account.name if form.get("assign") == "me" else None
    try:
        current_app.extensions["warden"].review.update(
            item_id, actor=f"{g.account.role}:account-{g.account.id}", status=status, note=note, assignee=assignee)
    except UnknownItem:
        abort(404)
    return redirect(url_for("review_pages.review", status=request.args.get("back", "open")))
