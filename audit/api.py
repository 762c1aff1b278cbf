"""HTTP adapters for the ledger: health and verification."""

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from audit.db import READ_ONLY
from audit.verify import verify_ledger
from audit.web import error_response, public, requires_scope

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
