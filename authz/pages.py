"""The pages: sign-in, the second factor, a read-only admin view and the privacy self-service page.

Server-rendered, no third-party assets. Every page that needs a person says so
with `@signed_in(...)`: no session sends them to /login; an admin or reviewer
(or anyone who enrolled a second factor) without TOTP in this session goes to
/mfa/enroll or /mfa/verify and can do nothing else; every POST must carry the
session's CSRF token.
"""

import base64
import functools
import hmac
import json
import secrets
from urllib.parse import urlparse

import segno
from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for

from audit.chain import utcnow
from audit.web import public
from authz.accounts import ADMIN, MFA_ROLES, REVIEWER, is_fresh
from authz.mfa import MfaError
from authz.rules import policy_to_csv

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
COOKIE = "warden_session"
LOGIN_CSRF_COOKIE = "warden_login_csrf"
FRESH_PASSWORD_SECONDS = 5 * 60


def _services():
    return current_app.extensions["warden"]


def _set_session_cookie(response: Response, raw_id: str) -> Response:
    response.set_cookie(COOKIE, raw_id, httponly=True, samesite="Strict",
                        secure=current_app.config["SESSION_COOKIE_SECURE"], path="/")
    return response


def _safe_next(target: str | None, default: str) -> str:
    """Only local paths: never redirect a person to another site after sign-in."""
    if target and target.startswith("/") and not target.startswith("//") and not urlparse(target).netloc:
        return target
    return default


def _landing(account) -> str:
    if account.role == ADMIN:
        return url_for("pages.admin")
    return url_for("review_pages.review") if account.role == REVIEWER else url_for("pages.privacy")


def signed_in(*roles: str, mfa: bool = True):
    """Admit a signed-in person (with one of `roles`, if given) who passed MFA when their role needs it."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            warden, now = _services(), utcnow()
            session = warden.sessions.load(request.cookies.get(COOKIE), now)
            if session is None:
                return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
            account = warden.accounts.get(session.account_id)
            if account is None:
                warden.sessions.end(session.raw_id)
                return redirect(url_for("pages.login"))
            g.session, g.account = session, account
            if mfa and account.needs_mfa:
                if not account.mfa_enabled:
                    return redirect(url_for("pages.mfa_enroll"))
                if session.mfa_at is None:
                    return redirect(url_for("pages.mfa_verify", next=request.full_path.rstrip("?")))
            if roles and account.role not in roles:
                return render_template("message.html", title="Not for your role",
                                       message=f"This page is for: {', '.join(roles)}."), 403
            if request.method == "POST" and not session.csrf_ok(request.form.get("csrf_token")):
                return render_template("message.html", title="Form expired",
                                       message="The form's security token is missing or old. Go back, "
                                               "reload the page and try again."), 400
            return view(*args, **kwargs)
        wrapper.warden_public = True  # not for service tokens: the session decides
        wrapper.warden_roles = roles
        wrapper.warden_mfa = mfa
        return wrapper
    return decorate


@bp.app_context_processor
def _page_context():
    account = getattr(g, "account", None)
    session = getattr(g, "session", None)
    mfa_ok = bool(account) and (not account.needs_mfa or (account.mfa_enabled and session.mfa_at is not None))
    return {"account": account, "csrf_token": session.csrf if session else "", "mfa_ok": mfa_ok,
            "mfa_roles": MFA_ROLES, "admin_role": ADMIN, "review_roles": (ADMIN, REVIEWER)}


# --- sign-in --------------------------------------------------------------------------------

@bp.get("/")
@public
def index():
    return redirect(url_for("pages.login"))


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    """One generic message for any failure, so the page does not tell who has an account."""
    next_path = request.values.get("next")
    error = None
    if request.method == "POST":
        cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie_token or not hmac.compare_digest(cookie_token, request.form.get("csrf_token", "")):
            error = "The form expired. Please try again."
        else:
            warden = _services()
            account = warden.accounts.authenticate(request.form.get("name", ""), request.form.get("password", ""))
            if account is None:
                error = "Those credentials are not right."
            else:
                warden.sessions.end(request.cookies.get(COOKIE))  # never carry an old id over a sign-in
                raw_id = warden.sessions.create(account.id, utcnow())
                if account.needs_mfa:
                    target = url_for("pages.mfa_verify" if account.mfa_enabled else "pages.mfa_enroll",
                                     next=_safe_next(next_path, ""))
                else:
                    target = _safe_next(next_path, _landing(account))
                response = redirect(target)
                response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
                return _set_session_cookie(response, raw_id)
    token = secrets.token_urlsafe(32)
    status = 200 if error is None else 400 if error.startswith("The form expired") else 401
    response = Response(render_template("login.html", error=error, next=next_path or "", login_csrf=token),
                        status=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


@bp.route("/logout", methods=["GET", "POST"])
@signed_in(mfa=False)
def logout():
    if request.method == "GET":
        return render_template("logout.html")
    _services().sessions.end(g.session.raw_id)
    response = redirect(url_for("pages.login"))
    response.delete_cookie(COOKIE, path="/")
    return response


# --- the second factor ----------------------------------------------------------------------

@bp.route("/mfa/verify", methods=["GET", "POST"])
@signed_in(mfa=False)
def mfa_verify():
    warden, account = _services(), g.account
    if not account.mfa_enabled:
        return redirect(url_for("pages.mfa_enroll"))
    next_path = _safe_next(request.values.get("next"), _landing(account))
    error, status = None, 200
    if request.method == "POST":
        try:
            used = warden.mfa.verify(account.id, request.form.get("code", ""), utcnow())
        except MfaError as exc:
            error, status = exc.message, 429 if exc.code == "throttled" else 423 if exc.code == "locked" else 401
        else:
            raw_id = warden.sessions.elevate(g.session, utcnow(), mfa=True)
            if used == "recovery":
                left = warden.mfa.recovery_codes_left(account.id)
                next_path = url_for("pages.mfa_enroll", recovery_left=left)
            return _set_session_cookie(redirect(next_path), raw_id)
    return render_template("mfa_verify.html", error=error, next=next_path), status


@bp.route("/mfa/enroll", methods=["GET", "POST"])
@signed_in(mfa=False)
def mfa_enroll():
    warden, account, session, now = _services(), g.account, g.session, utcnow()
    if account.mfa_enabled:
        if account.needs_mfa and session.mfa_at is None:
            return redirect(url_for("pages.mfa_verify"))
        return render_template("mfa_status.html", recovery_left=warden.mfa.recovery_codes_left(account.id),
                               notice=request.args.get("recovery_left"))
    error = None
    if request.method == "POST" and request.form.get("action") == "reauth":
        if warden.accounts.check_password(account.id, request.form.get("password", "")):
            raw_id = warden.sessions.elevate(session, now, password=True)
            return _set_session_cookie(redirect(url_for("pages.mfa_enroll")), raw_id)
        error = "That password is not right."
    if not is_fresh(session.password_at, now, FRESH_PASSWORD_SECONDS):
        return render_template("reauth.html", error=error), 401 if error else 200
    enrollment = warden.mfa.begin(account.id)
    if request.method == "POST" and request.form.get("action") == "confirm":
        try:
            codes = warden.mfa.confirm(account.id, request.form.get("code", "").strip(), now)
        except MfaError as exc:
            error = exc.message
        else:
            raw_id = warden.sessions.elevate(session, now, mfa=True)
            download = base64.b64encode(("Warden recovery codes for " + account.name + "\n\n"
                                         + "\n".join(codes) + "\n").encode()).decode()
            page = render_template("recovery_codes.html", codes=codes, download=download,
                                   csrf_token=warden.sessions.load(raw_id, now).csrf)
            return _set_session_cookie(Response(page), raw_id)
    qr = segno.make(enrollment.uri, error="m").svg_inline(scale=5, dark="#1b2430", light="#ffffff")
    spaced = " ".join(enrollment.secret[i:i + 4] for i in range(0, len(enrollment.secret), 4))
    return render_template("mfa_enroll.html", qr=qr, secret=spaced, error=error), 400 if error else 200


@bp.post("/mfa/enroll/done")
@signed_in()
def mfa_enroll_done():
    return redirect(_landing(g.account))


@bp.post("/mfa/reset")
@signed_in()
def mfa_reset():
    """Turning one's own factor off needs the password and a current code, both fresh."""
    warden, account = _services(), g.account
    if not warden.accounts.check_password(account.id, request.form.get("password", "")):
        return render_template("message.html", title="Not reset", message="That password is not right."), 401
    try:
        warden.mfa.verify(account.id, request.form.get("code", ""), utcnow())
    except MfaError as exc:
        return render_template("message.html", title="Not reset", message=exc.message), 401
    warden.mfa.reset(account.id, actor="self")
    warden.sessions.end_all(account.id)
    response = redirect(url_for("pages.login"))
    response.delete_cookie(COOKIE, path="/")
    return response


