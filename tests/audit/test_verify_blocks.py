"""Block verification on Postgres: a block passes only where the row-by-row walk passes, and the
walk still names every failure.

The rows here are in the walk's shape (seq, prev_hash, hash, kind, body, created_at, decision_id,
subject, domain, object, action, allowed); `copy_text` writes them as Postgres's COPY TO does.
"""

from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.chain import GENESIS_HASH, chain_hash, format_time, record_body
from audit.db import READ_ONLY
from audit.ledger import Entry
from audit.walk import MODIFIED, Walk
from audit.verify_blocks import block_holds, copy_blocks, parse_rows
from tests.conftest import tamper

_ESCAPES = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_START = datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)


def copy_field(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return "".join(_ESCAPES.get(c, c) for c in str(value))


def copy_text(rows) -> str:
    return "".join("\t".join(map(copy_field, row)) + "\n" for row in rows)


def chain_rows(entries) -> list[list]:
    """Rows of a chain of (kind, data, index) entries, as the walk reads them."""
    rows, prev = [], GENESIS_HASH
    for seq, (kind, data, index) in enumerate(entries, start=1):
        moment = _START + timedelta(microseconds=seq * 1001)
        body = record_body(seq, kind, moment, data)
        columns = [index.get(c) for c in ("decision_id", "subject", "domain", "object", "action", "allowed")]
        rows.append([seq, prev, chain_hash(prev, body), kind, body, format_time(moment), *columns])
        prev = rows[-1][2]
    return rows


def decision(n: int, subject="alice", object_="db/customers", **extra):
    data = {"decision_id": f"00000000-0000-4000-8000-{n:012d}", "subject": subject, "domain": "prod",
            "object": object_, "action": "read", "allowed": n % 2 == 0, "context": {"subject": "bob"}, **extra}
    return "decision", data, {k: data[k] for k in ("decision_id", "subject", "domain", "object", "action",
                                                   "allowed")}


def state(walk: Walk) -> tuple:
    r = walk.report
    return (walk.expected_seq, walk.prev_hash, walk.last_checkpoint, r.checked, r.last_seq,
            r.checkpoints_checked, r.first_failure)


def walked(rows, head, checkpoints=None) -> Walk:
    walk = Walk(head, checkpoints=checkpoints)
    walk.rows(parse_rows(copy_text(rows)))
    return walk


def test_ordinary_blocks_pass_without_the_walk():
    entries = [decision(i) for i in range(5)] + [
        ("outcome", {"decision_id": "00000000-0000-4000-8000-000000000001", "status": "done"},
         {"decision_id": "00000000-0000-4000-8000-000000000001"}),
        ("policy.change", {"rules": 3}, {}),  # no columns: all NULL
        decision(7, subject="carol", workflow="nightly")]  # `"subject":…` followed by `,`, not `}` as above
    rows = chain_rows(entries)
    head = (rows[-1][0], rows[-1][2])
    walk = Walk(head, checkpoints={3: rows[2][2]})
    assert block_holds(copy_text(rows), walk)
    assert state(walk) == state(walked(rows, head, {3: rows[2][2]}))
    assert walk.end().ok and walk.report.checked == 8 and walk.report.checkpoints_checked == 1


@pytest.mark.parametrize("value,plain", [('quo"te', False), ("back\\slash", False), ("tab\there", False),
                                         ("new\nline", False), ("bell\x07", False), ("\\N", False),
                                         ("caf\u00e9 \u2028 \x7f", True)])  # JSON writes these as they are
def test_a_value_that_needs_escaping_goes_to_the_walk_which_passes_it(value, plain):
    rows = chain_rows([decision(1), decision(2, subject=value), decision(3, object_=value, note=value)])
    head = (3, rows[-1][2])
    assert parse_rows(copy_text(rows)) == [tuple(r) for r in rows]
    walk = Walk(head)
    assert block_holds(copy_text(rows), walk) == plain
    if not plain:
        assert state(walk) == state(Walk(head))  # untouched
        assert walk.rows(parse_rows(copy_text(rows)))
    assert walk.end().ok and walk.report.checked == 3


@pytest.mark.parametrize("column,value", [
    (3, "outcome"), (5, "2026-11-30T03:00:00.000000Z"), (6, None), (6, "other"), (7, "mallory"), (8, "test"),
    (7, None), (9, "db/x"), (10, "write"), (11, None), (11, True), (4, None)])
def test_an_edited_column_fails_the_block_and_the_walk_names_it(column, value):
    rows = chain_rows([decision(i) for i in range(1, 6)])
    head = (5, rows[-1][2])
    rows[2][column] = value if value != rows[2][column] else "x"
    walk = Walk(head)
    assert not block_holds(copy_text(rows), walk)
    assert not walk.rows(parse_rows(copy_text(rows)))
    assert (walk.report.first_failure.seq, walk.report.first_failure.kind) == (3, MODIFIED)


@pytest.mark.parametrize("row,column,value", [
    (1, 7, "alice"),   # an outcome names its decision only
    (2, 6, "d-1"),     # a policy change fills no column
    (2, 7, "bob"),     # ... not even with a value its body holds, nested
])
def test_a_column_set_on_a_record_that_never_fills_it_is_found(row, column, value):
    rows = chain_rows([decision(1), ("outcome", {"decision_id": "d-1", "status": "ok"}, {"decision_id": "d-1"}),
                       ("policy.change", {"by": {"subject": "bob"}}, {})])
    rows[row][column] = value
    head = (3, rows[-1][2])
    walk = Walk(head)
    assert not block_holds(copy_text(rows), walk)
    assert not walk.rows(parse_rows(copy_text(rows)))
    assert (walk.report.first_failure.seq, walk.report.first_failure.kind) == (row + 1, MODIFIED)


_TEXT = st.text(alphabet=st.sampled_from('ab"\\\t\n\x01N,:}{é\u2028'), max_size=6)


@st.composite
def mutated_chains(draw):
    n = draw(st.integers(1, 12))
    entries = []
    for i in range(n):
        kind = draw(st.sampled_from(["decision", "outcome", "policy.change"]))
        if kind == "decision":
            entries.append(decision(i, subject=draw(st.sampled_from(["alice", "bob"]) | _TEXT)))
        elif kind == "outcome":
            entries.append(("outcome", {"decision_id": f"d-{i}", "note": draw(_TEXT)}, {"decision_id": f"d-{i}"}))
        else:
            entries.append(("policy.change", {"rules": i, "by": draw(_TEXT)}, {}))
    rows = chain_rows(entries)
    head = (rows[-1][0], rows[-1][2])
    checkpoints = {s: rows[s - 1][2] for s in draw(st.sets(st.integers(1, n), max_size=3))}
    if checkpoints and draw(st.booleans()):
        checkpoints[min(checkpoints)] = "f" * 64
    what = draw(st.sampled_from(["none", "field", "delete", "swap", "head"]))
    i = draw(st.integers(0, n - 1))
    if what == "field":
        column = draw(st.integers(1, 11))
        rows[i][column] = draw(st.none() | st.booleans() | _TEXT | st.sampled_from(
            [r[column] for r in rows] + [rows[i][4].replace('"', "'", 1), rows[i][4] + " "]))
    elif what == "delete" and n > 1:
        del rows[i]
    elif what == "swap" and n > 1:
        j = (i + 1) % n
        rows[i][1:], rows[j][1:] = rows[j][1:], rows[i][1:]
    elif what == "head":
        head = (head[0] - draw(st.integers(0, 2)), draw(st.sampled_from([head[1], "0" * 64])))
    return rows, head, checkpoints


@settings(max_examples=400, deadline=None)
@given(mutated_chains())
def test_a_block_passes_only_where_the_walk_passes_and_the_report_is_the_walks(case):
    rows, head, checkpoints = case
    text = copy_text(rows)
    reference = walked(rows, head, checkpoints)
    fast = Walk(head, checkpoints=checkpoints)
    if block_holds(text, fast):
        assert reference.report.ok and state(fast) == state(reference)
    else:
        assert state(fast) == state(Walk(head, checkpoints=checkpoints))
        fast.rows(parse_rows(text))
    assert fast.end().as_dict() == reference.end().as_dict()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["alice", "bob", "p_0a1b"]), min_size=1, max_size=20))
