"""Sign-in, TOTP enrollment and verification, sessions and CSRF, through the Flask test client."""

import json
import re
import threading
from datetime import datetime, timedelta, timezone

import pyotp
import pytest
from freezegun import freeze_time

from authz.mfa import MfaError, delay_after
from authz.pages import COOKIE
from authz.rules import parse_policy_csv
from tests.conftest import ledger_rows

T0 = datetime(2026, 11, 29, 9, 0, 0, tzinfo=timezone.utc)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def clock():
    with freeze_time(T0) as frozen:
        yield frozen


def hidden(page: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', page).group(1)


def login(client, name: str, password: str = PASSWORD, next_path: str = ""):
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"name": name, "password": password, "next": next_path,
                                       "csrf_token": hidden(page, "csrf_token")})


def session_id(client) -> str | None:
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


def enroll(client) -> tuple[str, list[str]]:
    """Walk the enrollment page; return the secret and the recovery codes it showed."""
    page = client.get("/mfa/enroll").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page).group(1).replace(" ", "")
    code = pyotp.TOTP(secret).at(datetime.now(timezone.utc))
    shown = client.post("/mfa/enroll", data={"action": "confirm", "code": code,
                                             "csrf_token": hidden(page, "csrf_token")}).get_data(as_text=True)
    codes = re.findall(r"<li><code>([A-Z2-7-]+)</code></li>", shown)
    client.post("/mfa/enroll/done", data={"csrf_token": hidden(shown, "csrf_token")})
    return secret, codes


def csrf_of(client, path: str) -> str:
    return hidden(client.get(path).get_data(as_text=True), "csrf_token")


@pytest.fixture
def admin(warden):
    return warden.accounts.create("ada", "admin", PASSWORD, actor="test")


def test_admin_is_forced_to_enroll_then_reaches_admin(client, admin, clock, warden):
    response = login(client, "ada")
    assert response.status_code == 302 and response.location.startswith("/mfa/enroll")
    assert client.get("/admin").location.startswith("/mfa/enroll")  # nothing else until enrolled
    assert client.get("/privacy").location.startswith("/mfa/enroll")
    page = client.get("/mfa/enroll").get_data(as_text=True)
    assert "<svg" in page and 'id="totp-secret"' in page  # QR drawn server-side, secret as text
    secret, codes = enroll(client)
    assert len(secret) == 32  # 160 bits
    assert len(codes) == 10 and all(len(c.replace("-", "")) == 24 for c in codes)  # 120 bits each
    assert client.get("/admin").status_code == 200
    kinds = [r.kind for r in ledger_rows(warden.engine)]
    assert {"auth.login", "mfa.enroll"} <= set(kinds)


def test_enrolled_admin_signs_in_with_a_code_once(client, admin, clock, warden):
    login(client, "ada")
    secret, _ = enroll(client)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/logout")})
    clock.tick(60)
    response = login(client, "ada")
    assert response.location.startswith("/mfa/verify")
    code = pyotp.TOTP(secret).at(datetime.now(timezone.utc))
    token = csrf_of(client, "/mfa/verify")
    assert client.post("/mfa/verify", data={"code": code, "csrf_token": token}).status_code == 302
    assert client.get("/admin").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_of(client, "/logout")})
    login(client, "ada")
    replay = client.post("/mfa/verify", data={"code": code, "csrf_token": csrf_of(client, "/mfa/verify")})
    assert replay.status_code == 401 and "used already" in replay.get_data(as_text=True)


def test_generic_failure_for_unknown_user_and_wrong_password(client, admin, warden):
    unknown = login(client, "nobody", "whatever-password")
    wrong = login(client, "ada", "wrong password here")
    assert unknown.status_code == wrong.status_code == 401
    assert "Those credentials are not right." in unknown.get_data(as_text=True)
    assert "Those credentials are not right." in wrong.get_data(as_text=True)
    assert [r.kind for r in ledger_rows(warden.engine)].count("auth.failure") == 2


def test_login_form_needs_its_csrf_cookie(client, admin):
    response = client.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": "forged"})
    assert response.status_code == 400 and "expired" in response.get_data(as_text=True)


