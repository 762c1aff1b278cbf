"""Walking the chain and naming the first record that does not hold."""

import json
from contextlib import closing
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from sqlalchemy import Engine

from audit.chain import GENESIS_HASH, chain_hash
from audit.db import READ_ONLY
from audit.ledger import Ledger
from audit.models import LedgerHead

# Kinds of failure, as `warden audit verify` names them.
MODIFIED = "modified"          # the stored hash is not the hash of the stored bytes
BROKEN_LINK = "broken_link"    # prev_hash is not the previous record's hash
MISSING = "missing"            # a seq is absent (deleted records)
OUT_OF_ORDER = "out_of_order"  # the body names another seq than its row (moved, swapped)
UNREADABLE = "unreadable"      # the body is not the canonical JSON Warden wrote
TAIL_CUT = "tail_cut"          # the head names records that are no longer there
BEYOND_HEAD = "beyond_head"    # records after the head (appended outside Warden)


@dataclass(frozen=True)
class Failure:
    """The first record that does not hold, and how it broke."""

    seq: int
    kind: str
    message: str


@dataclass
class Report:
    """What verification found: records checked, the head, and the first failure if any."""

    checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    first_failure: Failure | None = None
    last_seq: int = 0
    ok: bool = field(init=False, default=True)

    def fail(self, seq: int, kind: str, message: str) -> "Report":
        self.first_failure = Failure(seq, kind, message)
        self.ok = False
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def verify_rows(rows: Iterable, head: tuple[int, str], *, start_seq: int = 1,
                start_hash: str = GENESIS_HASH, progress: Callable[[int], None] | None = None) -> Report:
    """Check `rows` (seq, prev_hash, hash, kind, body in seq order) link from `start_hash` to `head`."""
    report = Report(head_seq=head[0], head_hash=head[1])
    expected_seq, prev_hash = start_seq, start_hash
    for seq, stored_prev, stored_hash, kind, body in rows:
        if seq != expected_seq:
            if seq > expected_seq and expected_seq > report.head_seq:
                return report.fail(seq, BEYOND_HEAD, f"record {seq} lies beyond the head ({report.head_seq}): "
                                   "appended outside Warden")
            if seq > expected_seq:
                gap = f"record {expected_seq}" if seq == expected_seq + 1 else f"records {expected_seq}..{seq - 1}"
                return report.fail(expected_seq, MISSING, f"{gap} missing: the chain jumps to {seq}")
            return report.fail(seq, OUT_OF_ORDER, f"record {seq} appears after {expected_seq - 1}")
        failure = _check_record(seq, stored_prev, stored_hash, kind, body, prev_hash)
        if failure:
            return report.fail(*failure)
        if seq > report.head_seq:
            return report.fail(seq, BEYOND_HEAD, f"record {seq} lies beyond the head ({report.head_seq}): "
                               "appended outside Warden")
        report.checked += 1
        report.last_seq = seq
        prev_hash, expected_seq = stored_hash, seq + 1
        if progress and report.checked % 10000 == 0:
            progress(report.checked)
    if expected_seq - 1 < report.head_seq:
        return report.fail(expected_seq, TAIL_CUT, f"the head names record {report.head_seq} but the chain "
                           f"ends at {expected_seq - 1}: records were cut from the tail")
    if report.head_seq and prev_hash != report.head_hash:
        return report.fail(report.head_seq, MODIFIED, f"record {report.head_seq}'s hash differs from the head's")
    return report


def _check_record(seq, stored_prev, stored_hash, kind, body, prev_hash):
    try:
        parsed = json.loads(body)
        body_seq, body_kind = parsed["seq"], parsed["kind"]
    except (ValueError, TypeError, KeyError):
        return seq, UNREADABLE, f"record {seq}'s body is not a Warden record"
    if chain_hash(stored_prev, body) != stored_hash:
        return seq, MODIFIED, f"record {seq}'s contents do not match its hash: the record was edited"
    if body_seq != seq:
        return seq, OUT_OF_ORDER, f"row {seq} holds the record hashed as {body_seq}: records were moved"
    if stored_prev != prev_hash:
        return seq, BROKEN_LINK, (f"record {seq}'s prev_hash does not match record {seq - 1}'s hash: "
                                  f"record {seq - 1} was rewritten, or record {seq}'s link was altered")
    if body_kind != kind:
        return seq, MODIFIED, f"record {seq}'s kind column says {kind!r} but it was recorded as {body_kind!r}"
    return None


def verify_ledger(engine: Engine, progress: Callable[[int], None] | None = None) -> Report:
    """Verify the whole stored chain against its head."""
    ledger = Ledger(engine)
    with engine.connect().execution_options(**READ_ONLY) as conn:
        with conn.begin():
            head = conn.execute(LedgerHead.__table__.select()).one()
            with closing(ledger.records(conn)) as rows:  # stopping early must close the server cursor
                return verify_rows(rows, (head.seq, head.hash), progress=progress)
