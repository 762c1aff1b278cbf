"""`warden detect evaluate`: run the detectors over recorded traffic and say what they would open.

A traffic line is a /v1/authorize body plus `time` (ISO 8601, UTC), optional
`rows` (what the query returned) and optional `label` (`normal` or a scenario
name). Each line is decided with the current policy (nothing is written to the
ledger), the rules and the isolation forest run over the lot, and `DIR/items.jsonl` gets one
object per review item that would be opened: `lines` (1-based input line
numbers), `score`, `priority`, `reasons`, `detector`. The forest learns what
is usual from the lines labelled `normal` when the file has labels (as it would
from a clean history), else from every line. With labels, the summary says how
many of each scenario's lines some item covers, and how many normal lines were
flagged.
"""

import hashlib
import hmac
import json
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from audit.web import ApiError
from authz.requests import AuthorizeRequest, parse_authorize
from detectors import forest
from detectors.features import DecisionEvent, extract
from detectors.rules import rule_findings
from detectors.scoring import forest_findings


class TrafficError(Exception):
    """A traffic line that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Evaluation:
    lines: int
    items: list[dict]
    by_label: dict[str, dict]


def read_traffic(path: Path) -> list[tuple[int, AuthorizeRequest, datetime, int | None, str | None]]:
    """(line number, parsed authorize request, time, rows, label) of every non-blank line; TrafficError naming
    every bad line (the first ten of them) otherwise."""
    try:
        with open(path, encoding="utf-8") as lines:
            texts = list(lines)
    except UnicodeDecodeError as exc:
        raise TrafficError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    traffic, problems = [], []
    for number, text in enumerate(texts, start=1):
        if text.strip():
            try:
                traffic.append(_traffic_line(number, text))
            except TrafficError as exc:
                problems.append(str(exc))
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise TrafficError(f"{len(problems)} bad line(s):\n  " + "\n  ".join(problems[:10]) + more)
    return traffic


def _traffic_line(number: int, text: str) -> tuple[int, AuthorizeRequest, datetime, int | None, str | None]:
    try:
        line = json.loads(text)
    except ValueError as exc:
        raise TrafficError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(line, dict):
        raise TrafficError(f"line {number}: must be a JSON object")
    line = dict(line)
    time, rows, label = line.pop("time", None), line.pop("rows", None), line.pop("label", None)
    try:
        when = datetime.fromisoformat(str(time).replace("Z", "+00:00"))
        when = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
        _ = when + timedelta(days=1)  # the feature windows must be able to reach past it
    except (ValueError, OverflowError):
        raise TrafficError(f"line {number}: time must be ISO 8601 between years 1 and 9998, "
                           "e.g. 2026-11-29T09:30:00Z") from None
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or not 0 <= rows < 2**63):
        raise TrafficError(f"line {number}: rows must be a whole number of rows (below 2^63)")
    if label is not None and not isinstance(label, str):
        raise TrafficError(f"line {number}: label must be a string")
    try:
        item = parse_authorize(line)  # now, so that every bad line is named at once
    except ApiError as exc:
        message = exc.message
        if message.startswith("unknown field") and message.endswith(")"):  # a traffic line has three more
            message = message[:-1] + "; and on a traffic line: label, rows, time)"
        raise TrafficError(f"line {number}: {message}") from None
    return number, item, when, rows, label


def evaluate(traffic, decider, *, contamination: float = 0.01, random_state: int = 7) -> Evaluation:
    """Decide every line with `decider`, run the detectors, and return the items they would open."""
    salt = secrets.token_bytes(32)  # pseudonyms for this run only: never stored, never the names
    events, labels = [], {}
    for number, item, when, rows, label in sorted(traffic, key=lambda t: (t[2], t[0])):
        decision = decider.decide(item.request)
        pseudonym = "p_" + hmac.new(salt, item.request.subject.encode(), hashlib.sha256).hexdigest()[:16]
        events.append(DecisionEvent(number, when, pseudonym, item.request.domain, item.request.object,
                                    item.request.action, item.request.workflow, decision.allowed, rows))
        labels[number] = label or "normal"
    # Lines are numbered in file order but scored in time order: a seq per event keeps the features
    # (which look back in ledger order) in time order, and maps back to the line.
    ordered = [DecisionEvent(i, e.time, e.subject, e.domain, e.object, e.action, e.workflow, e.allowed, e.rows)
               for i, e in enumerate(events, start=1)]
    line_of = {i: e.seq for i, e in enumerate(events, start=1)}
    findings = rule_findings(ordered)
    labelled = any(label != "normal" for label in labels.values())
    usual = {e.seq for e in ordered if not labelled or labels[line_of[e.seq]] == "normal"}
    if len(usual) >= forest.MIN_EVENTS:
        seqs, matrix = extract(ordered)  # features over the whole stream: the windows look back in time
        rows = [i for i, seq in enumerate(seqs) if seq in usual]
        _, baseline = forest.train([seqs[i] for i in rows], matrix[rows], contamination=contamination,
                                   random_state=random_state, trained_at="evaluation")
        findings += forest_findings(ordered, baseline, in_baseline=lambda event: event.seq in usual) or []
    items = [{"lines": sorted(line_of[s] for s in f.seqs), "score": round(f.score, 4), "priority": f.priority,
              "reasons": list(f.reasons), "detector": f.detector} for f in findings]
    items.sort(key=lambda i: i["lines"][0])
    covered = {line for item in items for line in item["lines"]}
    totals, hits = Counter(labels.values()), Counter(labels[line] for line in covered)
    by_label = {label: {"lines": totals[label], "covered": hits[label]} for label in sorted(totals)}
    return Evaluation(len(events), items, by_label)


def write(evaluation: Evaluation, out: Path) -> None:
    """DIR/items.jsonl (one item per line) and DIR/summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "items.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in evaluation.items)
    (out / "summary.json").write_text(json.dumps({
        "lines": evaluation.lines, "items": len(evaluation.items),
        "by_detector": dict(Counter(i["detector"] for i in evaluation.items)),
        "by_label": evaluation.by_label}, indent=2) + "\n")
