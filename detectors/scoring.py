"""The scoring worker: rules and the isolation forest over new ledger decisions, into the review queue.

`train` records a baseline (and a ledger record saying so); `run` scores every
decision after the last one it scored, opens review items and moves on, in one
transaction with its own ledger record. Both are safe to run again and from
several places at once: the progress row is locked while a run commits.
"""

import hashlib
import json
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from sqlalchemy import Engine, select, update

from audit.chain import format_time, utcnow
from audit.ledger import Entry, Ledger
from audit.vault import Vault
from detectors import forest
from detectors.features import DecisionEvent, decision_events, extract
from detectors.findings import Finding
from detectors.models import DetectorState
from detectors.review import ReviewQueue
from detectors.rules import rule_findings

log = logging.getLogger(__name__)
_state = DetectorState.__table__
GROUP_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class RunResult:
    """What one scoring run did."""

    scored: int
    through_seq: int
    opened: list[str]
    forest: bool  # whether a baseline was there to score with


class Scoring:
    """Trains the baseline and scores new decisions into the review queue."""

    def __init__(self, engine: Engine, ledger: Ledger, vault: Vault, queue: ReviewQueue):
        self.engine = engine
        self.ledger = ledger
        self.vault = vault
        self.queue = queue

    def train(self, *, actor: str, contamination: float = 0.01, random_state: int = 7) -> forest.Baseline:
        """Learn what is usual from every decision so far (opted-out people left out)."""
        events = list(decision_events(self.engine, self.vault))
        seqs, matrix = extract(events)
        _, baseline = forest.train(seqs, matrix, contamination=contamination, random_state=random_state,
                                   trained_at=format_time(utcnow()))
        with self.engine.begin() as conn:
            conn.execute(update(_state).where(_state.c.id == 1).values(baseline=json.dumps(baseline.to_json())))
            self.ledger.append(conn, [Entry("detector.train", {
                "actor": actor, "from_seq": baseline.from_seq, "to_seq": baseline.to_seq,
                "events": baseline.events, "contamination": contamination, "threshold": baseline.threshold})])
        return baseline

    def run(self, *, actor: str) -> RunResult:
        """Score the decisions after the last scored one; open review items for what looks wrong."""
        with self.engine.connect() as conn:
            state = conn.execute(select(_state).where(_state.c.id == 1)).one()
            newest = conn.exec_driver_sql("SELECT max(seq) FROM ledger_records WHERE kind = 'decision'").scalar()
        if newest is None or newest <= state.scored_through:  # nothing new: no need to read the ledger
            return RunResult(0, state.scored_through, [], state.baseline is not None)
        events = list(decision_events(self.engine, self.vault))
        fresh = [e for e in events if e.seq > state.scored_through]
        if not fresh:
            return RunResult(0, state.scored_through, [], state.baseline is not None)
        findings = [f for f in rule_findings(events) if max(f.seqs) > state.scored_through]
        baseline = forest.Baseline.from_json(json.loads(state.baseline)) if state.baseline else None
        if baseline is not None:
            scored = forest_findings(events, baseline, after_seq=state.scored_through)
            if scored is None:
                log.warning("the baseline's decisions are gone (purged, or their people opted out): "
                            "scoring with the rules only; run warden detect train")
                baseline = None
            else:
                findings += scored
        through = max(e.seq for e in fresh)
        with self.engine.begin() as conn:
            locked = conn.execute(select(_state.c.scored_through).where(_state.c.id == 1).with_for_update()).scalar()
            if locked != state.scored_through:  # another run got there first
                return RunResult(0, locked, [], baseline is not None)
            opened = self.queue.open(conn, findings)
            conn.execute(update(_state).where(_state.c.id == 1).values(scored_through=through))
            self.ledger.append(conn, [Entry("detector.run", {
                "actor": actor, "scored": len(fresh), "through_seq": through, "opened": opened,
                "forest": baseline is not None})])
        return RunResult(len(fresh), through, opened, baseline is not None)


    def start_schedule(self, seconds: float) -> threading.Event:
        """Score new decisions every `seconds` on a daemon thread (while serving) until the returned
        event is set; failures are logged."""
        stop = threading.Event()

        def loop():
            while not stop.wait(seconds):
                try:
                    self.run(actor="schedule")
                except Exception:
                    log.exception("scheduled scoring failed")
        threading.Thread(target=loop, name="warden-scoring", daemon=True).start()
        return stop

    def accept(self, *, actor: str, reason: str) -> int:
        """Take every decision so far as reviewed (e.g. a seeded history); return the seq scored through."""
        with self.engine.begin() as conn:
            through = conn.exec_driver_sql(
                "SELECT coalesce(max(seq), 0) FROM ledger_records WHERE kind = 'decision'").scalar()
            conn.execute(update(_state).where(_state.c.id == 1).values(scored_through=through))
            self.ledger.append(conn, [Entry("detector.accept", {"actor": actor, "through_seq": through,
                                                                "reason": reason})])
        return through


_FITTED: dict[tuple, object] = {}


def _fitted(matrix: np.ndarray, random_state: int):
    """The forest for these training rows, fitted once per process (the same rows give the same forest)."""
    key = (random_state, matrix.shape, hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest())
    if key not in _FITTED:
        _FITTED.clear()  # one baseline at a time
        _FITTED[key] = forest.fit(matrix, random_state)
    return _FITTED[key]


def forest_findings(events: list[DecisionEvent], baseline: forest.Baseline, *, after_seq: int = 0,
                    in_baseline=None) -> list[Finding] | None:
    """Fit the baseline's forest again, score the events after `after_seq`, and group each person's
    outliers within an hour into one finding; None when too few of the baseline's decisions remain."""
    if in_baseline is None:
        def in_baseline(event):
            return baseline.from_seq <= event.seq <= baseline.to_seq
    seqs, matrix = extract(events)
    training = np.array([in_baseline(e) for e in sorted(events, key=lambda e: e.seq)], dtype=bool)
    if training.sum() < forest.MIN_EVENTS:
        return None
    model = _fitted(matrix[training], baseline.random_state)
    scores = forest.anomaly_scores(model, matrix)
    for index, row in enumerate(matrix):  # beyond the training range: the forest cannot tell
        if outside := forest.beyond(row, baseline):
            scores[index] = max(scores[index], baseline.high + 0.01 * len(outside))
    by_seq = {e.seq: e for e in events}
    groups: dict[str, list] = defaultdict(list)
    for index, (seq, score) in enumerate(zip(seqs, scores)):
        if seq <= after_seq or score <= baseline.threshold:
            continue
        event = by_seq[seq]
        current = groups[event.subject]
        if current and event.time - by_seq[current[-1][0][0]].time > GROUP_WINDOW:
            current.append([])
        if not current:
            current.append([])
        current[-1].append((seq, float(score), index))
    findings = []
    for subject, clusters in groups.items():
        for cluster in clusters:
            _, top_score, top_index = max(cluster, key=lambda c: c[1])
            findings.append(Finding(
                "isolation_forest", tuple(seq for seq, _, _ in cluster), subject, top_score,
                "high" if top_score > baseline.high else "medium" if len(cluster) > 1 else "low",
                tuple(forest.explain(matrix[top_index], baseline)) + (
                    (f"{len(cluster)} unusual decisions within an hour",) if len(cluster) > 1 else ())))
    return findings