def test_session_id_changes_at_sign_in_and_at_mfa(client, admin, clock):
    login(client, "ada")
    first = session_id(client)
    secret, _ = enroll(client)
    after_mfa = session_id(client)
    assert first and after_mfa and first != after_mfa
    client.post("/logout", data={"csrf_token": csrf_of(client, "/logout")})
    assert session_id(client) is None


def test_cookie_flags(warden, app, admin):
    app.config["SESSION_COOKIE_SECURE"] = True
    client = app.test_client()
    response = login(client, "ada")
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie


def test_posts_without_the_session_csrf_token_are_refused(client, warden):
    warden.accounts.create("uma", "user", PASSWORD, actor="test")
    login(client, "uma")
    response = client.post("/privacy", data={"kind": "opt_out"})
    assert response.status_code == 400 and "security token" in response.get_data(as_text=True)
    response = client.post("/privacy", data={"kind": "opt_out", "csrf_token": "x" * 43})
    assert response.status_code == 400


def test_idle_and_absolute_timeouts(client, warden, clock):
    warden.accounts.create("uma", "user", PASSWORD, actor="test")
    login(client, "uma")
    assert client.get("/privacy").status_code == 200
    clock.tick(timedelta(minutes=31))
    assert client.get("/privacy").location.startswith("/login")
    login(client, "uma")
    for _ in range(25):  # active every 29 minutes, for over 12 hours
        clock.tick(timedelta(minutes=29))
        response = client.get("/privacy")
        if response.status_code != 200:
            break
    assert response.location.startswith("/login")
    assert datetime.now(timezone.utc) - T0 > timedelta(hours=12)


# --- the verification rules, on the service --------------------------------------------------

@pytest.fixture
def enrolled(warden, clock):
    """An admin with TOTP on; returns (account id, secret, recovery codes)."""
    account = warden.accounts.create("ada", "admin", PASSWORD, actor="test")
    enrollment = warden.mfa.begin(account.id)
    codes = warden.mfa.confirm(account.id, pyotp.TOTP(enrollment.secret).at(T0), T0)
    clock.tick(120)
    return account.id, enrollment.secret, codes


@pytest.mark.parametrize("offset,accepted", [(-60, False), (-30, True), (0, True), (30, True), (60, False)])
def test_one_step_of_drift(warden, enrolled, offset, accepted):
    account_id, secret, _ = enrolled
    now = datetime.now(timezone.utc)
    code = pyotp.TOTP(secret).at(now + timedelta(seconds=offset))
    if accepted:
        assert warden.mfa.verify(account_id, code, now) == "totp"
    else:
        with pytest.raises(MfaError, match="not right"):
            warden.mfa.verify(account_id, code, now)


def test_an_older_step_is_refused_after_a_newer_one(warden, enrolled):
    account_id, secret, _ = enrolled
    now = datetime.now(timezone.utc)
    warden.mfa.verify(account_id, pyotp.TOTP(secret).at(now), now)
    with pytest.raises(MfaError) as refused:
        warden.mfa.verify(account_id, pyotp.TOTP(secret).at(now - timedelta(seconds=30)), now)
    assert refused.value.code == "replayed"


def test_two_concurrent_submissions_of_one_code_cannot_both_pass(warden, enrolled):
    account_id, secret, _ = enrolled
    now = datetime.now(timezone.utc)
    code = pyotp.TOTP(secret).at(now)
    results, gate = [], threading.Barrier(4)

    def submit():
        gate.wait()
        try:
            results.append(warden.mfa.verify(account_id, code, now))
        except MfaError as exc:
            results.append(exc.code)
    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["replayed"] * 3 + ["totp"]


def test_recovery_codes_burn_on_use(warden, enrolled):
    account_id, _, codes = enrolled
    now = datetime.now(timezone.utc)
    assert warden.mfa.verify(account_id, codes[0].lower(), now) == "recovery"  # case and dashes forgiven
    with pytest.raises(MfaError):
        warden.mfa.verify(account_id, codes[0], now)
    assert warden.mfa.recovery_codes_left(account_id) == 9
    assert "mfa.recovery_used" in [r.kind for r in ledger_rows(warden.engine)]


