"""The walk along the chain: the rules every record must hold, checked one record at a time.

This is the reference for verification; faster checkers (audit.verify_blocks) pass
only what it passes and hand it everything else, so it always names the failure.
It imports nothing heavy: helper processes load it to verify a range of the chain.
"""

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from audit.chain import GENESIS_HASH, canonical_json
from audit.columns import FILLED_COLUMNS

# Kinds of failure, as `warden audit verify` names them.
MODIFIED = "modified"                # the stored hash is not the hash of the stored bytes
BROKEN_LINK = "broken_link"          # prev_hash is not the previous record's hash
MISSING = "missing"                  # a seq is absent (deleted records)
OUT_OF_ORDER = "out_of_order"        # the body names another seq than its row (moved, swapped)
UNREADABLE = "unreadable"            # the body is not a record Warden wrote
TAIL_CUT = "tail_cut"                # the head or a checkpoint names records that are gone
BEYOND_HEAD = "beyond_head"          # records after the head (appended outside Warden)
REWRITTEN = "rewritten"              # the chain disagrees with a signed checkpoint
BAD_CHECKPOINT = "bad_checkpoint_signature"
BAD_SEAL = "bad_seal_signature"
UNKNOWN_KEY = "unknown_signing_key"    # signed by a key the key directory does not hold


@dataclass(frozen=True)
class Failure:
    """The first record that does not hold, and how it broke."""

    seq: int
    kind: str
    message: str


@dataclass
class Report:
    """What verification found."""

    checked: int = 0
    start_seq: int = 1
    sealed_through: int = 0
    last_seq: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    checkpoints_checked: int = 0
    from_checkpoint: int | None = None
    first_failure: Failure | None = None
    ok: bool = field(init=False, default=True)

    def fail(self, seq: int, kind: str, message: str) -> "Report":
        if self.first_failure is None:
            self.first_failure = Failure(seq, kind, message)
            self.ok = False
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def _seq_and_kind(body: str) -> tuple[int, str] | None:
    # Only called on bodies whose hash verified, so they are Warden's canonical JSON:
    # the top-level "kind" and "seq" follow "data", hence the last occurrence is theirs.
    k, s = body.rfind(',"kind":"'), body.rfind(',"seq":')
    if k < 0 or s < k:
        return None
    try:
        return int(body[s + 7:body.index(",", s + 7)]), body[k + 9:body.index('"', k + 9)]
    except ValueError:
        return None


_DATA_KEYS = ("decision_id", "subject", "domain", "object", "action", "allowed")


def _repeated_column_problem(body: str, kind: str, columns: list) -> str | None:
    """The name of the first column that disagrees with the (verified, canonical) body, or None.

    A record fills exactly the columns its kind fills (FILLED_COLUMNS). Canonical data
    has sorted keys and no unescaped quote inside any value Warden writes, so
    `"key":value,` occurs in the body only where that key stands. This runs for
    every record, so the common cases avoid json.dumps and strftime.
    """
    created_at, *values = columns
    if created_at is not None and created_at != body[-29:-2]:  # both ISO 8601 text, as hashed
        return "created_at"
    filled = FILLED_COLUMNS.get(kind, ())
    for key, value in zip(_DATA_KEYS, values):
        if (value is None) == (key in filled):
            return key  # blanked, or set on a record that never fills it
        if value is None:
            continue
        if key == "allowed":
            fragment = '"allowed":true' if value else '"allowed":false'
        elif isinstance(value, str) and not _NEEDS_ESCAPE.search(value):
            fragment = f'"{key}":"{value}"'
        else:
            fragment = f'"{key}":{canonical_json(value)}'
        if not _holds(body, fragment):
            return key
    return None


def _holds(body: str, fragment: str) -> bool:
    """True when `fragment` (`"key":value`) stands in `body` as a whole member: then `,` or `}`."""
    start = body.find(fragment)
    while start != -1:
        if body[start + len(fragment):start + len(fragment) + 1] in (",", "}"):
            return True
        start = body.find(fragment, start + 1)
    return False


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f\u2028\u2029]')


def verify_rows(rows: Iterable, head: tuple[int, str], *, start_seq: int = 1, start_hash: str = GENESIS_HASH,
                checkpoints: dict[int, str] | None = None, report: Report | None = None,
                progress: Callable[[int], None] | None = None) -> Report:
    """Check `rows` (seq, prev_hash, hash, kind, body in seq order) link from `start_hash` to `head`,
    and agree with every checkpoint (seq -> hash) at or after `start_seq`."""
    walk = Walk(head, start_seq=start_seq, start_hash=start_hash, checkpoints=checkpoints, report=report,
                progress=progress)
    walk.rows(rows)
    return walk.end()


