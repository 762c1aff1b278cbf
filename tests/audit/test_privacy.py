"""Privacy promises: pseudonyms, sealed fields, access, erasure, opt-out, key rotation and loss."""

import json
import os
import re
import shutil

import pytest
from sqlalchemy import inspect, text

from app import create_app
from audit.db import READ_ONLY
from audit.privacy import due_date
from audit.signing import KeyDirError
from tests.conftest import ledger_rows

POLICY = """
p, role:engineer, prod, db/*, read, *, allow
g, alice, role:engineer, *
g, bob, role:engineer, *
"""
SECRET_TICKET = "OPS-4711-quartz"


@pytest.fixture
def privacy_headers(make_token):
    return {"Authorization": f"Bearer {make_token('privacy')}"}


@pytest.fixture
def traffic(client, auth, load_policy):
    """Decisions for alice and bob (in the policy) and zed (not in it), with context, and an outcome."""
    load_policy(POLICY)
    answers = {}
    for subject in ("alice", "bob", "zed-unlisted"):
        body = {"subject": subject, "domain": "prod", "object": "db/customers", "action": "read",
                "context": {"workflow": "maintenance", "ticket": SECRET_TICKET,
                            "note": f"asked by {subject}@example.com"}}
        answers[subject] = client.post("/v1/authorize", json=body, headers=auth).get_json()
    client.post("/v1/audit/events", json={"decision_id": answers["alice"]["decision_id"], "rows": 7, "status": "ok"},
                headers=auth)
    return answers


def all_text(engine, skip=()) -> str:
    """Every value of every column of every table, as one string."""
    names = [t for t in inspect(engine).get_table_names() if t not in skip]
    with engine.connect() as conn:
        return "\n".join(str(value) for table in names
                         for row in conn.execute(text(f"SELECT * FROM {table}")) for value in row)


def stored(needle: str, text: str) -> str | None:
    """Where `needle` stands in `text` as a value of its own (with what surrounds it), not inside a run
    of base64 or hex: a ciphertext, hash or token may hold "bob" by chance (one CI run failed on a
    "bob" somewhere in the stored text, with no more said)."""
    found = re.search(rf"(?<![A-Za-z0-9+/=_-]){re.escape(needle)}(?![A-Za-z0-9+/=_-])", text)
    return None if found is None else text[max(0, found.start() - 60):found.end() + 60]


def test_no_identifier_or_context_value_is_stored_in_plaintext(traffic, warden):
    everything = all_text(warden.engine, skip=("policy_rules",))  # the policy names its members
    for needle in ("alice", "bob", "zed-unlisted", SECRET_TICKET, "example.com"):
        where = stored(needle, everything)
        assert where is None, f"{needle} stored in: {where!r}"
    assert stored("zed-unlisted", all_text(warden.engine)) is None  # not even in the policy
    assert stored("bob", 'x "bob" y') and stored("bob", "asked by bob@example") and not stored("bob", "eXbobQ9+")


def test_context_is_scrubbed_before_it_is_sealed(traffic, warden, client, privacy_headers):
    request = client.post("/v1/privacy/requests", json={"subject": "bob", "kind": "access"},
                          headers=privacy_headers).get_json()
    export = client.get(f"/v1/privacy/requests/{request['id']}/export", headers=privacy_headers).get_json()
    assert export["decisions"][0]["context"]["note"] == "asked by <EMAIL>"
    assert export["decisions"][0]["context"]["ticket"] == SECRET_TICKET


def test_access_export_holds_exactly_that_persons_records(traffic, client, privacy_headers):
    response = client.post("/v1/privacy/requests", json={"subject": "alice", "kind": "access"},
                           headers=privacy_headers)
    assert response.status_code == 201
    request = response.get_json()
    assert request["status"] == "completed"
    assert [h["status"] for h in request["history"]] == ["received", "verified", "in_progress", "completed"]
    assert request["due_at"][:10] == due_date_str(request["received_at"])
    export = client.get(f"/v1/privacy/requests/{request['id']}/export", headers=privacy_headers).get_json()
    assert export["subject"] == "alice"
    assert [d["seq"] for d in export["decisions"]] == [traffic["alice"]["audit_seq"]]
    assert export["decisions"][0]["outcome"]["rows"] == 7
    assert export["policy"] == [["g", "alice", "role:engineer", "*"]]
    assert "bob" not in json.dumps(export)


