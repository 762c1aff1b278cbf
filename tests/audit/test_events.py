"""Outcome reports, search and export of ledger records, through HTTP and the CLI."""

import hashlib
import json

import pytest

from tests.conftest import ledger_rows

POLICY = "p, role:eng, prod, db/*, read, *, allow\ng, alice, role:eng, *\ng, bob, role:eng, *\n"


@pytest.fixture
def decided(client, auth, load_policy):
    """Six decisions: alice and bob read and write two tables; returns their answers."""
    load_policy(POLICY)
    answers = []
    for subject in ("alice", "bob"):
        for obj, action in (("db/customers", "read"), ("db/orders", "read"), ("db/customers", "write")):
            body = {"subject": subject, "domain": "prod", "object": obj, "action": action}
            answers.append(client.post("/v1/authorize", json=body, headers=auth).get_json())
    return answers


@pytest.fixture
def reader(make_token):
    return {"Authorization": f"Bearer {make_token('audit:read')}"}


def test_outcome_is_chained_after_its_decision(client, auth, decided, warden):
    decision = decided[0]
    report = {"decision_id": decision["decision_id"], "rows": 12, "bytes": 3400, "duration_ms": 8, "status": "ok"}
    response = client.post("/v1/audit/events", json=report, headers=auth)
    assert response.status_code == 201
    body = response.get_json()
    assert body["decision_seq"] == decision["audit_seq"] and body["audit_seq"] > decision["audit_seq"]
    stored = json.loads(ledger_rows(warden.engine)[-1].body)
    assert stored["kind"] == "outcome"
    assert stored["data"]["rows"] == 12 and stored["data"]["decision_seq"] == decision["audit_seq"]


def test_duration_is_another_name_for_duration_ms(client, auth, decided, warden):
    report = {"decision_id": decided[0]["decision_id"], "duration": 8, "status": "ok"}
    assert client.post("/v1/audit/events", json=report, headers=auth).status_code == 201
    assert json.loads(ledger_rows(warden.engine)[-1].body)["data"]["duration_ms"] == 8


def test_outcome_for_an_unknown_decision_is_404_and_a_second_is_409(client, auth, decided, make_token):
    assert client.post("/v1/audit/events", json={"decision_id": "nope", "status": "ok"},
                       headers=auth).status_code == 404
    other = {"Authorization": f"Bearer {make_token('authorize')}"}
    report = {"decision_id": decided[1]["decision_id"], "rows": 1, "status": "ok"}
    assert client.post("/v1/audit/events", json=report, headers=other).status_code == 404  # not its decision
    assert client.post("/v1/audit/events", json=report, headers=auth).status_code == 201
    again = client.post("/v1/audit/events", json=report, headers=auth)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_reported"


@pytest.mark.parametrize("report,message", [
    ({}, "decision_id is required"),
    ({"decision_id": "x"}, "status is required"),
    ({"decision_id": 5}, "decision_id must be the decision_id string"),
    ({"decision_id": "x", "rows": -1, "status": "ok"}, "rows must be"),
    ({"decision_id": "x", "bytes": "10", "status": "ok"}, "bytes must be"),
    ({"decision_id": "x", "duration_ms": True, "status": "ok"}, "duration_ms must be"),
    ({"decision_id": "x", "status": "not ok!"}, "status must be"),
    ({"decision_id": "x", "row": 1, "status": "ok"}, "unknown field"),
    ({"decision_id": "x", "duration": 3, "duration_ms": 3, "status": "ok"}, "not both"),
    ({"decision_id": "a\u0000", "status": "ok"}, "NUL"),
])
def test_bad_outcome_reports_are_400(client, auth, report, message, warden):
    before = ledger_rows(warden.engine)
    response = client.post("/v1/audit/events", json=report, headers=auth)
    assert response.status_code == 400 and message in response.get_json()["error"]["message"]
    assert ledger_rows(warden.engine) == before