def test_plain_chains_always_take_the_fast_path(subjects):
    rows = chain_rows([decision(i, subject=s) for i, s in enumerate(subjects)])
    walk = Walk((len(rows), rows[-1][2]))
    assert block_holds(copy_text(rows), walk) and walk.end().ok


# --- on a real server -------------------------------------------------------------------------

_TRICKY = 'q"uote back\\slash tab\t nl\n cr\r bell\x07 \\N caf\u00e9 \u2028 \U0001f600'


on_postgres = pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                      indirect=True)


@on_postgres
def test_copy_text_is_what_the_walk_reads_and_tricky_values_verify(warden, verify):
    index = {"decision_id": "d-1", "subject": _TRICKY, "domain": "prod", "object": "db/\\x", "action": "read",
             "allowed": False}
    warden.ledger.record(Entry("decision", {**index, "note": _TRICKY}, index), Entry("policy.change", {"n": 1}),
                            *[Entry("outcome", {"decision_id": f"d-{i}"}, {"decision_id": f"d-{i}"})
                              for i in range(500)])
    with warden.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        rows = list(warden.ledger.records(conn, with_columns=True))
        with closing(copy_blocks(conn.connection.dbapi_connection, 0, block_rows=64)) as blocks:
            texts = list(blocks)
    assert len(texts) == 8 and "".join(texts) == copy_text(rows)
    assert parse_rows("".join(texts)) == rows
    report = verify()
    assert report.ok and report.checked == 502


