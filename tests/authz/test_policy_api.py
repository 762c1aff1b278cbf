"""/v1/policies and /v1/roles: read with audit:read, change with policy:write, all or nothing, audited."""

import json

import pytest

from tests.conftest import ledger_rows

RULE = ["role:eng", "prod", "db/*", "read", "maintenance", "allow"]


@pytest.fixture
def writer(make_token):
    return {"Authorization": f"Bearer {make_token('policy:write', 'audit:read')}"}


def test_add_list_and_remove(client, writer, auth, warden):
    assert client.post("/v1/policies", json={"rules": [RULE]}, headers=writer).get_json() == {
        "added": 1, "removed": 0, "version": 1}
    assert client.post("/v1/roles", json={"roles": [["alice", "role:eng", "*"]]}, headers=writer
                       ).get_json()["version"] == 2
    assert client.get("/v1/policies", headers=writer).get_json() == {"rules": [RULE], "version": 2}
    assert client.get("/v1/roles", headers=writer).get_json()["roles"] == [["alice", "role:eng", "*"]]
    decision = client.post("/v1/authorize", headers=auth, json={
        "subject": "alice", "domain": "prod", "object": "db/x", "action": "read",
        "context": {"workflow": "maintenance"}}).get_json()
    assert decision["allowed"] is True
    assert client.delete("/v1/roles", json={"roles": [["alice", "role:eng", "*"]]}, headers=writer
                         ).get_json() == {"added": 0, "removed": 1, "version": 3}
    assert client.delete("/v1/roles", json={"roles": [["alice", "role:eng", "*"]]}, headers=writer
                         ).get_json() == {"added": 0, "removed": 0, "version": 3}
    actors = {json.loads(r.body)["data"]["actor"] for r in ledger_rows(warden.engine) if r.kind == "policy.change"}
    assert actors == {"service:svc-0"}


@pytest.mark.parametrize("path,body,message", [
    ("/v1/policies", {"rules": [RULE, ["a", "prod", "db/*x", "read", "*", "allow"]]}, "rules[1]: object"),
    ("/v1/policies", {"rules": [RULE[:5]]}, "6 fields"),
    ("/v1/policies", {"rules": []}, "non-empty"),
    ("/v1/policies", {"rows": [RULE]}, "send"),
    ("/v1/roles", {"roles": [["alice", "role:*", "*"]]}, "may not contain"),
    ("/v1/roles", {"roles": ["alice"]}, "a row is a list"),
])
def test_bad_rows_change_nothing(client, writer, warden, path, body, message):
    response = client.post(path, json=body, headers=writer)
    assert response.status_code == 400 and message in response.get_json()["error"]["message"]
    assert warden.policies.export() == type(warden.policies.export())()


def test_scopes(client, make_token):
    reader = {"Authorization": f"Bearer {make_token('audit:read')}"}
    assert client.get("/v1/policies", headers=reader).status_code == 200
    assert client.post("/v1/policies", json={"rules": [RULE]}, headers=reader).status_code == 403