def test_concurrent_duplicate_outcomes_cannot_both_land(warden, decided):
    import threading

    from audit.outcomes import DuplicateOutcome

    results = []

    def report():
        try:
            warden.outcomes.report("svc-0", {"decision_id": decided[2]["decision_id"], "status": "ok"})
            results.append("ok")
        except DuplicateOutcome:
            results.append("dup")
    threads = [threading.Thread(target=report) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["dup"] * 7 + ["ok"]


@pytest.mark.parametrize("query,expected", [
    ("subject=alice", 3),
    ("subject=alice&action=write", 1),
    ("object=db/cust", 4),
    ("decision=deny", 2),
    ("decision=allow&subject=bob", 2),
    ("kind=decision&domain=prod", 6),
    ("object=db/%25", 0),  # % is taken literally
    ("object=DB/", 0),  # case counts, on SQLite too (its LIKE ignores ASCII case)
])
def test_search_filters(client, decided, reader, query, expected):
    response = client.get(f"/v1/audit/events?{query}", headers=reader)
    assert response.status_code == 200, response.get_json()
    events = response.get_json()["events"]
    assert len(events) == expected
    assert all(e["kind"] == "decision" for e in events)


def test_search_by_seq_and_time_range(client, decided, reader):
    seqs = [d["audit_seq"] for d in decided]
    events = client.get(f"/v1/audit/events?from_seq={seqs[1]}&to_seq={seqs[3]}", headers=reader).get_json()["events"]
    assert [e["seq"] for e in events] == seqs[1:4]
    assert client.get("/v1/audit/events?since=2000-01-01T00:00:00Z&until=2000-01-02", headers=reader
                      ).get_json()["events"] == []


def test_cursor_pagination_walks_everything_once(client, decided, reader, warden):
    seen, cursor = [], None
    while True:
        url = "/v1/audit/events?limit=4" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=reader).get_json()
        seen += [e["seq"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r.seq for r in ledger_rows(warden.engine)]


@pytest.mark.parametrize("query,message", [
    ("decision=maybe", "decision must be"), ("limit=0", "limit must be"), ("limit=5000", "limit must be"),
    ("since=yesterday", "ISO 8601"), ("cursor=!!!", "cursor"), ("subjet=alice", "unknown filter"),
    ("from_seq=-1", "from_seq must be"),
    ("cursor=c2VxOjk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ", "cursor"),  # seq:999... beyond a 64-bit seq
])
def test_bad_search_is_400(client, reader, query, message):
    response = client.get(f"/v1/audit/events?{query}", headers=reader)
    assert response.status_code == 400 and message in response.get_json()["error"]["message"]


def test_search_needs_audit_read(client, auth):
    assert client.get("/v1/audit/events", headers=auth).status_code == 403


def test_export_lines_reverify_outside_warden(runner, decided, warden):
    result = runner.invoke(args=["audit", "export", "--format", "jsonl"])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["seq"] for line in lines] == [r.seq for r in ledger_rows(warden.engine)]
    prev = "0" * 64
    for line in lines:
        assert line["prev_hash"] == prev
        assert hashlib.sha256(bytes.fromhex(prev) + line["body"].encode()).hexdigest() == line["hash"]
        prev = line["hash"]
    assert runner.invoke(args=["audit", "export", "--since", "2999-01-01"]).output == ""


@pytest.mark.parametrize("url", ["/v1/audit/events?limit=%C2%B2", "/v1/audit/events?from_seq=%D9%A3"])
def test_non_ascii_digits_are_400(client, reader, url):
    assert client.get(url, headers=reader).status_code == 400


@pytest.mark.parametrize("method,url,body", [
    ("get", "/v1/audit/events?object=%00", None),
    ("get", "/v1/audit/events?kind=a%00", None),
    ("get", "/v1/audit/events?sub%00ject=x", None),
    ("get", "/v1/privacy/requests/%00", None),
    ("get", "/v1/privacy/requests/%00/export", None),
    ("post", "/v1/authorize", {"subject": "alice", "domain": "prod", "object": "db/x\u0000", "action": "read"}),
    ("post", "/v1/authorize", {"subject": "alice", "domain": "prod", "object": "db/x", "action": "read",
                               "context": {"note": "a\u0000b"}}),
    ("post", "/v1/privacy/requests", {"subject": "al\u0000ice", "kind": "access"}),
])
def test_nul_anywhere_is_400_on_every_backend(client, make_token, warden, method, url, body):
    """Postgres text cannot hold NUL: refused as bad input up front, never a 500 or a 503."""
    everything = {"Authorization": f"Bearer {make_token('authorize', 'audit:read', 'privacy')}"}
    before = ledger_rows(warden.engine)
    response = getattr(client, method)(url, json=body, headers=everything) if body is not None else \
        getattr(client, method)(url, headers=everything)
    assert response.status_code == 400 and "NUL" in response.get_json()["error"]["message"]
    assert ledger_rows(warden.engine) == before


def test_huge_ids_in_paths_are_404(client, make_token):
    reviewer = {"Authorization": f"Bearer {make_token('review')}"}
    assert client.post(f"/v1/audit/events/{10**25}/reveal", headers=reviewer).status_code == 404
