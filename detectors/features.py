"""Features from ledger events: one numeric row per decision, people only as pseudonyms.

People who opted out of profiling are left out entirely: their decisions give no
rows, for training or scoring, from the moment the opt-out is recorded.
"""

import json
import math
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine, select

from audit.db import READ_ONLY
from audit.models import LedgerRecord
from audit.vault import Vault

_records = LedgerRecord.__table__
WINDOW = timedelta(hours=1)
FEATURE_NAMES = ("hour", "weekday", "off_hours", "denied", "no_workflow", "writes", "domain_wide_object",
                 "subject_events_1h", "subject_distinct_objects_1h", "subject_denials_1h", "new_object_for_subject",
                 "rows_log")
_WRITES = {"write", "update", "delete", "insert", "drop", "truncate", "alter", "export"}


@dataclass(frozen=True)
class DecisionEvent:
    """What the detectors know of one decision: no identifier, no context."""

    seq: int
    time: datetime
    subject: str          # pseudonym
    domain: str
    object: str
    action: str
    workflow: str
    allowed: bool
    rows: int | None = None  # what the query returned, when the service reported its outcome


def decision_events(engine: Engine, vault: Vault, after_seq: int = 0, *, upto_seq: int | None = None,
                    since: datetime | None = None) -> Iterator[DecisionEvent]:
    """Decisions after `after_seq` (through `upto_seq`, recorded at or after `since`) in ledger order,
    without those of people who opted out; each with the rows its query returned when an outcome was
    reported (by the time this reads)."""
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        opted_out = vault.opted_out(conn)
        query = (select(_records.c.seq, _records.c.kind, _records.c.body)
                 .where(_records.c.kind.in_(("decision", "outcome")), _records.c.seq > after_seq)
                 .order_by(_records.c.seq))
        if upto_seq is not None:
            query = query.where(_records.c.seq <= upto_seq)
        if since is not None:
            query = query.where(_records.c.created_at >= since)
        events, rows = [], {}
        for row in conn.execute(query):
            record = json.loads(row.body)
            data = record["data"]
            if row.kind == "outcome":
                if isinstance(data.get("rows"), int):
                    rows[data["decision_seq"]] = data["rows"]
                continue
            if data["subject"] in opted_out:
                continue
            events.append(DecisionEvent(row.seq, datetime.fromisoformat(record["time"].replace("Z", "+00:00")),
                                        data["subject"], data["domain"], data["object"], data["action"],
                                        data["workflow"], data["allowed"]))
    for event in events:
        yield replace(event, rows=rows[event.seq]) if event.seq in rows else event


def objects_used(engine: Engine, subjects: Iterable[str], upto_seq: int) -> set[tuple[str, str]]:
    """The (pseudonym, object) pairs of these people's decisions through `upto_seq` (search columns)."""
    subjects = sorted(set(subjects))
    if not subjects:
        return set()
    with engine.connect().execution_options(**READ_ONLY) as conn:
        return set(conn.execute(select(_records.c.subject, _records.c.object).distinct().where(
            _records.c.kind == "decision", _records.c.seq <= upto_seq, _records.c.subject.in_(subjects))).all())


def extract(events: Iterable[DecisionEvent], *, lookback: Iterable[DecisionEvent] = (),
            seen: Iterable[tuple[str, str]] = ()) -> tuple[list[int], np.ndarray]:
    """Return the seqs and a (n, len(FEATURE_NAMES)) matrix; per-person counts look back one hour.

    To extract only new decisions, give the earlier ones of the hour before them as
    `lookback` and the (person, object) pairs used before as `seen`: the rows are
    then those a full extraction gives (for decisions recorded in time order).
    """
    events = sorted(events, key=lambda e: e.seq)
    windows: dict[str, _Window] = defaultdict(_Window)
    seen_objects: dict[str, set] = defaultdict(set)
    for subject, obj in seen:
        seen_objects[subject].add(obj)
    for event in sorted(lookback, key=lambda e: e.seq):
        windows[event.subject].add(event)
        seen_objects[event.subject].add(event.object)
    rows = []
    for event in events:
        window = windows[event.subject]
        window.forget_before(event.time - WINDOW)
        rows.append((
            event.time.hour, event.time.weekday(), float(event.time.hour < 7 or event.time.hour >= 20),
            float(not event.allowed), float(not event.workflow), float(event.action.lower() in _WRITES),
            float(event.object.endswith("*")),
            len(window.events), len(window.objects), window.denials,
            float(event.object not in seen_objects[event.subject]),
            math.log1p(max(event.rows or 0, 0)),
        ))
        window.add(event)
        seen_objects[event.subject].add(event.object)
    matrix = np.array(rows, dtype=float).reshape(len(rows), len(FEATURE_NAMES))
    return [e.seq for e in events], matrix


class _Window:
    """One person's decisions of the past hour, with running counts (so extraction stays linear)."""

    def __init__(self):
        self.events: deque = deque()
        self.objects: Counter = Counter()
        self.denials = 0

    def add(self, event: DecisionEvent) -> None:
        self.events.append(event)
        self.objects[event.object] += 1
        self.denials += not event.allowed

    def forget_before(self, moment: datetime) -> None:
        while self.events and self.events[0].time < moment:
            old = self.events.popleft()
            self.objects[old.object] -= 1
            if not self.objects[old.object]:
                del self.objects[old.object]
            self.denials -= not old.allowed
