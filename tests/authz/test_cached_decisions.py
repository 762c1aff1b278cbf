"""Decisions made from cached state (the policy, people's keys) never outlive a change made elsewhere.

Another Warden process is a second app on the same database and key directory:
its policy changes and erasures move the ledger epoch, and the first app's next
decision must honour them although its caches still hold the old state.
"""

import json

import pytest

from app import create_app
from authz.rules import parse_policy_csv
from tests.conftest import ledger_rows

POLICY = "p, role:engineer, prod, db/*, read, maintenance, allow\ng, alice, role:engineer, *\n"
ALLOWED = {"subject": "alice", "domain": "prod", "object": "db/customers", "action": "read",
           "context": {"workflow": "maintenance"}}


@pytest.fixture(autouse=True)
def _policy(load_policy):
    load_policy(POLICY)


@pytest.fixture
def other(app, database_url, tmp_path):
    """A second Warden process's services, on the same database and keys."""
    second = create_app({"TESTING": True, "DATABASE_URL": database_url, "INSTANCE_PATH": str(tmp_path / "other"),
                         "KEY_DIR": app.config["KEY_DIR"]})
    yield second.extensions["warden"]
    second.extensions["warden"].committer.close()
    second.extensions["warden"].engine.dispose()


def _record(warden, seq: int) -> dict:
    return json.loads(next(row for row in ledger_rows(warden.engine) if row.seq == seq).body)["data"]


def test_a_policy_change_elsewhere_is_honoured_by_the_next_decision(client, auth, other):
    first = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    assert first["allowed"] is True and first["policy_version"] == 1
    other.policies.apply(parse_policy_csv(POLICY + "p, alice, prod, db/customers, read, *, deny\n"),
                         replace=True, actor="other process")
    second = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    assert second["allowed"] is False and second["policy_version"] == 2
    assert second["reason"] == "denied by rule alice, prod, db/customers, read, *, deny"
    third = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()  # and the cache caught up
    assert third["allowed"] is False and third["policy_version"] == 2


def test_an_erasure_elsewhere_is_honoured_by_the_next_decision(client, auth, warden, other):
    before = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    erased_pseudonym = _record(warden, before["audit_seq"])["subject"]
    other.privacy.submit("alice", "erasure", actor="test")
    load_again = parse_policy_csv(POLICY)  # the erasure removed alice's role row
    other.policies.apply(load_again, replace=True, actor="test")
    after = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    record = _record(warden, after["audit_seq"])
    assert record["subject"] != erased_pseudonym  # a new key, not the destroyed one
    with warden.engine.connect() as conn:
        subject = warden.vault.find(conn, "alice")
    assert subject.pseudonym == record["subject"]
    assert warden.vault.open(subject, record["subject_enc"], f"{after['decision_id']}:subject") == "alice"


def test_an_erasure_between_deciding_and_appending_is_honoured(client, auth, warden, other, monkeypatch):
    """The worst moment: the record was made with the cached key, then the key was destroyed
    before the writer appended it. The writer must make it again with the new state."""
    client.post("/v1/authorize", json=ALLOWED, headers=auth)  # alice's key is now cached
    with warden.engine.connect() as conn:
        erased_pseudonym = warden.vault.find(conn, "alice").pseudonym
    submit_later = warden.committer.submit_later

    def erase_then_submit(*args, **kwargs):
        if kwargs.get("prepared") is not None:
            other.privacy.submit("alice", "erasure", actor="test")
        return submit_later(*args, **kwargs)
    monkeypatch.setattr(warden.committer, "submit_later", erase_then_submit)
    answer = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    monkeypatch.undo()
    record = _record(warden, answer["audit_seq"])
    kinds = [row.kind for row in ledger_rows(warden.engine)]
    assert kinds[answer["audit_seq"] - 2] == "privacy.erasure"  # the erasure came first in the chain...
    assert record["subject"] != erased_pseudonym  # ...so the decision is under a fresh key
    assert answer["allowed"] is False  # and under the policy without alice's role row
    with warden.engine.connect() as conn:
        assert warden.vault.find(conn, "alice").pseudonym == record["subject"]


