"""A security reviewer in real Chromium: forced enrollment, then the review queue, then a triage."""

import json
import re
import urllib.request

import pytest

from tests.browser.conftest import PASSWORD, code_at, shot

POLICY = "p, role:oncall, prod, db/*, read, break-glass, allow\ng, frank, role:oncall, *\n"


@pytest.fixture
def page(warden_cli, open_page, tmp_path):
    """A reviewer account and one break-glass decision, whose review item is open."""
    warden_cli.run("user", "create", "rex", "--role", "security-reviewer", "--password-stdin", input=PASSWORD + "\n")
    (tmp_path / "policy.csv").write_text(POLICY)
    warden_cli.run("policy", "load", str(tmp_path / "policy.csv"))
    token = warden_cli.run("token", "create", "svc", "--scope", "authorize").stdout.split()[0]
    base_url = warden_cli.serve()
    body = json.dumps({"subject": "frank", "domain": "prod", "object": "db/payments", "action": "read",
                       "context": {"workflow": "break-glass", "ticket": "INC-9"}}).encode()
    request = urllib.request.Request(f"{base_url}/v1/authorize", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert json.load(urllib.request.urlopen(request))["review"]["detector"] == "break_glass"
    return open_page(base_url)


def test_a_reviewer_enrolls_and_resolves_a_break_glass_item(page):
    page.goto("/login")
    page.fill("input[name=name]", "rex")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/mfa/enroll**")
    page.goto("/review")  # nothing is reachable before the second factor
    page.wait_for_url("**/mfa/enroll**")
    secret = page.inner_text("#totp-secret").replace(" ", "")
    page.fill("input[name=code]", code_at(secret))
    page.click("button[type=submit]")
    page.click("text=I saved them")
    page.wait_for_url("**/review")
    item = page.locator("article.item")
    assert item.count() == 1 and "break glass" in item.inner_text()
    assert "frank" not in page.inner_text("main")  # a pseudonym, not the name
    shot(page, "review-1-queue")
    item.locator("select[name=status]").select_option("resolved")
    item.locator("input[name=note]").fill("INC-9 confirmed with the on-call lead")
    item.locator("input[name=assign]").check()
    item.locator("button[type=submit]").click()
    page.wait_for_url("**/review?status=open")
    assert page.locator("article.item").count() == 0
    page.click("text=resolved (1)")
    resolved = page.inner_text("main")
    assert "assigned to rex" in resolved and re.search(r"1 note\(s\)", resolved)
    shot(page, "review-2-resolved")