def due_date_str(received: str) -> str:
    from datetime import datetime
    return due_date(datetime.fromisoformat(received.replace("Z", "+00:00"))).strftime("%Y-%m-%d")


def test_due_date_is_one_month_later():
    from datetime import datetime
    assert due_date(datetime(2026, 1, 31)).date().isoformat() == "2026-02-28"
    assert due_date(datetime(2026, 12, 15)).date().isoformat() == "2027-01-15"


def test_erasure_shreds_the_key_and_the_chain_still_verifies(traffic, warden, client, privacy_headers,
                                                             make_token, verify):
    seq = traffic["alice"]["audit_seq"]
    reviewer = {"Authorization": f"Bearer {make_token('review')}"}
    before = client.post(f"/v1/audit/events/{seq}/reveal", headers=reviewer).get_json()
    assert before["subject"] == "alice"
    response = client.post("/v1/privacy/requests", json={"subject": "alice", "kind": "erasure"},
                           headers=privacy_headers)
    assert response.status_code == 201 and response.get_json()["status"] == "completed"
    assert client.post(f"/v1/audit/events/{seq}/reveal", headers=reviewer).status_code == 410
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        assert warden.vault.find(conn, "alice") is None  # the pseudonym leads nowhere now
        assert warden.vault.by_pseudonym(conn, before["pseudonym"]) is None
    assert "alice" not in runner_export(warden)  # her policy rows are gone too
    assert verify().ok
    kinds = [r.kind for r in ledger_rows(warden.engine)]
    assert "privacy.erasure" in kinds and "privacy.reveal" in kinds
    # if alice comes back she is a new pseudonym
    again = client.post("/v1/authorize", headers={"Authorization": traffic_token(make_token)},
                        json={"subject": "alice", "domain": "prod", "object": "db/x", "action": "read"})
    assert again.get_json()["allowed"] is False
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        assert warden.vault.find(conn, "alice").pseudonym != before["pseudonym"]


def runner_export(warden) -> str:
    from authz.rules import policy_to_csv
    return policy_to_csv(warden.policies.export())


def traffic_token(make_token) -> str:
    return f"Bearer {make_token('authorize')}"


def test_opt_out_is_recorded_and_listed(traffic, warden, client, privacy_headers):
    response = client.post("/v1/privacy/requests", json={"subject": "bob", "kind": "opt_out"},
                           headers=privacy_headers)
    assert response.get_json()["status"] == "completed"
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        bob = warden.vault.find(conn, "bob")
        assert bob.opted_out and warden.vault.opted_out(conn) == {bob.pseudonym}
    assert "privacy.opt_out" in [r.kind for r in ledger_rows(warden.engine)]


@pytest.mark.parametrize("body,message", [
    ({"kind": "access"}, "subject is required"),
    ({"subject": "alice", "kind": "delete"}, "kind must be one of"),
    ({"subject": " alice", "kind": "access"}, "outer spaces"),
    ({"subject": "alice", "kind": "access", "why": "x"}, "unknown field"),
    ({"subject": "*", "kind": "access"}, "may not contain"),
])
def test_bad_privacy_requests_are_400(client, privacy_headers, body, message):
    response = client.post("/v1/privacy/requests", json=body, headers=privacy_headers)
    assert response.status_code == 400 and message in response.get_json()["error"]["message"]


def test_unknown_request_is_404_and_scope_is_required(client, privacy_headers, auth):
    assert client.get("/v1/privacy/requests/nope", headers=privacy_headers).status_code == 404
    assert client.post("/v1/privacy/requests", json={"subject": "a", "kind": "access"},
                       headers=auth).status_code == 403


def test_rotation_keeps_every_record_readable(traffic, warden, runner, client, privacy_headers):
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert "master v2 is current; rewrapped 3 data key(s)" in result.output
    assert "master v1 (current)" not in runner.invoke(args=["keys", "status"]).output
    assert runner.invoke(args=["keys", "retire", "1"]).exit_code == 0
    assert runner.invoke(args=["keys", "retire", "2"]).exit_code == 1  # the current one
    warden.vault.keyring.reload()
    for subject in ("alice", "bob", "zed-unlisted"):
        request = client.post("/v1/privacy/requests", json={"subject": subject, "kind": "access"},
                              headers=privacy_headers).get_json()
        export = client.get(f"/v1/privacy/requests/{request['id']}/export", headers=privacy_headers).get_json()
        assert export["decisions"][0]["context"]["ticket"] == SECRET_TICKET


