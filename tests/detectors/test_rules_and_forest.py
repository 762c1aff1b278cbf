"""Rule detectors and the isolation forest on synthetic events (no database)."""

import random
from datetime import datetime, timedelta, timezone

import pytest

from detectors import forest
from detectors.features import DecisionEvent, extract
from detectors.rules import rule_findings
from detectors.scoring import forest_findings

T0 = datetime(2026, 11, 2, 9, tzinfo=timezone.utc)  # a Monday morning


def event(seq, minutes=0, subject="p_a", obj="db/customers", action="read", workflow="support", allowed=True,
          rows=None, at=None):
    return DecisionEvent(seq, at or T0 + timedelta(minutes=minutes), subject, "prod", obj, action, workflow,
                         allowed, rows)


def test_break_glass_is_always_high():
    found = rule_findings([event(1, workflow="break-glass"), event(2, workflow="Emergency", allowed=False)])
    assert [(f.detector, f.seqs, f.priority) for f in found] == [("break_glass", (1,), "high"),
                                                                 ("break_glass", (2,), "high")]
    assert "denied" in found[1].reasons[0]


def test_allowed_without_a_workflow_is_out_of_workflow_but_a_denial_is_not():
    found = rule_findings([event(1, workflow=""), event(2, workflow="", allowed=False), event(3)])
    assert [(f.detector, f.seqs, f.priority) for f in found] == [("out_of_workflow", (1,), "medium")]


def test_five_denials_in_ten_minutes_are_one_burst():
    burst = [event(i, minutes=i, obj=f"db/t{i}", allowed=False) for i in range(1, 6)]
    slow = [event(10 + i, minutes=100 + 11 * i, subject="p_b", allowed=False) for i in range(6)]
    four = [event(30 + i, minutes=i, subject="p_c", allowed=False) for i in range(4)]
    found = [f for f in rule_findings(sorted(burst + slow + four, key=lambda e: e.seq))
             if f.detector == "denial_burst"]
    assert len(found) == 1 and found[0].seqs == (1, 2, 3, 4, 5) and found[0].subject == "p_a"
    assert "db/t1" in found[0].reasons[1]


def _working_days(n=400, seed=1):
    rnd = random.Random(seed)
    events = []
    for seq in range(1, n + 1):
        at = T0 + timedelta(days=rnd.randrange(5), hours=rnd.randrange(8), minutes=rnd.randrange(60))
        events.append(event(seq, subject=rnd.choice(["p_a", "p_b", "p_c"]), at=at,
                            obj=rnd.choice(["db/customers", "db/orders"]), rows=rnd.randrange(1, 50)))
    events.sort(key=lambda e: e.time)
    return [DecisionEvent(i, e.time, e.subject, e.domain, e.object, e.action, e.workflow, e.allowed, e.rows)
            for i, e in enumerate(events, start=1)]


def test_the_forest_flags_a_night_time_bulk_export_and_says_why():
    usual = _working_days()
    night = T0 + timedelta(days=2, hours=-7)  # 02:00 UTC
    odd = [event(len(usual) + i, at=night + timedelta(minutes=i), subject="p_a", obj=f"db/payroll{i}",
                 action="export", rows=200_000) for i in range(1, 4)]
    events = usual + odd
    seqs, matrix = extract(usual)
    _, baseline = forest.train(seqs, matrix, contamination=0.01, random_state=7, trained_at="test")
    found = forest_findings(events, baseline, after_seq=len(usual))
    assert len(found) == 1  # the three are one person's within an hour
    finding = found[0]
    assert finding.seqs == tuple(e.seq for e in odd) and finding.priority == "high"
    text = " ".join(finding.reasons)
    assert "rows returned" in text and "3 unusual decisions within an hour" in text


def test_usual_traffic_opens_about_the_contamination_share():
    usual = _working_days(600, seed=3)
    seqs, matrix = extract(usual)
    _, baseline = forest.train(seqs, matrix, contamination=0.02, random_state=7, trained_at="test")
    flagged = sum(len(f.seqs) for f in forest_findings(usual, baseline))
    assert flagged <= 0.05 * len(usual)


def test_too_little_history_is_refused():
    seqs, matrix = extract(_working_days(20))
    with pytest.raises(forest.NotEnoughHistory, match="at least 50"):
        forest.train(seqs, matrix, contamination=0.01, random_state=7, trained_at="test")
