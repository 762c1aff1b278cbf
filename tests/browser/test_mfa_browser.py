"""A new admin in real Chromium: sign in, forced enrollment, codes, admin page, replay, recovery codes.

See tests/browser/conftest.py for how Chromium is found and run."""

import re

import pytest

from tests.browser.conftest import PASSWORD, code_at, shot


@pytest.fixture
def page(warden_cli, open_page):
    warden_cli.run("user", "create", "ada", "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
    return open_page(warden_cli.serve())


def sign_in(page) -> None:
    page.goto("/login")
    page.fill("input[name=name]", "ada")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def sign_out(page) -> None:
    page.click("nav button.link")
    page.wait_for_url("**/login")


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
