"""Tables of the authz side: policy rows, the policy version and service tokens."""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audit.db import Base


class PolicyRow(Base):
    """One Casbin row; unused value columns hold "" so the unique constraint sees them."""

    __tablename__ = "policy_rules"
    __table_args__ = (UniqueConstraint("ptype", "v0", "v1", "v2", "v3", "v4", "v5", name="uq_policy_rules_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ptype: Mapped[str] = mapped_column(String(2))
    v0: Mapped[str] = mapped_column(String(255), default="")
    v1: Mapped[str] = mapped_column(String(255), default="")
    v2: Mapped[str] = mapped_column(String(255), default="")
    v3: Mapped[str] = mapped_column(String(255), default="")
    v4: Mapped[str] = mapped_column(String(255), default="")
    v5: Mapped[str] = mapped_column(String(255), default="")


class PolicyState(Base):
    """The policy version, bumped by every change; workers reload when it moves."""

    __tablename__ = "policy_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class ServiceToken(Base):
    """A machine credential: only the SHA-256 of the token is kept."""

    __tablename__ = "service_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Account(Base):
    """A person who signs in to the pages: a role, an argon2id password hash, and TOTP state."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    totp_secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    totp_pending_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mfa_failures: Mapped[int] = mapped_column(Integer, default=0)
    mfa_next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    mfa_locked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RecoveryCode(Base):
    """One single-use recovery code, kept only as its SHA-256."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)


class WebSession(Base):
    """A signed-in browser session; the cookie holds a random id, the table only its SHA-256."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    password_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    mfa_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    csrf: Mapped[str] = mapped_column(String(64))
