"""Signed checkpoints of the chain head and signed seals of purged ranges.

A checkpoint is the pair (seq, hash) of the head, signed with the ledger key
and stored in the database and, with `--out`, in files elsewhere. A seal is the
(seq, hash) of the last record a retention purge removed; verification starts
from it. Neither can be forged without the key, which never enters the database.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import Engine, insert, select

from audit.chain import canonical_json, format_time, utcnow
from audit.db import READ_ONLY
from audit.ledger import Ledger
from audit.models import LedgerCheckpoint, LedgerSeal
from audit.signing import LedgerSigner

_checkpoints = LedgerCheckpoint.__table__
_seals = LedgerSeal.__table__


@dataclass(frozen=True)
class Signed:
    """A signed statement that the record `seq` has hash `hash` (checkpoint) or was the last purged (seal)."""

    seq: int
    hash: str
    time: str
    key_id: str
    signature: str
    statement: str

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Signed":
        return cls(**{k: data[k] for k in ("seq", "hash", "time", "key_id", "signature", "statement")})


def statement_text(kind: str, seq: int, hash_: str, time: str, **extra) -> str:
    """Return the canonical text that is signed for a checkpoint or seal."""
    return canonical_json({"type": f"warden.{kind}", "seq": seq, "hash": hash_, "time": time, **extra})


def statement_matches(signed: Signed, kind: str) -> bool:
    """True when the signed statement says what the stored columns say."""
    try:
        parsed = json.loads(signed.statement)
    except ValueError:
        return False
    return (parsed.get("type") == f"warden.{kind}" and parsed.get("seq") == signed.seq
            and parsed.get("hash") == signed.hash and parsed.get("time") == signed.time)


def _row_to_signed(row) -> Signed:
    try:
        time = json.loads(row.statement).get("time", "")
    except (ValueError, AttributeError):
        time = ""
    return Signed(row.seq, row.hash, time, row.key_id, row.signature, row.statement)


class Checkpoints:
    """Creates, lists and exports checkpoints; lists seals."""

    def __init__(self, engine: Engine, ledger: Ledger, signer: LedgerSigner):
        self.engine = engine
        self.ledger = ledger
        self.signer = signer

    def create(self) -> Signed | None:
        """Sign the current head and store it; None when the chain is empty.

        When the newest checkpoint already names the head, that one is returned.
        """
        with self.engine.begin() as conn:
            seq, head_hash, _ = self.ledger.lock_head(conn)
            if seq == 0:
                return None
            latest = self._latest(conn)
            if latest is not None and latest.seq == seq:
                return latest
            now = utcnow()
            text = statement_text("checkpoint", seq, head_hash, format_time(now))
            kid, signature = self.signer.sign(text.encode("utf-8"))
            conn.execute(insert(_checkpoints).values(seq=seq, hash=head_hash, created_at=now, key_id=kid,
                                                     signature=signature, statement=text))
            return Signed(seq, head_hash, format_time(now), kid, signature, text)

    def _latest(self, conn) -> Signed | None:
        row = conn.execute(select(_checkpoints).order_by(_checkpoints.c.seq.desc(), _checkpoints.c.id.desc())
                           .limit(1)).first()
        return _row_to_signed(row) if row else None

    def latest(self) -> Signed | None:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return self._latest(conn)

    def stored(self, conn) -> list[Signed]:
        """Every stored checkpoint, oldest first."""
        return [_row_to_signed(r) for r in conn.execute(select(_checkpoints).order_by(_checkpoints.c.seq))]

    def seals(self, conn) -> list[Signed]:
        """Every stored seal, oldest first."""
        return [_row_to_signed(r) for r in conn.execute(select(_seals).order_by(_seals.c.seq))]


def export_checkpoint(checkpoint: Signed, out: Path) -> Path:
    """Write `checkpoint` as JSON to the file `out`, or into the directory `out` by seq; return the path."""
    path = out / f"checkpoint-{checkpoint.seq:012d}.json" if out.is_dir() else out
    path.write_text(json.dumps(checkpoint.as_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def read_checkpoint_files(where: Path) -> list[Signed]:
    """Return the checkpoints exported to the file or directory `where`."""
    paths = sorted(where.glob("checkpoint-*.json")) if where.is_dir() else [where]
    found = []
    for path in paths:
        try:
            found.append(Signed.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a Warden checkpoint: {exc}") from None
    return found
