"""`warden evidence`: the auditor's report for a period, in HTML and JSON."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import tamper
from tests.detectors.test_review_queue import POLICY, decide


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def test_the_report_covers_integrity_decisions_changes_privacy_and_reviews(client, auth, load_policy, runner,
                                                                           make_token, tmp_path):
    load_policy(POLICY)
    decide(client, auth)
    decide(client, auth, action="delete")  # denied
    decide(client, auth, workflow="break-glass")
    privacy = {"Authorization": f"Bearer {make_token('privacy')}"}
    client.post("/v1/privacy/requests", json={"subject": "bob", "kind": "opt_out"}, headers=privacy)
    runner.invoke(args=["detect", "run"])
    result = runner.invoke(args=["evidence", "--from", _today(), "--to", _today(), "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert "3 decision(s)" in result.output and "ledger intact" in result.output
    evidence = json.loads((tmp_path / "ev" / "evidence.json").read_text())
    assert evidence["ledger"]["ok"] is True
    decisions = evidence["decisions"]
    assert (decisions["total"], decisions["allowed"], decisions["denied"]) == (3, 2, 1)
    assert decisions["denied_objects"] == {"db/customers": 1}
    kinds = [c["kind"] for c in evidence["changes"]]
    assert "policy.change" in kinds and "token.create" in kinds and "privacy.request" in kinds
    assert evidence["privacy_requests"][0]["kind"] == "opt_out"
    assert evidence["review"]["by_detector"] == {"break_glass": 1}
    assert evidence["review"]["open_high"][0]["detector"] == "break_glass"
    page = (tmp_path / "ev" / "report.html").read_text()
    assert "INTACT" in page and "break_glass" in page and "<script" not in page
    for name in ("alice", "bob"):
        assert name not in page and name not in json.dumps(evidence)  # pseudonyms only


def test_a_broken_ledger_is_reported_and_exits_1(client, auth, load_policy, runner, warden, tmp_path):
    load_policy(POLICY)
    decide(client, auth)
    tamper(warden.engine, "UPDATE ledger_records SET body = replace(body, 'read', 'drop') WHERE kind = 'decision'")
    result = runner.invoke(args=["evidence", "--from", _today(), "--to", _today(), "--out", str(tmp_path / "ev")])
    assert result.exit_code == 1 and "FAILED verification" in result.output
    assert "FAILED at seq" in (tmp_path / "ev" / "report.html").read_text()


def test_a_period_is_from_the_first_day_to_the_end_of_the_last(client, auth, load_policy, runner, tmp_path):
    load_policy(POLICY)
    decide(client, auth)
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    result = runner.invoke(args=["evidence", "--from", yesterday, "--to", yesterday, "--out", str(tmp_path / "e")])
    assert result.exit_code == 0 and "0 decision(s)" in result.output


def test_bad_dates_are_refused_clearly(runner, tmp_path):
    result = runner.invoke(args=["evidence", "--from", "29/11/2026", "--to", _today(), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is not a date" in result.output
    result = runner.invoke(args=["evidence", "--from", _today(), "--to", "2020-01-01", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--to must be after --from" in result.output


@pytest.mark.parametrize("start,end", [("0001-01-01", "9999-12-31"),
                                       ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00")])
def test_the_edges_of_time_are_a_period_too(runner, tmp_path, start, end):
    result = runner.invoke(args=["evidence", "--from", start, "--to", end, "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert "ledger intact" in result.output
