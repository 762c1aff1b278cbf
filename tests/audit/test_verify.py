"""The chain and its verifier: every kind of tampering is found at the record it touched."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.chain import GENESIS_HASH, chain_hash, record_body, utcnow
from audit.ledger import Entry
from audit.walk import BEYOND_HEAD, BROKEN_LINK, MISSING, MODIFIED, OUT_OF_ORDER, TAIL_CUT, verify_rows
from tests.conftest import ledger_rows, tamper


@pytest.fixture
def chain(warden):
    """A ledger of ten records."""
    for i in range(10):
        warden.ledger.record(Entry("test", {"n": i, "who": f"user-{i}"}))
    return warden.engine


sql = tamper


def as_stored(engine, moment):
    """`moment` as Warden's own inserts store it (SQLAlchemy keeps SQLite datetimes as naive text)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if engine.dialect.name == "sqlite" else moment


def test_a_fresh_chain_verifies(chain, verify):
    report = verify()
    assert report.ok and report.checked == 10 and report.head_seq == 10


def test_records_link_to_their_predecessor(chain, verify):
    rows = ledger_rows(chain)
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in zip(rows, rows[1:]):
        assert after.prev_hash == before.hash
        assert after.hash == chain_hash(after.prev_hash, after.body)


def test_the_exact_hashed_bytes_are_stored(chain, verify):
    row = ledger_rows(chain)[3]
    parsed = json.loads(row.body)
    assert json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == row.body


def test_editing_a_field_is_found(chain, verify):
    sql(chain, "UPDATE ledger_records SET body = replace(body, 'user-4', 'user-9') WHERE seq = 5")
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (5, MODIFIED)


def test_rewriting_a_record_with_a_fresh_hash_breaks_the_next_link(chain, verify):
    row = ledger_rows(chain)[4]
    body = row.body.replace("user-4", "user-9")
    sql(chain, "UPDATE ledger_records SET body = :b, hash = :h WHERE seq = 5", b=body,
        h=chain_hash(row.prev_hash, body))
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (6, BROKEN_LINK)
    assert "record 5 was rewritten" in failure.message


def test_deleting_a_record_is_found(chain, verify):
    sql(chain, "DELETE FROM ledger_records WHERE seq = 4")
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (4, MISSING)


def test_inserting_a_forged_record_is_found(chain, verify):
    rows = ledger_rows(chain)
    sql(chain, "DELETE FROM ledger_records WHERE seq >= 7")
    now = utcnow()
    body = record_body(7, "test", now, {"n": 99, "who": "forged"})
    sql(chain, "INSERT INTO ledger_records (seq, prev_hash, hash, kind, created_at, body) "
               "VALUES (7, :p, :h, 'test', :t, :b)", p=rows[5].hash, h=chain_hash(rows[5].hash, body),
        t=as_stored(chain, now), b=body)
    report = verify()
    # A careful forger makes the record self-consistent; what gives it away is that the chain no
    # longer reaches the head.
    assert (report.first_failure.kind, report.first_failure.seq) == (TAIL_CUT, 8)


@pytest.mark.parametrize("column,value", [
    ("created_at", "2000-01-01 00:00:00"), ("subject", "p_someone_else"), ("allowed", False),
    ("object", "db/elsewhere"), ("decision_id", None)])
def test_editing_a_searchable_column_is_found(warden, verify, column, value):
    from authz.rules import parse_policy_csv
    warden.policies.apply(parse_policy_csv("p, alice, prod, db/*, read, *, allow\n"), replace=True, actor="t")
    from authz.requests import parse_authorize
    answer = warden.decisions.authorize([parse_authorize({"subject": "alice", "domain": "prod",
                                                          "object": "db/x", "action": "read"})],
                                        service="svc", request_id="r")[0]
    assert verify().ok
    sql(warden.engine, f"UPDATE ledger_records SET {column} = :v WHERE seq = :s", v=value, s=answer["audit_seq"])
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (answer["audit_seq"], "modified") and column in failure.message


def test_swapping_two_records_is_found(chain, verify):
    rows = ledger_rows(chain)
    a, b = rows[2], rows[3]
    sql(chain, "DELETE FROM ledger_records WHERE seq IN (3, 4)")
    for seq, row in ((3, b), (4, a)):
        sql(chain, "INSERT INTO ledger_records (seq, prev_hash, hash, kind, created_at, body) "
                   "VALUES (:s, :p, :h, :k, :t, :b)", s=seq, p=row.prev_hash, h=row.hash, k=row.kind,
            t=utcnow(), b=row.body)
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (3, OUT_OF_ORDER)