def test_a_lost_key_directory_is_a_loud_error_not_new_keys(traffic, app, database_url, tmp_path, runner):
    key_dir = app.config["KEY_DIR"]
    shutil.rmtree(key_dir)
    fresh = create_app({"DATABASE_URL": database_url, "KEY_DIR": key_dir, "INSTANCE_PATH": str(tmp_path)})
    warden = fresh.extensions["warden"]
    with pytest.raises(KeyDirError, match="restore the key directory"):
        with warden.engine.connect() as conn:
            warden.vault.check(conn)
    assert not os.path.exists(os.path.join(key_dir, "master-v1.key"))
    token = warden.tokens.create("after-loss", ["authorize"], actor="test")
    response = fresh.test_client().post("/v1/authorize", headers={"Authorization": f"Bearer {token}"},
                                        json={"subject": "alice", "domain": "prod", "object": "db/x",
                                              "action": "read"})
    assert response.status_code == 503 and response.get_json()["allowed"] is False
    result = fresh.test_cli_runner().invoke(args=["serve"])
    assert result.exit_code == 1 and "refusing to start" in result.output
    warden.committer.close()
    warden.engine.dispose()


def test_an_exposed_key_directory_is_named_as_such_not_as_lost_keys(traffic, app, database_url, tmp_path):
    key_dir = app.config["KEY_DIR"]
    os.chmod(key_dir, 0o755)
    try:
        fresh = create_app({"DATABASE_URL": database_url, "KEY_DIR": key_dir, "INSTANCE_PATH": str(tmp_path)})
        warden = fresh.extensions["warden"]
        with pytest.raises(KeyDirError) as refused:
            with warden.engine.connect() as conn:
                warden.vault.check(conn)
        assert str(refused.value) == (f"key directory {key_dir} is open to other users (mode 755); "
                                      f"run: chmod 700 {key_dir}")
        warden.committer.close()
        warden.engine.dispose()
    finally:
        os.chmod(key_dir, 0o700)


def test_master_keys_from_the_environment(tmp_path):
    import base64
    from audit.keyring import Keyring
    keys = ",".join(f"{v}:{base64.b64encode(os.urandom(32)).decode()}" for v in (0, 1, 2))
    ring = Keyring(tmp_path / "unused", keys).ensure()
    assert ring.versions == [1, 2] and ring.current_version == 2
    assert not (tmp_path / "unused").exists()


def test_requests_about_unknown_people_make_up_nobody(client, privacy_headers, warden):
    for kind in ("access", "erasure"):
        request = client.post("/v1/privacy/requests", json={"subject": "nobody-ever", "kind": kind},
                              headers=privacy_headers).get_json()
        assert request["status"] == "completed" and request["subject"] == ""
        assert request["history"][-1]["note"] == "Warden holds no data about this person"
    export = client.get(f"/v1/privacy/requests/{request['id']}/export", headers=privacy_headers)
    assert export.status_code == 404  # an erasure has no export
    with warden.engine.connect() as conn:
        assert warden.vault.find(conn, "nobody-ever") is None


def test_erasing_a_role_name_cannot_lift_its_deny_rules(client, auth, privacy_headers, load_policy, warden):
    load_policy("p, role:eng, prod, db/*, read, *, allow\np, role:contractor, prod, db/pii*, *, *, deny\n"
                "g, alice, role:eng, *\ng, alice, role:contractor, *\n")
    body = {"subject": "alice", "domain": "prod", "object": "db/pii/cards", "action": "read"}
    assert client.post("/v1/authorize", json=body, headers=auth).get_json()["allowed"] is False
    client.post("/v1/authorize", headers=auth, json={**body, "subject": "role:contractor"})
    client.post("/v1/privacy/requests", json={"subject": "role:contractor", "kind": "erasure"},
                headers=privacy_headers)
    assert "role:contractor, prod, db/pii*" in runner_export(warden)
    assert client.post("/v1/authorize", json=body, headers=auth).get_json()["allowed"] is False