def test_failures_grow_delays_then_lock(warden, enrolled, clock):
    account_id, secret, _ = enrolled
    assert [delay_after(n) for n in (1, 4, 5, 6, 7, 30)] == [0, 0, 1, 2, 4, 900]
    for attempt in range(1, 13):  # the test app locks after 12 (WARDEN_MFA_MAX_FAILURES)
        now = datetime.now(timezone.utc)
        with pytest.raises(MfaError) as refused:
            warden.mfa.verify(account_id, "000000", now)
        assert refused.value.code == "wrong_code"
        if attempt == 6:
            with pytest.raises(MfaError) as throttled:
                warden.mfa.verify(account_id, pyotp.TOTP(secret).at(now), now)
            assert throttled.value.code == "throttled" and throttled.value.retry_after == 2
        clock.tick(timedelta(seconds=delay_after(attempt) + 1))
    now = datetime.now(timezone.utc)
    with pytest.raises(MfaError) as locked:
        warden.mfa.verify(account_id, pyotp.TOTP(secret).at(now), now)
    assert locked.value.code == "locked"
    assert "mfa.lock" in [r.kind for r in ledger_rows(warden.engine)]
    warden.mfa.reset(account_id, actor="test")
    assert "mfa.reset" in [r.kind for r in ledger_rows(warden.engine)]


def test_a_good_code_clears_the_failure_count(warden, enrolled):
    account_id, secret, _ = enrolled
    now = datetime.now(timezone.utc)
    for _ in range(4):
        with pytest.raises(MfaError):
            warden.mfa.verify(account_id, "000000", now)
    assert warden.mfa.verify(account_id, pyotp.TOTP(secret).at(now), now) == "totp"


def test_the_secret_is_stored_encrypted(warden, enrolled):
    _, secret, codes = enrolled
    with warden.engine.connect() as conn:
        dump = " ".join(str(v) for table in ("accounts", "recovery_codes")
                        for row in conn.exec_driver_sql(f"SELECT * FROM {table}") for v in row)
    assert secret not in dump and not any(c in dump or c.replace("-", "") in dump for c in codes)


# --- enforcement ------------------------------------------------------------------------------

def test_every_admin_page_refuses_a_session_without_mfa(app, client, admin, clock):
    login(client, "ada")
    enroll(client)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/logout")})
    login(client, "ada")  # password only: MFA not yet passed in this session
    urls = app.url_map.bind("localhost")
    checked = 0
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if getattr(view, "warden_mfa", False) is False:
            continue
        url = urls.build(rule.endpoint, {arg: 1 for arg in rule.arguments})
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(url, method=method)
            assert response.status_code == 302 and response.location.startswith("/mfa/verify"), rule.rule
            checked += 1
    assert checked >= 5


def test_reviewer_needs_mfa_too_and_ordinary_users_do_not(client, warden):
    warden.accounts.create("rex", "security-reviewer", PASSWORD, actor="test")
    assert login(client, "rex").location.startswith("/mfa/enroll")
    other = client.application.test_client()
    warden.accounts.create("uma", "user", PASSWORD, actor="test")
    assert login(other, "uma").location == "/privacy"
    assert other.get("/admin").status_code == 403


