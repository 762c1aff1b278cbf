"""From decisions to review items and their triage: CLI, HTTP, the ledger, on every backend."""

import json

import pytest

from tests.conftest import ledger_rows

POLICY = """
p, role:support, prod, db/*, read, support, allow
p, role:support, prod, db/*, read, break-glass, allow
p, role:ops, prod, db/*, *, *, allow
g, alice, role:support, *
g, bob, role:support, *
g, olga, role:ops, *
"""


def decide(client, auth, subject="alice", obj="db/customers", action="read", workflow="support"):
    body = {"subject": subject, "domain": "prod", "object": obj, "action": action}
    if workflow:
        body["context"] = {"workflow": workflow}
    return client.post("/v1/authorize", json=body, headers=auth).get_json()


@pytest.fixture
def history(client, auth, load_policy):
    load_policy(POLICY)
    for i in range(60):
        decide(client, auth, subject=("alice", "bob")[i % 2], obj=("db/customers", "db/orders")[i % 3 % 2])


@pytest.fixture
def review(make_token):
    return {"Authorization": f"Bearer {make_token('review')}"}


def test_train_run_and_triage(history, client, auth, runner, review, warden, verify):
    result = runner.invoke(args=["detect", "train"])
    assert result.exit_code == 0 and "baseline: 60 decisions" in result.output, result.output
    glass = decide(client, auth, workflow="break-glass")
    loose = decide(client, auth, subject="olga", action="delete", workflow="")
    for i in range(5):
        decide(client, auth, subject="bob", obj=f"db/secret{i}", action="write")
    result = runner.invoke(args=["detect", "run"])
    assert result.exit_code == 0 and "with rules and isolation forest" in result.output, result.output
    items = client.get("/v1/review/items?limit=200", headers=review).get_json()["items"]
    by_detector = {item["detector"]: item for item in items}
    assert by_detector["break_glass"]["seqs"] == [glass["audit_seq"]]
    assert by_detector["break_glass"]["priority"] == "high" and by_detector["break_glass"]["status"] == "open"
    assert by_detector["out_of_workflow"]["seqs"] == [loose["audit_seq"]]
    assert len(by_detector["denial_burst"]["seqs"]) == 5
    for item in items:  # people only as pseudonyms
        assert item["subject"].startswith("p_") and "alice" not in json.dumps(item)
    assert runner.invoke(args=["detect", "run"]).output.startswith("nothing new to score")

    item = by_detector["break_glass"]
    response = client.patch(f"/v1/review/items/{item['id']}", headers=review,
                            json={"status": "resolved", "assignee": "rita", "note": "ticket INC-7, call +44 20 7946 0958"})
    assert response.status_code == 200
    changed = response.get_json()
    assert (changed["status"], changed["assignee"]) == ("resolved", "rita")
    assert changed["history"][-1]["note"] == "ticket INC-7, call <PHONE>"
    assert changed["history"][-1]["actor"].startswith("service:")
    record = json.loads(ledger_rows(warden.engine)[-1].body)
    assert record["kind"] == "review.update" and record["data"]["status"] == "resolved"
    assert "INC-7" not in ledger_rows(warden.engine)[-1].body  # the note stays out of the ledger
    assert client.get(f"/v1/review/items/{item['id']}", headers=review).get_json() == changed
    assert client.get("/v1/review/items?status=resolved", headers=review).get_json()["items"] == [changed]
    assert verify().ok


def test_rules_work_before_any_baseline(client, auth, load_policy, runner, review):
    load_policy(POLICY)
    decide(client, auth, workflow="break-glass")
    result = runner.invoke(args=["detect", "run"])
    assert "rules only (no usable baseline: warden detect train)" in result.output
    assert client.get("/v1/review/items", headers=review).get_json()["items"][0]["detector"] == "break_glass"


def test_training_needs_history(client, auth, load_policy, runner):
    load_policy(POLICY)
    decide(client, auth)
    result = runner.invoke(args=["detect", "train"])
    assert result.exit_code == 1 and "at least 50 are needed" in result.output


def test_opted_out_people_open_no_items(client, auth, load_policy, runner, review, make_token):
    load_policy(POLICY)
    privacy = {"Authorization": f"Bearer {make_token('privacy')}"}
    client.post("/v1/privacy/requests", json={"subject": "alice", "kind": "opt_out"}, headers=privacy)
    decide(client, auth, workflow="break-glass")
    runner.invoke(args=["detect", "run"])
    assert client.get("/v1/review/items", headers=review).get_json()["items"] == []


def test_pages_of_items_follow_the_cursor(client, auth, load_policy, runner, review):
    load_policy(POLICY)
    for _ in range(5):
        decide(client, auth, workflow="break-glass")
    runner.invoke(args=["detect", "run"])
    seen, cursor = [], None
    while True:
        page = client.get("/v1/review/items?limit=2" + (f"&cursor={cursor}" if cursor else ""),
                          headers=review).get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.parametrize("method, url, body, status, message", [
    ("get", "/v1/review/items?status=closed", None, 400, "status must be one of"),
    ("get", "/v1/review/items?priority=urgent", None, 400, "priority must be one of"),
    ("get", "/v1/review/items?subject=p_%00", None, 400, "NUL"),
    ("get", "/v1/review/items/%00", None, 400, "NUL"),
    ("patch", "/v1/review/items/nope", {"assignee": "a\u0000b"}, 400, "NUL"),
    ("patch", "/v1/review/items/nope", {"note": "a\u0000b"}, 400, "NUL"),
    ("get", "/v1/review/items?limit=0", None, 400, "limit must be"),
    ("get", "/v1/review/items?limit=x", None, 400, "limit must be"),
    ("get", "/v1/review/items?colour=red", None, 400, "unknown parameter"),
    ("get", "/v1/review/items?cursor=bogus", None, 400, "cursor is not one"),
    ("get", "/v1/review/items/nope", None, 404, "no review item"),
    ("patch", "/v1/review/items/nope", {"status": "resolved"}, 404, "no review item"),
    ("patch", "/v1/review/items/nope", {}, 400, "send status"),
    ("patch", "/v1/review/items/nope", {"state": "x"}, 400, "unknown field"),
    ("patch", "/v1/review/items/nope", {"status": "closed"}, 400, "status must be one of"),
    ("patch", "/v1/review/items/nope", {"note": "x" * 2001}, 400, "at most 2000"),
    ("patch", "/v1/review/items/nope", {"assignee": 7}, 400, "assignee must be"),
])
def test_bad_review_requests_get_a_clear_4xx(client, review, method, url, body, status, message):
    response = getattr(client, method)(url, headers=review, **({"json": body} if body is not None else {}))
    assert response.status_code == status and message in response.get_json()["error"]["message"]