def test_cutting_the_tail_is_found(chain, verify):
    sql(chain, "DELETE FROM ledger_records WHERE seq > 7")
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (8, TAIL_CUT)


def test_appending_outside_warden_is_found(chain, verify):
    rows = ledger_rows(chain)
    now = utcnow()
    body = record_body(11, "test", now, {"n": 11})
    sql(chain, "INSERT INTO ledger_records (seq, prev_hash, hash, kind, created_at, body) "
               "VALUES (11, :p, :h, 'test', :t, :b)", p=rows[-1].hash, h=chain_hash(rows[-1].hash, body),
        t=as_stored(chain, now), b=body)
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (11, BEYOND_HEAD)


def test_cli_verify_exit_codes_and_json(chain, runner):
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0 and "INTACT" in result.output
    sql(chain, "UPDATE ledger_records SET body = replace(body, 'user-2', 'user-0') WHERE seq = 3")
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "first failure:        seq 3 (modified)" in result.output
    result = runner.invoke(args=["audit", "verify", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False and report["first_failure"]["seq"] == 3


def test_http_verify_needs_audit_read(client, make_token, chain):
    assert client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {make_token('authorize')}"}
                      ).status_code == 403
    response = client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {make_token('audit:read')}"})
    assert response.status_code == 200 and response.get_json()["ok"] is True


# --- property: any single mutation of a chain is found at the right seq -----------------------

def build_chain(n: int) -> list[list]:
    rows, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        body = record_body(seq, "test", utcnow(), {"n": seq})
        rows.append([seq, prev, chain_hash(prev, body), "test", body])
        prev = rows[-1][2]
    return rows


def _head(rows):
    return rows[-1][0], rows[-1][2]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 30), data=st.data())
def test_any_single_mutation_is_found_at_its_seq(n, data):
    rows = build_chain(n)
    head = _head(rows)
    assert verify_rows([tuple(r) for r in rows], head).ok
    i = data.draw(st.integers(0, n - 1), label="record")
    mutation = data.draw(st.sampled_from(["body", "hash", "prev_hash", "delete", "swap", "cut"]), label="mutation")
    expected_seq = i + 1
    if mutation == "body":
        rows[i][4] = rows[i][4].replace('"n":', '"n": ')
    elif mutation == "hash":
        rows[i][2] = "f" * 64 if rows[i][2] != "f" * 64 else "e" * 64
    elif mutation == "prev_hash":
        rows[i][1] = "a" * 64
    elif mutation == "delete":
        del rows[i]
    elif mutation == "swap":
        j = i + 1 if i + 1 < n else i - 1
        rows[i][1:], rows[j][1:] = rows[j][1:], rows[i][1:]
        expected_seq = min(i, j) + 1
    elif mutation == "cut":
        del rows[i:]
    report = verify_rows([tuple(r) for r in rows], head)
    assert not report.ok
    assert report.first_failure.seq == expected_seq, (mutation, report.first_failure)


@given(st.dictionaries(st.text(max_size=5), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8), max_size=4), st.integers(1, 10**12), st.sampled_from(["decision", "outcome", "x\"y"]))
def test_spliced_body_equals_canonical_json_of_the_record(data, seq, kind):
    from audit.chain import canonical_json, format_time
    now = utcnow()
    expected = canonical_json({"seq": seq, "kind": kind, "time": format_time(now), "data": data})
    assert record_body(seq, kind, now, data) == expected


def test_a_live_ledger_verifies_while_records_are_appended(warden, verify):
    """Verification reads the head and the rows as of one moment, so appends during it are no failure."""
    import threading

    warden.ledger.record(*[Entry("test", {"n": i}) for i in range(500)])
    stop = threading.Event()

    def append():
        while not stop.is_set():
            warden.ledger.record(Entry("test", {"live": True}))
    appender = threading.Thread(target=append)
    appender.start()
    try:
        reports = [verify() for _ in range(15)]
    finally:
        stop.set()
        appender.join()
    assert [r.first_failure for r in reports if not r.ok] == []
    assert reports[-1].head_seq > reports[0].head_seq  # records were appended meanwhile
    assert verify().ok