class Walk:
    """A walk along the chain in seq order: what it expects next, and what it has found.

    `rows` checks records one at a time and is the reference for every rule;
    `skip` moves past records a faster checker (audit.verify_blocks) found to hold.
    """

    def __init__(self, head: tuple[int, str], *, start_seq: int = 1, start_hash: str = GENESIS_HASH,
                 checkpoints: dict[int, str] | None = None, report: Report | None = None,
                 progress: Callable[[int], None] | None = None):
        self.report = report or Report()
        self.report.head_seq, self.report.head_hash, self.report.start_seq = head[0], head[1], start_seq
        self.checkpoints = checkpoints or {}
        self.expected_seq, self.prev_hash = start_seq, start_hash
        self.last_checkpoint = start_seq - 1
        self.progress = progress

    def rows(self, rows: Iterable) -> bool:
        """Check each row in turn; False once one fails (the report names it)."""
        report, checkpoints = self.report, self.checkpoints
        expected_seq, prev_hash = self.expected_seq, self.prev_hash
        sha256, fromhex = hashlib.sha256, bytes.fromhex
        try:
            for seq, stored_prev, stored_hash, kind, body, *columns in rows:
                if seq != expected_seq:
                    if seq < expected_seq:
                        return self._fail(seq, OUT_OF_ORDER, f"record {seq} appears after {expected_seq - 1}")
                    gap = f"record {expected_seq}" if seq == expected_seq + 1 else f"records {expected_seq}..{seq - 1}"
                    return self._fail(expected_seq, MISSING, f"{gap} missing: the chain jumps to {seq}")
                try:
                    intact = sha256(fromhex(stored_prev) + body.encode("utf-8")).hexdigest() == stored_hash
                except (ValueError, TypeError, AttributeError):
                    intact = False
                if not intact:
                    return self._fail(seq, MODIFIED, f"record {seq}'s contents do not match its hash: "
                                                     "the record was edited")
                parsed = _seq_and_kind(body)
                if parsed is None:
                    return self._fail(seq, UNREADABLE, f"record {seq}'s body is not a Warden record")
                if parsed[0] != seq:
                    return self._fail(seq, OUT_OF_ORDER, f"row {seq} holds the record hashed as {parsed[0]}: "
                                                         "records were moved")
                if stored_prev != prev_hash:
                    return self._fail(seq, BROKEN_LINK, f"record {seq}'s prev_hash does not match record "
                                                        f"{seq - 1}'s hash: record {seq - 1} was rewritten, or "
                                                        f"record {seq}'s link was altered")
                if parsed[1] != kind:
                    return self._fail(seq, MODIFIED, f"record {seq}'s kind column says {kind!r} but it was "
                                                     f"recorded as {parsed[1]!r}")
                if columns and (column := _repeated_column_problem(body, kind, columns)):
                    return self._fail(seq, MODIFIED, f"record {seq}'s {column} column differs from what was "
                                                     "recorded (the hashed body): the row was edited")
                signed = checkpoints.get(seq)
                if signed is not None:
                    if signed != stored_hash:
                        return self._fail(seq, REWRITTEN, f"record {seq} differs from the signed checkpoint at "
                                                          f"{seq}: the chain was rewritten in records "
                                                          f"{self.last_checkpoint + 1}..{seq}")
                    report.checkpoints_checked += 1
                    self.last_checkpoint = seq
                if seq > report.head_seq:
                    return self._fail(seq, BEYOND_HEAD, f"record {seq} lies beyond the head "
                                                        f"({report.head_seq}): appended outside Warden")
                report.checked += 1
                report.last_seq = seq
                prev_hash, expected_seq = stored_hash, seq + 1
                if self.progress and report.checked % 10000 == 0:
                    self.progress(report.checked)
        finally:
            self.expected_seq, self.prev_hash = expected_seq, prev_hash
        return True

    def skip(self, count: int, last_hash: str, checkpoints_passed: list[int]) -> None:
        """Move past `count` records that hold, the last with `last_hash`, passing the given checkpoints."""
        report = self.report
        before = report.checked
        report.checked += count
        self.expected_seq += count
        report.last_seq = self.expected_seq - 1
        self.prev_hash = last_hash
        if checkpoints_passed:
            report.checkpoints_checked += len(checkpoints_passed)
            self.last_checkpoint = checkpoints_passed[-1]
        if self.progress and report.checked // 10000 != before // 10000:
            self.progress(report.checked)

    def end(self) -> Report:
        """The report, once the rows have run out: was anything cut from the tail?"""
        report = self.report
        if not report.ok:
            return report
        end = self.expected_seq - 1
        beyond = max((s for s in self.checkpoints if s > end), default=None)
        if beyond is not None:
            return report.fail(end + 1, TAIL_CUT, f"the chain ends at {end} but a signed checkpoint names "
                                                  f"record {beyond}: records after {end} were cut")
        if end < report.head_seq:
            return report.fail(end + 1, TAIL_CUT, f"the head names record {report.head_seq} but the chain ends "
                                                  f"at {end}: records were cut from the tail")
        if report.head_seq and end == report.head_seq and self.prev_hash != report.head_hash:
            return report.fail(report.head_seq, MODIFIED, f"record {report.head_seq}'s hash differs from the head's")
        return report

    def _fail(self, seq: int, kind: str, message: str) -> bool:
        self.report.fail(seq, kind, message)
        return False