# --- admin ----------------------------------------------------------------------------------

@bp.get("/admin")
@signed_in(ADMIN)
def admin():
    warden = _services()
    policy = warden.policies.export()
    return render_template("admin.html", rules=sorted(policy.rules), roles=sorted(policy.roles),
                           csv=policy_to_csv(policy), accounts=warden.accounts.all())


@bp.post("/admin/accounts/<int:account_id>/reset-mfa")
@signed_in(ADMIN)
def admin_reset_mfa(account_id: int):
    """An admin, with their own second factor passed, resets another person's (audited)."""
    warden = _services()
    target = warden.accounts.get(account_id) if account_id < 2**31 else None
    if target is None:
        abort(404)
    warden.mfa.reset(account_id, actor=f"admin:account-{g.account.id}")
    warden.sessions.end_all(account_id)
    return render_template("message.html", title="Second factor reset",
                           message=f"{target.name} must enroll a new authenticator at next sign-in.")


# --- privacy self-service -------------------------------------------------------------------

@bp.route("/privacy", methods=["GET", "POST"])
@signed_in()
def privacy():
    """A signed-in person's own requests: see them, download an access export, erase, opt out."""
    warden, account = _services(), g.account
    message = None
    if request.method == "POST":
        kind = request.form.get("kind")
        if kind not in ("access", "erasure", "opt_out"):
            return render_template("message.html", title="Unknown request", message="Choose a request kind."), 400
        if kind == "erasure" and request.form.get("confirm") != "erase":
            message = "To erase your data, tick the confirmation box."
        else:
            done = warden.privacy.submit(account.name, kind, actor=f"self-service:{kind}")
            message = f"Your {kind.replace('_', '-')} request is {done['status']}."
    return render_template("privacy.html", requests=warden.privacy.requests_of(account.name), message=message)


@bp.get("/privacy/export/<request_id>")
@signed_in()
def privacy_export(request_id: str):
    warden = _services()
    mine = {r["id"] for r in warden.privacy.requests_of(g.account.name)}
    if request_id not in mine:
        abort(404)
    export = warden.privacy.export(request_id)
    return Response(json.dumps(export, indent=2), mimetype="application/json",
                    headers={"Content-Disposition": f"attachment; filename=warden-access-{request_id}.json"})
