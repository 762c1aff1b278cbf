"""Tables of the ledger: the records and the single row that names the chain head."""

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audit.db import Base


class LedgerRecord(Base):
    """One audit record; `body` holds the exact canonical bytes that were hashed.

    The columns after `body` repeat fields of decisions and outcomes so they can
    be searched; the body is what the chain proves, and search results show it.
    """

    __tablename__ = "ledger_records"
    __table_args__ = (UniqueConstraint("kind", "decision_id", name="uq_ledger_records_kind_decision_id"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))  # searched through the unique (kind, decision_id) index
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    body: Mapped[str] = mapped_column(Text)
    decision_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(255), index=True, nullable=True)
    domain: Mapped[str | None] = mapped_column(String(255), nullable=True)
    object: Mapped[str | None] = mapped_column(String(255), index=True, nullable=True)
    action: Mapped[str | None] = mapped_column(String(255), nullable=True)
    allowed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class LedgerHead(Base):
    """The last appended (seq, hash); its row lock serializes writers on Postgres.

    `epoch` counts the changes to what decisions are made from (the policy, people's
    keys): a process that decided from cached state appends only if it has not moved.
    """

    __tablename__ = "ledger_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")


class _SignedStatement:
    """Columns of a signed (seq, hash) statement; the signing key lives outside the database."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))
    statement: Mapped[str] = mapped_column(Text)


class LedgerCheckpoint(_SignedStatement, Base):
    """A signed (seq, hash) of the chain head."""

    __tablename__ = "ledger_checkpoints"


class LedgerSeal(_SignedStatement, Base):
    """A signed (seq, hash) of the last record a retention purge removed."""

    __tablename__ = "ledger_seals"


class SubjectKey(Base):
    """A person's data key and pseudonym salt, wrapped by a master key; found by a blind index.

    Erasure deletes the row: the person's encrypted fields can no longer be read and
    their pseudonym can no longer be tied to them.
    """

    __tablename__ = "subject_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lookup: Mapped[str] = mapped_column(String(64), unique=True)
    pseudonym: Mapped[str] = mapped_column(String(40), unique=True)
    master_version: Mapped[int] = mapped_column(Integer, index=True)
    wrapped: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    opted_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PrivacyRequest(Base):
    """A person's request (access, erasure, opt-out), its status and who acted on it."""

    __tablename__ = "privacy_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    pseudonym: Mapped[str] = mapped_column(String(40), index=True)
    subject_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    history: Mapped[str] = mapped_column(Text)
