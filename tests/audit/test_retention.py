"""The retention purge: the one sanctioned removal, sealed so the rest still proves itself."""

from datetime import timedelta

import pytest
from freezegun import freeze_time

from audit.chain import utcnow
from audit.ledger import Entry
from audit.retention import purge_ledger
from audit.walk import BAD_SEAL
from tests.conftest import ledger_rows, tamper


@pytest.fixture
def aged(warden):
    """Ten records made 40 days ago, then five fresh ones."""
    with freeze_time(utcnow() - timedelta(days=40)):
        for i in range(10):
            warden.ledger.record(Entry("test", {"old": i}))
    for i in range(5):
        warden.ledger.record(Entry("test", {"new": i}))
    return warden


def test_a_backdated_created_at_cannot_make_the_purge_take_fresh_records(aged, runner, verify):
    tamper(aged.engine, "UPDATE ledger_records SET created_at = :t WHERE seq = 15", t=utcnow() - timedelta(days=31))
    result = runner.invoke(args=["audit", "purge"])
    assert result.exit_code == 1 and "the row was edited" in result.output
    assert len(ledger_rows(aged.engine)) == 15
    assert verify().first_failure.seq == 15


def test_a_record_backdated_beyond_the_old_ones_is_not_taken_either(aged, runner, verify):
    # The purge runs up to the newest old record by created_at: here seq 10, whose hashed time is old.
    tamper(aged.engine, "UPDATE ledger_records SET created_at = :t WHERE seq = 15", t=utcnow() - timedelta(days=90))
    result = runner.invoke(args=["audit", "purge"])
    assert result.exit_code == 0 and "purged 10 record(s) through seq 10" in result.output
    assert [row.seq for row in ledger_rows(aged.engine)][:5] == [11, 12, 13, 14, 15]
    assert verify().first_failure.seq == 15


def test_purge_removes_old_records_seals_them_and_still_verifies(aged, runner, verify):
    result = runner.invoke(args=["audit", "purge"])  # WARDEN_RETENTION_DAYS: 30
    assert result.exit_code == 0, result.output
    assert "purged 10 record(s) through seq 10" in result.output
    rows = ledger_rows(aged.engine)
    assert [r.seq for r in rows] == list(range(11, 17))
    assert rows[-1].kind == "ledger.purge"
    report = verify()
    assert report.ok, report.first_failure
    assert report.sealed_through == 10 and report.checked == 6
    assert "nothing older" in runner.invoke(args=["audit", "purge"]).output


def test_purge_older_than_option(aged, runner):
    assert "nothing older than 50 days" in runner.invoke(args=["audit", "purge", "--older-than", "50"]).output
    assert runner.invoke(args=["audit", "purge", "--older-than", "0"]).exit_code == 2


def test_a_forged_seal_is_found(aged, verify):
    purge_ledger(aged.engine, aged.ledger, aged.signer, 30, actor="test")
    tamper(aged.engine, "UPDATE ledger_seals SET seq = 12")
    assert verify().first_failure.kind == BAD_SEAL


def test_deleting_after_the_seal_is_still_found(aged, verify):
    purge_ledger(aged.engine, aged.ledger, aged.signer, 30, actor="test")
    tamper(aged.engine, "DELETE FROM ledger_records WHERE seq = 11")
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (11, "missing")


def test_checkpoints_before_the_seal_do_not_trip_verification(aged, verify):
    aged.checkpoints.create()
    purge_ledger(aged.engine, aged.ledger, aged.signer, 30, actor="test")
    assert verify().ok
