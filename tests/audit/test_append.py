"""Appending: on Postgres the server chains a batch (migration 0005's function), on SQLite Python does.

Both must make exactly the bytes audit/chain.py defines, since verification is
always the Python one; and both must refuse a batch made for an older epoch.
"""

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.chain import chain_hash, record_body
from audit.ledger import Entry, StaleEpoch
from audit.verify import verify_ledger
from tests.conftest import ledger_rows

# Text that stresses the JSON and UTF-8 handling: quotes, backslashes, control characters,
# non-BMP characters, and what PostgreSQL cannot hold (NUL) only as an escape.
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63) | texts
                      | st.floats(allow_nan=False, allow_infinity=False),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                      max_leaves=12)
column_texts = texts.filter(lambda t: "\0" not in t)
fresh_ids = st.builds(lambda: str(uuid.uuid4()))  # unique per (kind, decision_id), across examples too


def _entry(kind: str, data: dict, index: dict) -> Entry:
    return Entry(kind, {**data, **index}, index)  # the search columns repeat the body, as verify demands


# Each kind fills its own search columns (audit/columns.py): a decision all six, an outcome its
# decision_id, anything else none.
data = st.dictionaries(texts, values, max_size=5)
entries = st.lists(st.one_of(
    st.builds(_entry, st.sampled_from(["test", "policy.change", "ünïcode.kind"]), data, st.just({})),
    st.builds(_entry, st.just("decision"), data, st.fixed_dictionaries({
        "decision_id": fresh_ids, "subject": column_texts, "domain": column_texts, "object": column_texts,
        "action": column_texts, "allowed": st.booleans()})),
    st.builds(_entry, st.just("outcome"), data, st.fixed_dictionaries({"decision_id": fresh_ids}))),
    min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(entries, min_size=1, max_size=3))
def test_appended_bytes_are_the_ones_chain_py_defines(warden, batches):
    for batch in batches:
        with warden.engine.begin() as conn:
            appended = warden.ledger.append(conn, batch)
        rows = {row.seq: row for row in ledger_rows(warden.engine)}
        for entry, record in zip(batch, appended):
            row = rows[record.seq]
            assert row.body == record_body(record.seq, entry.kind, record.time, entry.data)
            assert row.hash == record.hash == chain_hash(row.prev_hash, row.body)
            assert json.loads(row.body)["data"] == json.loads(json.dumps(entry.data))
    from audit.signing import LedgerSigner
    report = verify_ledger(warden.engine, LedgerSigner("/nonexistent"))
    assert report.ok, report.first_failure


def test_a_batch_for_an_older_epoch_appends_nothing(warden):
    with warden.engine.connect() as conn:
        epoch = warden.ledger.epoch(conn)
    with warden.engine.begin() as conn:
        warden.ledger.append(conn, [Entry("policy.change", {"n": 1})], bump_epoch=True)
    head = warden.ledger.head()
    with pytest.raises(StaleEpoch) as raised, warden.engine.begin() as conn:
        warden.ledger.append(conn, [Entry("test", {"n": 2})], expect_epoch=epoch)
    assert raised.value.epoch == epoch + 1
    assert warden.ledger.head() == head
    with warden.engine.begin() as conn:
        record, = warden.ledger.append(conn, [Entry("test", {"n": 3})], expect_epoch=epoch + 1)
    assert record.seq == head[0] + 1


def test_the_committer_makes_stale_items_again_under_the_lock(warden):
    """An item made for an old epoch is made again (its `prepare` runs), a current one is not."""
    with warden.engine.connect() as conn:
        epoch = warden.ledger.epoch(conn)
    with warden.engine.begin() as conn:
        warden.ledger.append(conn, [Entry("policy.change", {})], bump_epoch=True)
    calls = []

    def again(conn, memo):
        calls.append(memo["epoch"])
        return [Entry("test", {"made": "again"})], "fresh"
    _, result = warden.committer.submit(again, prepared=([Entry("test", {"made": "before"})], "stale"),
                                        epoch=epoch)
    assert (calls, result) == ([epoch + 1], "fresh")
    assert json.loads(ledger_rows(warden.engine)[-1].body)["data"] == {"made": "again"}
    _, result = warden.committer.submit(again, prepared=([Entry("test", {"made": "before"})], "current"),
                                        epoch=epoch + 1)
    assert (calls, result) == ([epoch + 1], "current")
    assert json.loads(ledger_rows(warden.engine)[-1].body)["data"] == {"made": "before"}