@on_postgres
def test_a_failure_early_in_a_long_chain_stops_the_copy_and_leaves_the_connection_usable(warden, verify):
    warden.ledger.record(*[Entry("test", {"n": i}) for i in range(3000)])
    tamper(warden.engine, "UPDATE ledger_records SET body = replace(body, 'test', 'tost') WHERE seq = 5")
    for _ in range(3):  # the pool hands back the same connection: it must not be left mid-COPY
        failure = verify().first_failure
        assert (failure.seq, failure.kind) == (5, MODIFIED)
    assert warden.ledger.head()[0] == 3000


def test_walk_skip_reports_progress_when_it_crosses_ten_thousand():
    seen = []
    walk = Walk((30_000, "h"), progress=seen.append)
    for _ in range(150):
        walk.skip(200, "h", [])
    assert seen == [10_000, 20_000, 30_000] and replace(walk.report).checked == 30_000


# --- several processes, one range each ---------------------------------------------------------

def _chain_of(warden, n: int) -> None:
    warden.ledger.record(*[Entry("test", {"n": i}) for i in range(n)])


_TAMPERS = {
    "intact": None,
    "edit in a helper's range": "UPDATE ledger_records SET body = replace(body, 'test', 'tost') WHERE seq = 1700",
    "delete at a range's start": "DELETE FROM ledger_records WHERE seq = 1001",
    "delete at a range's end": "DELETE FROM ledger_records WHERE seq = 2000",
    "cut the tail": "DELETE FROM ledger_records WHERE seq > 2900",
    "relink a range's first record": "UPDATE ledger_records SET prev_hash = repeat('a', 64) WHERE seq = 2001",
    "edit in the parent's range": "UPDATE ledger_records SET kind = 'x' WHERE seq = 10",
    "append beyond the head": "INSERT INTO ledger_records (seq, prev_hash, hash, kind, created_at, body) "
                              "SELECT 3001, hash, repeat('b', 64), kind, created_at, body FROM ledger_records "
                              "WHERE seq = 3000",
}


def _watch_helpers(monkeypatch, connect=None):
    """Record the (after, upto) of each helper started and each helper's outcome."""
    from audit import verify_ranges

    started, outcomes = [], []
    real_start, real_outcome = verify_ranges._Helper.start.__func__, verify_ranges._Helper.outcome

    def start(cls, connect_kwargs, snapshot, after, upto, walk):
        started.append((after, upto))
        return real_start(cls, {**connect_kwargs, **(connect or {})}, snapshot, after, upto, walk)

    def outcome(helper):
        outcomes.append(real_outcome(helper))
        return outcomes[-1]
    monkeypatch.setattr(verify_ranges._Helper, "start", classmethod(start))
    monkeypatch.setattr(verify_ranges._Helper, "outcome", outcome)
    return started, outcomes


