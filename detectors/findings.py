"""What a detector reports: which decisions, about whom, how strongly and why."""

from dataclasses import dataclass

PRIORITIES = ("high", "medium", "low")


@dataclass(frozen=True)
class Finding:
    """One thing worth a reviewer's look; `seqs` are the ledger records (or input lines) it covers."""

    detector: str
    seqs: tuple[int, ...]
    subject: str
    score: float
    priority: str
    reasons: tuple[str, ...]
