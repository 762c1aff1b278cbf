"""A new admin in real Chromium: sign in, forced enrollment, codes, admin page, replay, recovery codes.

Runs Debian's chromium (/usr/bin/chromium) through Playwright; never a downloaded
browser. Skipped when it is missing, unless WARDEN_REQUIRE_BROWSER=1 (CI sets it).
"""

import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pyotp
import pytest

from app import upgrade_database
from tests.conftest import free_port, wait_for_port

CHROMIUM = os.environ.get("WARDEN_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery staple"
ARTIFACTS = os.environ.get("WARDEN_BROWSER_ARTIFACTS")


def _browser_or_skip():
    if not shutil.which(CHROMIUM):
        if os.environ.get("WARDEN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"WARDEN_REQUIRE_BROWSER=1 but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"browser tests skipped: {CHROMIUM} not found (apt-get install chromium; "
                    "set WARDEN_REQUIRE_BROWSER=1 to make this a failure)")
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture
def server(tmp_path):
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    upgrade_database(url)
    env = {**os.environ, "WARDEN_DATABASE_URL": url, "WARDEN_KEY_DIR": str(tmp_path / "keys"),
           "WARDEN_LOG_DIR": str(tmp_path / "logs")}
    warden = [sys.executable, "-c", "import app; app.main()"]
    subprocess.run([*warden, "user", "create", "ada", "--role", "admin", "--password-stdin"], env=env,
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen([*warden, "serve", "--port", str(port), "--workers", "1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def page(server):
    sync_api = _browser_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        context = browser.new_context(base_url=server)
        yield context.new_page()
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    if ARTIFACTS:
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)


def sign_in(page) -> None:
    page.goto("/login")
    page.fill("input[name=name]", "ada")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def sign_out(page) -> None:
    page.click("nav button.link")
    page.wait_for_url("**/login")


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(timezone.utc) + timedelta(seconds=30 * offset_steps))


def test_new_admin_enrolls_and_signs_in_again_with_totp_and_recovery_codes(page):
    sign_in(page)
    page.wait_for_url("**/mfa/enroll**")
    page.goto("/admin")  # nothing else is reachable yet
    page.wait_for_url("**/mfa/enroll**")
    assert page.locator(".qr svg").count() == 1
    shot(page, "1-enroll")
    secret = page.inner_text("#totp-secret").replace(" ", "")
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    enrollment_code = code_at(secret)
    page.fill("input[name=code]", enrollment_code)
    page.click("button[type=submit]")
    codes = [c.strip() for c in page.locator("#recovery-codes code").all_inner_texts()]
    assert len(codes) == 10
    assert page.locator("a[download]").count() == 1
    shot(page, "2-recovery-codes")
    page.click("text=I saved them")
    page.wait_for_url("**/admin")
    assert page.locator("h1", has_text="Policy").count() == 1
    shot(page, "3-admin")

    # Sign in again: the code used at enrollment is refused, a fresh one admits.
    sign_out(page)
    sign_in(page)
    page.wait_for_url("**/mfa/verify**")
    page.fill("input[name=code]", enrollment_code)  # replayed (or, a minute later, simply too old)
    page.click("button[type=submit]")
    assert "used already" in page.inner_text(".error") or "not right" in page.inner_text(".error")
    page.fill("input[name=code]", code_at(secret, +1))
    page.click("button[type=submit]")
    page.wait_for_url("**/admin")

    # A recovery code admits once.
    sign_out(page)
    sign_in(page)
    page.wait_for_url("**/mfa/verify**")
    page.fill("input[name=code]", codes[0])
    page.click("button[type=submit]")
    page.wait_for_url("**/mfa/enroll**")  # the page says how many recovery codes are left
    assert "9 left" in page.inner_text("main")
    page.goto("/admin")
    assert page.locator("h1", has_text="Policy").count() == 1
    sign_out(page)
    sign_in(page)
    page.wait_for_url("**/mfa/verify**")
    page.fill("input[name=code]", codes[0])
    page.click("button[type=submit]")
    assert page.locator(".error").count() == 1
    assert "/mfa/verify" in page.url