@on_postgres
@pytest.mark.parametrize("tamper_sql", list(_TAMPERS.values()), ids=list(_TAMPERS))
def test_ranges_in_helper_processes_give_the_single_walks_report(warden, monkeypatch, tamper_sql):
    from audit import verify_ranges
    from audit.verify import verify_ledger

    _chain_of(warden, 1500)
    warden.checkpoints.create()  # in the first helper's range
    _chain_of(warden, 1500)
    warden.checkpoints.create()
    if tamper_sql:
        tamper(warden.engine, tamper_sql)
    single = verify_ledger(warden.engine, warden.signer, processes=1)
    monkeypatch.setattr(verify_ranges, "MIN_RECORDS_PER_PROCESS", 500)
    started, outcomes = _watch_helpers(monkeypatch)
    shared = verify_ledger(warden.engine, warden.signer, processes=3)
    assert started == [(1000, 2000), (2000, None)]
    if tamper_sql is None:  # the helpers' ranges were taken from them, not walked again
        assert [o["checked"] for o in outcomes] == [1000, 1000]
    assert shared.as_dict() == single.as_dict()
    assert shared.ok == (tamper_sql is None)
    if shared.ok:
        assert (shared.checked, shared.checkpoints_checked) == (3000, 2)


@on_postgres
def test_a_helper_that_fails_leaves_its_range_to_the_parent_and_says_so(warden, monkeypatch, caplog):
    from audit import verify_ranges
    from audit.verify import verify_ledger

    _chain_of(warden, 1200)
    monkeypatch.setattr(verify_ranges, "MIN_RECORDS_PER_PROCESS", 500)
    _watch_helpers(monkeypatch, connect={"dbname": "no_such_database"})
    report = verify_ledger(warden.engine, warden.signer, processes=2)
    assert report.ok and report.checked == 1200
    assert "the helper verifying records 601..the end failed" in caplog.text
    assert "no_such_database" in caplog.text  # its own last words


@on_postgres
def test_more_processes_than_the_chain_can_use_are_not_started(warden, monkeypatch):
    from audit import verify_ranges
    from audit.verify import verify_ledger

    _chain_of(warden, 3000)
    monkeypatch.setattr(verify_ranges, "MIN_RECORDS_PER_PROCESS", 1000)
    started, _ = _watch_helpers(monkeypatch)
    report = verify_ledger(warden.engine, warden.signer, processes=64)
    assert report.ok and report.checked == 3000
    assert started == [(1000, 2000), (2000, None)]


@on_postgres
def test_a_folder_named_audit_where_verify_runs_cannot_stand_in_for_a_helper(warden, monkeypatch, tmp_path):
    from audit import verify_ranges
    from audit.verify import verify_ledger

    fake = tmp_path / "cwd" / "audit"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "verify_ranges.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('fooled')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    _chain_of(warden, 1200)
    monkeypatch.setattr(verify_ranges, "MIN_RECORDS_PER_PROCESS", 500)
    started, outcomes = _watch_helpers(monkeypatch)
    assert verify_ledger(warden.engine, warden.signer, processes=2).ok
    assert not (tmp_path / "ran").exists() and outcomes[0]["checked"] == 600


@on_postgres
def test_timeouts_and_a_latin1_client_encoding_do_not_stop_a_long_walk(warden, monkeypatch):
    from sqlalchemy import create_engine

    from audit import verify_ranges
    from audit.verify import verify_ledger

    _chain_of(warden, 20_000)
    strict = create_engine(warden.engine.url, connect_args={
        "options": "-c statement_timeout=50 -c idle_in_transaction_session_timeout=50 -c client_encoding=LATIN1"})
    try:
        assert verify_ledger(strict, warden.signer).ok
        monkeypatch.setattr(verify_ranges, "MIN_RECORDS_PER_PROCESS", 5000)
        _, outcomes = _watch_helpers(monkeypatch)
        report = verify_ledger(strict, warden.signer, processes=2)
        assert report.ok and report.checked == 20_000 and outcomes[0]["checked"] == 10_000
    finally:
        strict.dispose()


@on_postgres
def test_a_database_error_mid_walk_is_sqlalchemys_as_from_any_statement(warden, monkeypatch):
    import psycopg
    from sqlalchemy.exc import OperationalError

    from audit import verify_ranges
    from audit.verify import verify_ledger

    _chain_of(warden, 10)

    def lost(*args, **kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly")
        yield
    monkeypatch.setattr(verify_ranges, "copy_blocks", lost)
    with pytest.raises(OperationalError, match="server closed the connection"):
        verify_ledger(warden.engine, warden.signer)


@given(st.text() | st.text(alphabet=st.characters(max_codepoint=0x7f)))
def test_the_ascii_shortcut_finds_what_the_pattern_finds(text):
    from audit.verify_blocks import _UNSAFE, _unsafe
    assert _unsafe(text) == (_UNSAFE.search(text) is not None)
