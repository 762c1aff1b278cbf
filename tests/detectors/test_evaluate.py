"""`warden detect evaluate`: recorded traffic in, the review items the detectors would open out."""

import json
import random
from datetime import datetime, timedelta, timezone

from tests.detectors.test_review_queue import POLICY

T0 = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)


def _line(at, subject, obj, action="read", workflow="support", rows=10, label="normal"):
    body = {"subject": subject, "domain": "prod", "object": obj, "action": action, "time": at.isoformat(),
            "rows": rows, "label": label}
    if workflow:
        body["context"] = {"workflow": workflow}
    return json.dumps(body)


def _traffic(path):
    rnd = random.Random(5)
    lines = [_line(T0 + timedelta(days=rnd.randrange(5), minutes=rnd.randrange(9 * 60)),
                   rnd.choice(["alice", "bob"]), rnd.choice(["db/customers", "db/orders"]),
                   rows=rnd.randrange(1, 40)) for _ in range(300)]
    lines += [_line(T0 + timedelta(days=1, hours=3), "alice", "db/customers", workflow="break-glass",
                    label="break_glass")]
    lines += [_line(T0 + timedelta(days=2, hours=2, minutes=i), "bob", f"db/secret{i}", action="write",
                    label="probing") for i in range(6)]
    lines += [_line(T0 + timedelta(days=3, hours=-6, minutes=i), "olga", f"db/payroll{i}", action="export",
                    workflow="", rows=500_000, label="night_export") for i in range(3)]
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_evaluate_writes_items_and_says_what_was_caught(runner, load_policy, tmp_path):
    load_policy(POLICY)
    _traffic(tmp_path / "traffic.jsonl")
    result = runner.invoke(args=["detect", "evaluate", "--traffic", str(tmp_path / "traffic.jsonl"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert items and all(set(item) == {"lines", "score", "priority", "reasons", "detector"} for item in items)
    covered = {line for item in items for line in item["lines"]}
    assert 301 in covered  # break-glass
    assert set(range(302, 308)) & covered  # the probing denials
    assert set(range(308, 311)) <= covered  # the night-time export
    assert len(covered & set(range(1, 301))) <= 15  # few normal lines flagged
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["lines"] == 310 and summary["by_label"]["night_export"] == {"lines": 3, "covered": 3}
    assert "night_export" in result.output and "caught" in result.output


def test_a_bad_traffic_line_is_named(runner, load_policy, tmp_path):
    load_policy(POLICY)
    path = tmp_path / "traffic.jsonl"
    good = _line(T0, "alice", "db/x")
    for bad, message in ((good.replace('"time": "2026', '"time": "nope'), "line 2: time must be ISO 8601"),
                         ("{nope", "line 2: not JSON"),
                         (good.replace('"subject": "alice"', '"subject": "a*"'), "line 2: subject"),
                         (good.replace('"rows": 10', '"rows": -1'), "line 2: rows must be"),
                         (good.replace('"rows": 10', '"rows": ' + "9" * 400), "line 2: rows must be"),
                         (good.replace(T0.isoformat(), "0001-01-01T00:30:00+01:00"), "line 2: time must be"),
                         (good.replace('"rows": 10', '"rows": 10, "extra": 1'),
                          "unknown field extra (expected action, context, domain, object, subject; "
                          "and on a traffic line: label, rows, time)")):
        path.write_text(good + "\n" + bad + "\n")
        result = runner.invoke(args=["detect", "evaluate", "--traffic", str(path), "--out", str(tmp_path / "o")])
        assert result.exit_code == 1 and message in result.output, result.output


def test_a_file_that_is_not_utf8_is_named(runner, load_policy, tmp_path):
    load_policy(POLICY)
    (tmp_path / "t.jsonl").write_bytes(b'{"subject": "\xff"}\n')
    result = runner.invoke(args=["detect", "evaluate", "--traffic", str(tmp_path / "t.jsonl"), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "not UTF-8" in result.output


def test_without_traffic_the_sample_for_the_demo_policy_is_evaluated(runner, load_policy, tmp_path):
    from importlib.resources import files
    load_policy(files("authz").joinpath("demo_policy.csv").read_text(encoding="utf-8"))
    result = runner.invoke(args=["detect", "evaluate", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "no --traffic" in result.output and "traffic.jsonl" in result.output
    lines = (tmp_path / "out" / "traffic.jsonl").read_text().splitlines()  # the lines items point at
    assert len(lines) == 310 and json.loads(lines[300])["label"] == "break_glass"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert all(counts["covered"] == counts["lines"]
               for label, counts in summary["by_label"].items() if label != "normal")
    assert summary["by_label"]["normal"]["covered"] <= 15


def test_every_bad_traffic_line_is_named_at_once(runner, load_policy, tmp_path):
    load_policy(POLICY)
    good = _line(T0, "alice", "db/x")
    bad = [good.replace('"subject": "alice"', '"subject": "a*"'), "{nope", good.replace('"rows": 10', '"rows": -1')]
    path = tmp_path / "traffic.jsonl"
    path.write_text("\n".join([good, *bad] * 5) + "\n")  # 15 bad lines of 20
    result = runner.invoke(args=["detect", "evaluate", "--traffic", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "15 bad line(s)" in result.output and "... and 5 more" in result.output
    assert all(f"line {n}:" in result.output for n in (2, 3, 4, 6))
