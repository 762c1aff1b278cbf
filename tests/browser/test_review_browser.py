"""A security reviewer in real Chromium: forced enrollment, then the review queue, then a triage."""

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from app import upgrade_database
from tests.browser.test_mfa_browser import CHROMIUM, PASSWORD, _browser_or_skip, code_at, shot
from tests.conftest import free_port, wait_for_port

POLICY = "p, role:oncall, prod, db/*, read, break-glass, allow\ng, frank, role:oncall, *\n"


@pytest.fixture
def server(tmp_path):
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    upgrade_database(url)
    env = {**os.environ, "WARDEN_DATABASE_URL": url, "WARDEN_KEY_DIR": str(tmp_path / "keys"),
           "WARDEN_LOG_DIR": str(tmp_path / "logs")}
    warden = [sys.executable, "-c", "import app; app.main()"]

    def run(*args, **kwargs):
        return subprocess.run([*warden, *args], env=env, text=True, check=True, capture_output=True, **kwargs)
    run("user", "create", "rex", "--role", "security-reviewer", "--password-stdin", input=PASSWORD + "\n")
    (tmp_path / "policy.csv").write_text(POLICY)
    run("policy", "load", str(tmp_path / "policy.csv"))
    token = run("token", "create", "svc", "--scope", "authorize").stdout.split()[0]
    port = free_port()
    process = subprocess.Popen([*warden, "serve", "--port", str(port), "--workers", "1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    body = json.dumps({"subject": "frank", "domain": "prod", "object": "db/payments", "action": "read",
                       "context": {"workflow": "break-glass", "ticket": "INC-9"}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/authorize", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(request))
    assert answer["review"]["detector"] == "break_glass"
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
