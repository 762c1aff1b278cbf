"""The scoring worker: rules and the isolation forest over new ledger decisions, into the review queue.

`train` records a baseline (and a ledger record saying so); `run` scores every
decision after the last one it scored, opens review items and moves on, in one
transaction with its own ledger record. Both are safe to run again and from
several places at once: the progress row is locked while a run commits.
"""

import fcntl
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
from audit.db import READ_ONLY
from audit.jobs import every
from audit.ledger import Entry, Ledger
from audit.vault import Vault
from detectors import forest
from detectors.features import WINDOW, DecisionEvent, decision_events, extract, objects_used
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
        self._cached: tuple | None = None  # (baseline and opt-outs, the forest fitted to them)

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
        # Only what is new is read and extracted, with the hour before it (for the windows and
        # the bursts) and the objects each person used before.
        fresh = list(decision_events(self.engine, self.vault, after_seq=state.scored_through))
        if not fresh:
            return RunResult(0, state.scored_through, [], state.baseline is not None)
        lookback = list(decision_events(self.engine, self.vault, upto_seq=state.scored_through,
                                        since=min(e.time for e in fresh) - WINDOW))
        findings = [f for f in rule_findings(lookback + fresh) if max(f.seqs) > state.scored_through]
        baseline = forest.Baseline.from_json(json.loads(state.baseline)) if state.baseline else None
        model = self._model(baseline) if baseline is not None else None
        if baseline is not None and model is None:
            log.warning("the baseline's decisions are gone (purged, or their people opted out): "
                        "scoring with the rules only; run warden detect train")
            baseline = None
        if model is not None:
            seen = objects_used(self.engine, {e.subject for e in fresh}, state.scored_through)
            seqs, matrix = extract(fresh, lookback=lookback, seen=seen)
            findings += score_rows(model, baseline, seqs, matrix, fresh)
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


    def _model(self, baseline: forest.Baseline):
        """The forest of `baseline`, fitted again from its decisions once per process (and again when
        someone opts out); None when too few of them remain."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            opted_out = sorted(self.vault.opted_out(conn))
        key = (json.dumps(baseline.to_json(), sort_keys=True), hashlib.sha256("|".join(opted_out).encode()).digest())
        if self._cached is None or self._cached[0] != key:
            events = list(decision_events(self.engine, self.vault, after_seq=baseline.from_seq - 1,
                                          upto_seq=baseline.to_seq))
            _, matrix = extract(events)
            model = forest.fit(matrix, baseline.random_state) if len(events) >= forest.MIN_EVENTS else None
            self._cached = (key, model)
        return self._cached[1]

    def start_schedule(self, seconds: float, lock_file: str | None = None) -> threading.Event:
        """Score new decisions every `seconds` on a daemon thread (while serving) until the returned
        event is set; failures are logged. With `lock_file`, only the process holding an exclusive lock
        on it scores (one per host instead of one per gunicorn worker); the others keep trying, so
        one takes over if the holder stops."""
        held = []

        def mine() -> bool:
            if lock_file is None or held:
                return True
            handle = open(lock_file, "a")  # noqa: SIM115 - held open for as long as the lock
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            held.append(handle)  # kept open: the lock lasts as long as this process
            return True

        def score() -> None:
            if mine():
                self.run(actor="schedule")

        def release() -> None:
            for handle in held:
                handle.close()  # and the lock goes with it
        return every(seconds, score, "warden-scoring", cleanup=release)

    def accept(self, *, actor: str, reason: str) -> int:
        """Take every decision so far as reviewed (e.g. a seeded history); return the seq scored through."""
        with self.engine.begin() as conn:
            through = conn.exec_driver_sql(
                "SELECT coalesce(max(seq), 0) FROM ledger_records WHERE kind = 'decision'").scalar()
            conn.execute(update(_state).where(_state.c.id == 1).values(scored_through=through))
            self.ledger.append(conn, [Entry("detector.accept", {"actor": actor, "through_seq": through,
                                                                "reason": reason})])
        return through


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
    model = forest.fit(matrix[training], baseline.random_state)
    keep = [i for i, seq in enumerate(seqs) if seq > after_seq]
    return score_rows(model, baseline, [seqs[i] for i in keep], matrix[keep], events)


def score_rows(model, baseline: forest.Baseline, seqs: list[int], matrix: np.ndarray,
               events: list[DecisionEvent]) -> list[Finding]:
    """Score these rows and group each person's outliers within an hour into one finding."""
    scores = forest.anomaly_scores(model, matrix)
    for index, row in enumerate(matrix):  # beyond the training range: the forest cannot tell
        if outside := forest.beyond(row, baseline):
            scores[index] = max(scores[index], baseline.high + 0.01 * len(outside))
    by_seq = {e.seq: e for e in events}
    groups: dict[str, list] = defaultdict(list)
    for index, (seq, score) in enumerate(zip(seqs, scores)):
        if score <= baseline.threshold:
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
