"""/review in the browser's terms: reviewers (second factor passed) see the queue and triage it."""

import re

from tests.authz.test_pages import PASSWORD, csrf_of, enroll, login
from tests.detectors.test_review_queue import POLICY, decide


def _items(client, auth, load_policy, runner):
    load_policy(POLICY)
    decide(client, auth, workflow="break-glass")
    decide(client, auth, subject="olga", action="delete", workflow="")
    runner.invoke(args=["detect", "run"])


def test_a_reviewer_sees_the_queue_and_triages_an_item(app, client, auth, load_policy, runner, warden):
    _items(client, auth, load_policy, runner)
    warden.accounts.create("rex", "security-reviewer", PASSWORD, actor="test")
    browser = app.test_client()
    login(browser, "rex")
    enroll(browser)
    page = browser.get("/review").get_data(as_text=True)
    assert "Review queue" in page and "break glass" in page and "out of workflow" in page
    assert page.index("break glass") < page.index("out of workflow")  # high before medium
    assert "alice" not in page and "olga" not in page  # pseudonyms only
    item_id = re.search(r'action="/review/([0-9a-f-]{36})', page).group(1)
    response = browser.post(f"/review/{item_id}?back=open", data={
        "csrf_token": csrf_of(browser, "/review"), "status": "acknowledged", "note": "on it, INC-9",
        "assign": "me"})
    assert response.status_code == 302 and response.location.endswith("/review?status=open")
    item = warden.review.get(item_id)
    assert (item["status"], item["assignee"]) == ("acknowledged", "rex")
    assert item["history"][-1]["note"] == "on it, INC-9"
    assert item["history"][-1]["actor"].startswith("security-reviewer:account-")
    acknowledged = browser.get("/review?status=acknowledged").get_data(as_text=True)
    assert item_id in acknowledged and "assigned to rex" in acknowledged and "1 note(s)" in acknowledged


def test_triage_needs_a_known_item_a_known_status_and_the_form_token(app, client, auth, load_policy, runner,
                                                                      warden):
    _items(client, auth, load_policy, runner)
    warden.accounts.create("rex", "security-reviewer", PASSWORD, actor="test")
    browser = app.test_client()
    login(browser, "rex")
    enroll(browser)
    token = csrf_of(browser, "/review")
    assert browser.post("/review/00000000-0000-0000-0000-000000000000",
                        data={"csrf_token": token, "status": "resolved"}).status_code == 404
    item_id = warden.review.list()[0][0]["id"]
    assert browser.post(f"/review/{item_id}", data={"csrf_token": token, "status": "gone"}).status_code == 400
    assert browser.post(f"/review/{item_id}", data={"status": "resolved"}).status_code == 400
    assert warden.review.get(item_id)["status"] == "open"


def test_people_without_a_review_role_cannot_see_the_queue(app, warden):
    warden.accounts.create("uma", "user", PASSWORD, actor="test")
    browser = app.test_client()
    login(browser, "uma")
    assert browser.get("/review").status_code == 403