def test_each_decision_still_lands_once_when_the_epoch_moves_mid_batch(app, warden, other, make_token):
    """Many callers, a policy change in the middle: every answer has its own record, gapless."""
    import threading

    token = make_token("authorize")
    answers, gate = [], threading.Barrier(9)

    def call():
        client = app.test_client()
        gate.wait()
        for _ in range(5):
            answers.append(client.post("/v1/authorize", json=ALLOWED,
                                       headers={"Authorization": f"Bearer {token}"}).get_json())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.wait()
    other.policies.apply(parse_policy_csv(POLICY + "p, alice, prod, db/x, read, *, allow\n"), replace=True,
                         actor="other process")
    for thread in threads:
        thread.join()
    seqs = sorted(a["audit_seq"] for a in answers)
    assert len(seqs) == 40 == len(set(seqs))
    decided = {row.seq: json.loads(row.body)["data"] for row in ledger_rows(warden.engine) if row.kind == "decision"}
    for answer in answers:
        assert decided[answer["audit_seq"]]["decision_id"] == answer["decision_id"]
        assert decided[answer["audit_seq"]]["policy_version"] == answer["policy_version"]


def test_the_subject_cache_forgets_and_expires(warden):
    from audit.subject_cache import SubjectCache

    cache = SubjectCache(warden.engine, warden.ledger, warden.vault, max_entries=2, ttl=60)
    found, epoch = cache.get({"alice"})
    found.update(cache.get({"bob"})[0])
    cache.get({"carol"})  # over the limit: the oldest goes
    assert set(cache._state[1]) == {"bob", "carol"}
    assert cache.get({"bob"})[0]["bob"] == found["bob"]
    cache.forget(unless_epoch=epoch)
    assert set(cache._state[1]) == {"bob", "carol"}
    cache.forget()
    assert cache._state == (None, {})
    expired = SubjectCache(warden.engine, warden.ledger, warden.vault, ttl=-1)
    expired.get({"alice"})
    reads = []
    expired._load = lambda names: reads.append(names) or ({}, epoch)
    expired.get({"alice"})
    assert reads == [{"alice"}]  # an expired entry is read again


def test_no_destroyed_key_stays_in_memory(client, auth, warden, other):
    """The erasing process forgets at once; another drops its cache at its next sweep."""
    client.post("/v1/authorize", json=ALLOWED, headers=auth)
    other.decisions.authorize([__import__("authz.requests", fromlist=["x"]).parse_authorize(ALLOWED)],
                              service="t", request_id="r")
    assert "alice" in warden.decisions.subjects._state[1] and "alice" in other.decisions.subjects._state[1]
    warden.privacy.submit("alice", "erasure", actor="test")
    assert warden.decisions.subjects._state == (None, {})
    assert "alice" in other.decisions.subjects._state[1]
    other.decisions.subjects.sweep()
    assert other.decisions.subjects._state == (None, {})


def test_a_sweep_drops_expired_keys(warden):
    from audit.subject_cache import SubjectCache

    cache = SubjectCache(warden.engine, warden.ledger, warden.vault, ttl=-1)
    cache.get({"alice"})
    assert cache._state[1]
    cache.sweep()
    assert cache._state[1] == {}


def test_a_policy_change_by_a_writer_that_ignores_the_epoch_is_honoured(client, auth, warden, database_url):
    """An older Warden, or a statement typed by hand, changes the policy and its version only:
    the database moves the epoch itself."""
    from sqlalchemy import text

    assert client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()["allowed"] is True
    with warden.engine.begin() as conn:
        conn.execute(text("INSERT INTO policy_rules (ptype, v0, v1, v2, v3, v4, v5) "
                          "VALUES ('p', 'alice', 'prod', 'db/customers', 'read', '*', 'deny')"))
        conn.execute(text("UPDATE policy_state SET version = version + 1"))
    answer = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    assert answer["allowed"] is False and answer["policy_version"] == 2


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_after_a_change_the_policy_is_rebuilt_outside_the_head_lock(client, auth, warden, other, monkeypatch):
    """A stale batch is made again from fresh state before the head is locked, not under it,
    so a big policy's rebuild never holds up every process's appends."""
    client.post("/v1/authorize", json=ALLOWED, headers=auth)
    other.policies.apply(parse_policy_csv(POLICY + "p, alice, prod, db/customers, read, *, deny\n"),
                         replace=True, actor="other process")
    careful = []
    original = warden.committer._commit_carefully
    monkeypatch.setattr(warden.committer, "_commit_carefully", lambda *a: careful.append(1) or original(*a))
    answer = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_json()
    assert answer["allowed"] is False and answer["policy_version"] == 2 and careful == []
