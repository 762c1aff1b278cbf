"""Tables of the detectors: review items, and where scoring stands with which baseline."""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audit.db import Base


class ReviewItem(Base):
    """Something a detector found, for the security team to triage.

    People appear only as pseudonyms; `seqs` names the ledger records it covers.
    `history` (JSON) lists every change of status, assignee or note, each also a
    ledger record.
    """

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("detector", "first_seq", name="uq_review_items_detector_first_seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detector: Mapped[str] = mapped_column(String(40))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    seqs: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(255), index=True)
    score: Mapped[float] = mapped_column(Float)
    priority: Mapped[str] = mapped_column(String(10))
    reasons: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    assignee: Mapped[str | None] = mapped_column(String(100), nullable=True)
    history: Mapped[str] = mapped_column(Text)


class DetectorState(Base):
    """How far scoring has got in the ledger, and the baseline the isolation forest is fitted to."""

    __tablename__ = "detector_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    scored_through: Mapped[int] = mapped_column(BigInteger)
    baseline: Mapped[str | None] = mapped_column(Text, nullable=True)
