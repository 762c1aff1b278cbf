"""/v1/authorize, its batch form and AuthZEN through the Flask test client, on every backend."""

import json

import pytest
from sqlalchemy import text

from authz.rules import parse_policy_csv
from tests.conftest import ledger_rows

POLICY = """
p, role:engineer, prod, db/*, read, maintenance, allow
p, role:contractor, *, db/payments*, *, *, deny
g, alice, role:engineer, *
g, dave, role:engineer, prod
g, dave, role:contractor, *
"""
ALLOWED = {"subject": "alice", "domain": "prod", "object": "db/customers", "action": "read",
           "context": {"workflow": "maintenance", "ticket": "OPS-12"}}


@pytest.fixture(autouse=True)
def _policy(load_policy):
    load_policy(POLICY)


def test_allowed_decision_has_the_contract_shape_and_is_recorded(client, auth, warden):
    response = client.post("/v1/authorize", json=ALLOWED, headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["allowed", "decision_id", "audit_seq", "policy_version", "reason", "matched", "review"]
    assert body["allowed"] is True
    assert body["reason"] == "allowed by role:engineer for workflow maintenance"
    assert body["matched"] == [["role:engineer", "prod", "db/*", "read", "maintenance", "allow"]]
    assert body["policy_version"] == 1 and body["review"] is None
    seq, _, _, kind, stored = ledger_rows(warden.engine)[-1]
    assert (seq, kind) == (body["audit_seq"], "decision")
    record = json.loads(stored)["data"]
    assert record["decision_id"] == body["decision_id"]
    assert record["service"] == "svc-0"
    assert (record["object"], record["workflow"], record["allowed"]) == ("db/customers", "maintenance", True)
    # the person appears only as a pseudonym; identifier and context are sealed with their key
    with warden.engine.connect() as conn:
        subject = warden.vault.find(conn, "alice")
    assert record["subject"] == subject.pseudonym != "alice"
    assert warden.vault.open(subject, record["subject_enc"], f"{body['decision_id']}:subject") == "alice"
    assert warden.vault.open(subject, record["context_enc"], f"{body['decision_id']}:context") == {
        "workflow": "maintenance", "ticket": "OPS-12"}


def test_deny_is_an_answer_with_its_reason(client, auth):
    response = client.post("/v1/authorize", headers=auth, json={**ALLOWED, "subject": "dave",
                                                                 "object": "db/payments"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["allowed"] is False
    assert body["reason"] == "denied by rule role:contractor, *, db/payments*, *, *, deny"
    response = client.post("/v1/authorize", headers=auth, json={**ALLOWED, "action": "delete"})
    assert response.get_json()["reason"] == ("denied: no policy grants delete on db/customers in prod "
                                             "for workflow maintenance")


def test_request_id_header_is_recorded(client, auth, warden):
    client.post("/v1/authorize", json=ALLOWED, headers={**auth, "X-Request-Id": "req-42"})
    assert json.loads(ledger_rows(warden.engine)[-1].body)["data"]["request_id"] == "req-42"


def test_batch_answers_in_order_with_consecutive_records(client, auth):
    requests = [ALLOWED, {**ALLOWED, "action": "write"}, {**ALLOWED, "subject": "dave", "object": "db/payments/x"}]
    response = client.post("/v1/authorize/batch", json={"requests": requests}, headers=auth)
    assert response.status_code == 200
    decisions = response.get_json()["decisions"]
    assert [d["allowed"] for d in decisions] == [True, False, False]
    seqs = [d["audit_seq"] for d in decisions]
    assert seqs == list(range(seqs[0], seqs[0] + 3))


def test_policy_changes_reach_decisions_at_once(client, auth, load_policy):
    assert client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()["allowed"] is True
    load_policy(POLICY + "p, alice, prod, db/customers, read, *, deny\n", replace=False)
    body = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    assert body["allowed"] is False and body["policy_version"] == 2


# --- AuthZEN ----------------------------------------------------------------------------

AUTHZEN = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
           "resource": {"type": "table", "id": "db/customers", "properties": {"domain": "prod"}},
           "context": {"workflow": "maintenance"}}


def test_authzen_evaluation(client, auth):
    response = client.post("/access/v1/evaluation", json=AUTHZEN, headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["decision"] is True
    assert body["context"]["reason"] == "allowed by role:engineer for workflow maintenance"
    denied = client.post("/access/v1/evaluation", headers=auth,
                         json={**AUTHZEN, "action": {"name": "write"}}).get_json()
    assert denied["decision"] is False


def test_authzen_domain_may_come_from_the_context(client, auth):
    body = {**AUTHZEN, "resource": {"type": "table", "id": "db/customers"},
            "context": {"workflow": "maintenance", "domain": "prod"}}
    assert client.post("/access/v1/evaluation", json=body, headers=auth).get_json()["decision"] is True


def test_authzen_evaluations_take_defaults_from_the_top_level(client, auth):
    body = {**AUTHZEN, "evaluations": [{}, {"action": {"name": "write"}},
                                       {"subject": {"type": "user", "id": "dave"}}]}
    response = client.post("/access/v1/evaluations", json=body, headers=auth)
    assert [e["decision"] for e in response.get_json()["evaluations"]] == [True, False, True]


@pytest.mark.parametrize("semantic,expected", [
    ("execute_all", [True, False, True]),
    ("deny_on_first_deny", [True, False]),
    ("permit_on_first_permit", [True]),
])
def test_authzen_evaluation_semantics(client, auth, semantic, expected):
    body = {**AUTHZEN, "options": {"evaluations_semantic": semantic},
            "evaluations": [{}, {"action": {"name": "write"}}, {}]}
    response = client.post("/access/v1/evaluations", json=body, headers=auth)
    assert [e["decision"] for e in response.get_json()["evaluations"]] == expected


def test_authzen_evaluations_without_a_list_is_one_evaluation(client, auth):
    response = client.post("/access/v1/evaluations", json=AUTHZEN, headers=auth)
    assert response.get_json()["decision"] is True


# --- tokens and scopes ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/authorize", "/v1/authorize/batch", "/access/v1/evaluation",
                                  "/access/v1/evaluations"])
@pytest.mark.parametrize("header", [None, "Bearer wdn_not-a-real-token", "Basic abc", "Bearer"])
def test_no_valid_token_is_401(client, path, header):
    headers = {"Authorization": header} if header else {}
    response = client.post(path, json=ALLOWED, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_token_without_the_scope_is_403(client, make_token, warden):
    before = len(ledger_rows(warden.engine))
    token = make_token("audit:read")
    response = client.post("/v1/authorize", json=ALLOWED, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert "authorize" in response.get_json()["error"]["message"]
    assert len(ledger_rows(warden.engine)) == before + 1  # the token's creation, no decision


def test_every_route_refuses_an_anonymous_caller(app, client):
    """APIs answer 401; pages send the visitor to sign in; only a named few are open."""
    open_routes = {"/healthz", "/metrics", "/openapi.json", "/static/<path:filename>", "/login", "/"}
    urls = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        if rule.rule in open_routes:
            continue
        url = urls.build(rule.endpoint, {arg: 1 for arg in rule.arguments})
        is_page = hasattr(app.view_functions[rule.endpoint], "warden_roles")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(url, method=method, json={})
            if is_page:
                assert response.status_code == 302 and "/login" in response.location, f"{method} {rule.rule}"
            else:
                assert response.status_code == 401, f"{method} {rule.rule} answered {response.status_code}"


# --- bad input: a 4xx with a message, and nothing written --------------------------------

BAD_BODIES = [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_request"),
    ('"text"', "bad_request"),
    (json.dumps({k: v for k, v in ALLOWED.items() if k != "subject"}), "invalid_request"),
    (json.dumps({**ALLOWED, "subject": 42}), "invalid_request"),
    (json.dumps({**ALLOWED, "subject": ""}), "invalid_request"),
    (json.dumps({**ALLOWED, "object": "db/*"}), "invalid_request"),
    (json.dumps({**ALLOWED, "action": None}), "invalid_request"),
    (json.dumps({**ALLOWED, "domain": "pr\nod"}), "invalid_request"),
    (json.dumps({**ALLOWED, "context": "maintenance"}), "invalid_request"),
    (json.dumps({**ALLOWED, "context": {"workflow": 7}}), "invalid_request"),
    (json.dumps({**ALLOWED, "context": {"workflow": "*"}}), "invalid_request"),
    (json.dumps({**ALLOWED, "context": {"blob": "x" * 5000}}), "invalid_request"),
    (json.dumps({**ALLOWED, "subjet": "typo"}), "invalid_request"),
    (json.dumps({**ALLOWED, "context": {"a": [[[[[[[[[[1]]]]]]]]]]}}), "bad_request"),
    ('{"subject": "alice", "domain": "prod", "object": "db/x", "action": "read", "context": {"n": NaN}}', "bad_json"),
    ('{"subject": "alice", "domain": "prod", "object": "db/x", "action": "read", "context": {"n": 1e999}}',
     "bad_json"),
    ('{"subject": "alice", "domain": "prod", "object": "db/x", "action": "read", "context": {"n": "\\ud800"}}',
     "bad_json"),
]


@pytest.mark.parametrize("raw,code", BAD_BODIES)
def test_bad_authorize_bodies_are_400_and_write_nothing(client, auth, warden, raw, code):
    before = ledger_rows(warden.engine)
    response = client.post("/v1/authorize", data=raw, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]
    assert ledger_rows(warden.engine) == before


@pytest.mark.parametrize("body,message", [
    ({"requests": []}, "non-empty"),
    ({"requests": "x"}, "non-empty"),
    ({"requests": [ALLOWED] * 1001}, "at most 1000"),
    ({"requests": [ALLOWED, {**ALLOWED, "object": 3}]}, "requests[1]"),
    ({"requests": [ALLOWED], "extra": 1}, "unknown field"),
])
def test_bad_batches_are_400_and_write_nothing(client, auth, warden, body, message):
    before = ledger_rows(warden.engine)
    response = client.post("/v1/authorize/batch", json=body, headers=auth)
    assert response.status_code == 400
    assert message in response.get_json()["error"]["message"]
    assert ledger_rows(warden.engine) == before


@pytest.mark.parametrize("body,message", [
    ({**AUTHZEN, "subject": "alice"}, "subject must be an object"),
    ({**AUTHZEN, "resource": {"type": "table", "id": "db/x"}}, "domain is required"),
    ({**AUTHZEN, "action": {}}, "action.name is required"),
    ({**AUTHZEN, "evaluations": [{}], "options": {"evaluations_semantic": "maybe"}}, "evaluations_semantic"),
    ({**AUTHZEN, "evaluations": [{}, 3]}, "evaluations[1]"),
])
def test_bad_authzen_bodies_are_400(client, auth, body, message):
    path = "/access/v1/evaluations" if "evaluations" in body else "/access/v1/evaluation"
    response = client.post(path, json=body, headers=auth)
    assert response.status_code == 400
    assert message in response.get_json()["error"]["message"]


def test_wrong_content_type_is_400(client, auth):
    response = client.post("/v1/authorize", data=json.dumps(ALLOWED), headers=auth)
    assert response.status_code == 400


def test_oversized_body_is_413_with_a_message(client, auth, warden):
    before = ledger_rows(warden.engine)
    raw = json.dumps({"requests": [ALLOWED] * 1000, "pad": "x" * (3 * 1024 * 1024)})
    response = client.post("/v1/authorize/batch", data=raw, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert "larger than" in response.get_json()["error"]["message"]
    assert ledger_rows(warden.engine) == before


# --- fail closed ------------------------------------------------------------------------

def break_ledger(engine):
    """Make the database refuse every new ledger record, as a full disk or a lost primary would."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON ledger_records "
                              "BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
        else:
            conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON ledger_records "
                              "FOR EACH ROW EXECUTE FUNCTION refuse()"))


def mend_ledger(engine):
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse" if engine.dialect.name == "sqlite"
                          else "DROP TRIGGER refuse ON ledger_records"))
        if engine.dialect.name != "sqlite":
            conn.execute(text("DROP FUNCTION refuse()"))


@pytest.mark.parametrize("path,body,field", [
    ("/v1/authorize", ALLOWED, "allowed"),
    ("/v1/authorize/batch", {"requests": [ALLOWED, ALLOWED]}, "decisions"),
    ("/access/v1/evaluation", AUTHZEN, "decision"),
])
def test_no_durable_record_means_deny_with_503(client, auth, warden, verify, path, body, field):
    before = ledger_rows(warden.engine)
    break_ledger(warden.engine)
    try:
        response = client.post(path, json=body, headers=auth)
    finally:
        mend_ledger(warden.engine)
    assert response.status_code == 503
    answer = response.get_json()
    assert answer["error"]["code"] == "audit_unavailable"
    if field == "decisions":
        assert answer["decisions"] == [{"allowed": False}, {"allowed": False}]
    else:
        assert answer[field] is False
    assert ledger_rows(warden.engine) == before
    assert verify().ok
    assert client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()["allowed"] is True


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_metrics_count_decisions(client, auth):
    client.post("/v1/authorize", json=ALLOWED, headers=auth)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'warden_decisions_total{allowed="true"}' in text
    assert "warden_ledger_batch_records_bucket" in text


def test_one_callers_unrecordable_data_does_not_fail_the_others(warden):
    """Defence in depth behind the 400s: an item that cannot be serialized fails alone."""
    import threading

    from audit.ledger import Entry

    results, gate = [], threading.Barrier(6)

    def submit(bad: bool):
        gate.wait()
        data = {"n": float("nan")} if bad else {"n": 1}
        try:
            warden.committer.submit(lambda conn, memo: ([Entry("test", data)], None))
            results.append("ok")
        except ValueError:
            results.append("refused")
    threads = [threading.Thread(target=submit, args=(i == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] * 5 + ["refused"]


def test_openapi_describes_every_api_route(app, client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    import re
    described = {re.sub(r"\{\w+\}", "{}", path) for path in document["paths"]}
    api_routes = {re.sub(r"<(\w+:)?\w+>", "{}", rule.rule) for rule in app.url_map.iter_rules()
                  if rule.rule.startswith(("/v1/", "/access/")) or rule.rule in ("/healthz", "/metrics")}
    assert api_routes <= described, api_routes - described


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_policy_change_committed_mid_batch_is_honoured(client, auth, warden, monkeypatch):
    """A revocation that commits after the decision was made, but before its record is appended,
    makes the batch decide again: no allow under a policy version older than the ledger shows."""
    import threading

    original = warden.policies.snapshot
    revoked = []

    def snapshot_then_revoke(conn):
        snap = original(conn)
        if not revoked:
            revoked.append(True)
            change = threading.Thread(target=lambda: warden.policies.apply(
                parse_policy_csv(POLICY + "p, alice, prod, db/customers, read, *, deny\n"), replace=True,
                actor="test"))
            change.start()
            change.join(timeout=30)
        return snap
    monkeypatch.setattr(warden.policies, "snapshot", snapshot_then_revoke)
    body = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    assert revoked and body["allowed"] is False and body["policy_version"] == 2


@pytest.mark.parametrize("depth", [9, 200, 400, 900, 5000])
@pytest.mark.parametrize("path", ["/v1/authorize", "/v1/authorize/batch", "/access/v1/evaluation"])
def test_any_nesting_depth_is_a_400_never_a_500(client, auth, warden, depth, path):
    """Deeper than 8 levels is refused; a walk by recursion used to overflow Python's stack first."""
    before = ledger_rows(warden.engine)
    nested = "[" * depth + "]" * depth
    body = ('{"subject": "alice", "domain": "prod", "object": "db/x", "action": "read", "context": {"a": '
            + nested + "}}")
    response = client.post(path, data=body, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in ("bad_request", "bad_json")
    assert ledger_rows(warden.engine) == before


def test_a_batch_names_its_unknown_field(client, auth):
    response = client.post("/v1/authorize/batch", json={"request": [ALLOWED]}, headers=auth)
    assert response.status_code == 400
    assert "unknown field request (expected requests)" in response.get_json()["error"]["message"]