def test_the_review_scope_is_required(client, auth):
    assert client.get("/v1/review/items").status_code == 401
    assert client.get("/v1/review/items", headers=auth).status_code == 403


def test_while_serving_new_decisions_are_scored_on_a_schedule(client, auth, load_policy, warden, review):
    import time

    load_policy(POLICY)
    decide(client, auth, workflow="break-glass")
    stop = warden.scoring.start_schedule(0.05)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not client.get("/v1/review/items", headers=review).get_json()["items"]:
        time.sleep(0.05)
    stop.set()
    assert client.get("/v1/review/items", headers=review).get_json()["items"][0]["detector"] == "break_glass"


def test_rules_without_history_open_an_item_with_the_decision(client, auth, load_policy, runner, review, warden,
                                                              make_token):
    load_policy(POLICY)
    assert decide(client, auth)["review"] is None
    glass = decide(client, auth, workflow="break-glass")
    assert glass["review"]["detector"] == "break_glass" and glass["review"]["priority"] == "high"
    item = client.get(f"/v1/review/items/{glass['review']['id']}", headers=review).get_json()
    assert item["seqs"] == [glass["audit_seq"]] and item["status"] == "open"
    loose = decide(client, auth, subject="olga", action="delete", workflow="")
    assert loose["review"]["detector"] == "out_of_workflow"
    runner.invoke(args=["detect", "run"])  # finds the same two, opens nothing twice
    items = client.get("/v1/review/items", headers=review).get_json()["items"]
    assert sorted(i["id"] for i in items) == sorted([glass["review"]["id"], loose["review"]["id"]])
    privacy = {"Authorization": f"Bearer {make_token('privacy')}"}
    client.post("/v1/privacy/requests", json={"subject": "bob", "kind": "opt_out"}, headers=privacy)
    assert decide(client, auth, subject="bob", workflow="break-glass")["review"] is None


def test_a_failure_to_open_an_item_does_not_change_the_answer(client, auth, load_policy, warden, monkeypatch):
    load_policy(POLICY)

    def broken(records):
        raise RuntimeError("review queue down")
    monkeypatch.setattr(warden.decisions, "review", broken)
    answer = client.post("/v1/authorize", headers=auth, json={
        "subject": "alice", "domain": "prod", "object": "db/x", "action": "read",
        "context": {"workflow": "break-glass"}})
    assert answer.status_code == 200 and answer.get_json()["allowed"] is True
    assert answer.get_json()["review"] is None


def test_access_exports_show_a_persons_items_and_erasure_removes_notes(client, auth, load_policy, review,
                                                                      make_token, warden):
    load_policy(POLICY)
    glass = decide(client, auth, workflow="break-glass")
    item_id = glass["review"]["id"]
    client.patch(f"/v1/review/items/{item_id}", headers=review, json={"note": "called alice, she was on call"})
    privacy = {"Authorization": f"Bearer {make_token('privacy')}"}
    request = client.post("/v1/privacy/requests", json={"subject": "alice", "kind": "access"},
                          headers=privacy).get_json()
    export = client.get(f"/v1/privacy/requests/{request['id']}/export", headers=privacy).get_json()
    assert [i["id"] for i in export["review_items"]] == [item_id]
    client.post("/v1/privacy/requests", json={"subject": "alice", "kind": "erasure"}, headers=privacy)
    item = client.get(f"/v1/review/items/{item_id}", headers=review).get_json()
    assert "alice" not in json.dumps(item) and item["history"][-1]["note"] == "[removed by an erasure request]"


def test_only_the_holder_of_the_lock_file_scores_on_schedule(client, auth, load_policy, warden, tmp_path):
    import fcntl
    import time

    def scheduled_runs():
        return [row for row in ledger_rows(warden.engine)
                if row.kind == "detector.run" and json.loads(row.body)["data"]["actor"] == "schedule"]

    load_policy(POLICY)
    lock = tmp_path / "scoring.lock"
    with open(lock, "a") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another worker holds it
        decide(client, auth)
        stop = warden.scoring.start_schedule(0.05, lock_file=str(lock))
        time.sleep(0.4)
        assert scheduled_runs() == []  # not ours to score
        fcntl.flock(other_process, fcntl.LOCK_UN)  # the other worker stops
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not scheduled_runs():
        time.sleep(0.05)
    stop.set()
    assert len(scheduled_runs()) == 1  # this one took over


def test_each_database_has_its_own_scoring_lock(tmp_path):
    from app import create_app, scoring_lock_file
    first = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", "INSTANCE_PATH": str(tmp_path)})
    second = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}", "INSTANCE_PATH": str(tmp_path)})
    assert scoring_lock_file(first) != scoring_lock_file(second)
    assert scoring_lock_file(first) == scoring_lock_file(first)