def test_service_tokens_cannot_reach_pages(client, make_token):
    token = make_token("authorize", "audit:read", "policy:write", "privacy", "review")
    response = client.get("/admin", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 302 and response.location.startswith("/login")


def test_admin_resets_another_accounts_mfa_with_their_own(client, warden, clock):
    rex = warden.accounts.create("rex", "security-reviewer", PASSWORD, actor="test")
    enrollment = warden.mfa.begin(rex.id)
    warden.mfa.confirm(rex.id, pyotp.TOTP(enrollment.secret).at(T0), T0)
    warden.accounts.create("ada", "admin", PASSWORD, actor="test")
    login(client, "ada")
    enroll(client)
    page = client.get("/admin").get_data(as_text=True)
    assert f"/admin/accounts/{rex.id}/reset-mfa" in page
    response = client.post(f"/admin/accounts/{rex.id}/reset-mfa", data={"csrf_token": hidden(page, "csrf_token")})
    assert response.status_code == 200
    assert warden.accounts.get(rex.id).mfa_enabled is False
    resets = [json.loads(r.body)["data"] for r in ledger_rows(warden.engine) if r.kind == "mfa.reset"]
    assert resets and resets[-1]["actor"].startswith("admin:")


def test_own_reset_needs_password_and_current_code(client, admin, clock, warden):
    login(client, "ada")
    secret, _ = enroll(client)
    clock.tick(60)
    token = csrf_of(client, "/mfa/enroll")
    code = pyotp.TOTP(secret).at(datetime.now(timezone.utc))
    assert client.post("/mfa/reset", data={"password": "nope nope nope", "code": code,
                                           "csrf_token": token}).status_code == 401
    assert client.post("/mfa/reset", data={"password": PASSWORD, "code": code,
                                           "csrf_token": token}).status_code == 302
    assert warden.accounts.get_by_name("ada").mfa_enabled is False


def test_privacy_self_service(client, warden, auth, load_policy):
    load_policy("p, uma, prod, db/*, read, *, allow\n")
    client.post("/v1/authorize", headers=auth, json={"subject": "uma", "domain": "prod", "object": "db/x",
                                                     "action": "read", "context": {"ticket": "T-1"}})
    warden.accounts.create("uma", "user", PASSWORD, actor="test")
    login(client, "uma")
    token = csrf_of(client, "/privacy")
    page = client.post("/privacy", data={"kind": "access", "csrf_token": token}).get_data(as_text=True)
    assert "access request is completed" in page
    link = re.search(r'href="(/privacy/export/[^"]+)"', page).group(1)
    export = json.loads(client.get(link).get_data(as_text=True))
    assert export["subject"] == "uma" and export["decisions"][0]["context"] == {"ticket": "T-1"}
    refused = client.post("/privacy", data={"kind": "erasure", "csrf_token": token}).get_data(as_text=True)
    assert "tick the confirmation box" in refused


def test_user_create_cli(runner, warden):
    result = runner.invoke(args=["user", "create", "ada", "--role", "admin", "--password-stdin"],
                           input=PASSWORD + "\n")
    assert result.exit_code == 0 and "must enroll TOTP" in result.output
    assert warden.accounts.authenticate("ada", PASSWORD) is not None
    short = runner.invoke(args=["user", "create", "bob", "--role", "admin", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 12" in short.output
    again = runner.invoke(args=["user", "create", "ada", "--role", "admin", "--password-stdin"],
                          input=PASSWORD + "\n")
    assert again.exit_code == 1 and "exists already" in again.output
    typo = runner.invoke(args=["user", "create", "cy", "--role", "admn", "--password-stdin"], input=PASSWORD + "\n")
    assert typo.exit_code == 1 and "unknown role 'admn'" in typo.output
    warden.policies.apply(parse_policy_csv("g, someone, role:analyst, *\n"), replace=False, actor="test")
    analyst = runner.invoke(args=["user", "create", "cy", "--role", "role:analyst", "--password-stdin"],
                            input=PASSWORD + "\n")
    assert analyst.exit_code == 0, analyst.output
    warden.policies.apply(parse_policy_csv("p, role:auditor, *, warehouse/*, read, reporting, allow\n"),
                          replace=False, actor="test")  # granted to, held by nobody yet
    auditor = runner.invoke(args=["user", "create", "dee", "--role", "role:auditor", "--password-stdin"],
                            input=PASSWORD + "\n")
    assert auditor.exit_code == 0, auditor.output
    person = runner.invoke(args=["user", "create", "eve", "--role", "someone", "--password-stdin"],
                           input=PASSWORD + "\n")  # a member of a role is not a role
    assert person.exit_code == 1 and "unknown role 'someone'" in person.output


def test_an_erased_account_holder_must_enroll_again(client, warden, enrolled, make_token):
    account_id, secret, _ = enrolled
    privacy = {"Authorization": f"Bearer {make_token('privacy')}"}
    client.post("/v1/privacy/requests", json={"subject": "ada", "kind": "erasure"}, headers=privacy)
    assert warden.accounts.get(account_id).mfa_enabled is False  # reset, audited
    login(client, "ada")
    assert client.get("/admin").location.startswith("/mfa/enroll")
