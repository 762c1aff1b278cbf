"""Server-side browser sessions: random ids (only their hashes stored), idle and absolute timeouts.

A new id is issued at sign-in and again when the second factor passes, so an id
seen before sign-in is worth nothing after it (no fixation). Each session has its
own CSRF token for the forms it renders.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, delete, insert, select, update

from authz.models import WebSession

_sessions = WebSession.__table__
IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=60)  # write last_seen_at at most this often


@dataclass(frozen=True)
class Session:
    """A live session: whose, since when, and when the password and second factor were last proven."""

    raw_id: str
    account_id: int
    created_at: datetime
    password_at: datetime
    mfa_at: datetime | None
    csrf: str

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, token)


def _digest(raw_id: str) -> str:
    return hashlib.sha256(raw_id.encode()).hexdigest()


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


class Sessions:
    """Creates, loads (enforcing timeouts), elevates and ends sessions."""

    def __init__(self, engine: Engine, idle: timedelta = IDLE, absolute: timedelta = ABSOLUTE):
        self.engine = engine
        self.idle = idle
        self.absolute = absolute

    def create(self, account_id: int, now: datetime) -> str:
        """Start a session after a password check; return the raw id for the cookie."""
        raw_id = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(insert(_sessions).values(id_hash=_digest(raw_id), account_id=account_id, created_at=now,
                                                  last_seen_at=now, password_at=now, mfa_at=None,
                                                  csrf=secrets.token_urlsafe(32)))
        return raw_id

    def load(self, raw_id: str | None, now: datetime) -> Session | None:
        """The live session for `raw_id`, or None (unknown, idle too long, or too old: then it is ended)."""
        if not raw_id or len(raw_id) > 100:
            return None
        with self.engine.begin() as conn:
            row = conn.execute(select(_sessions).where(_sessions.c.id_hash == _digest(raw_id))).first()
            if row is None:
                return None
            created, seen = _aware(row.created_at), _aware(row.last_seen_at)
            if now - seen > self.idle or now - created > self.absolute:
                conn.execute(delete(_sessions).where(_sessions.c.id_hash == row.id_hash))
                return None
            if now - seen > TOUCH_EVERY:
                conn.execute(update(_sessions).where(_sessions.c.id_hash == row.id_hash).values(last_seen_at=now))
        return Session(raw_id, row.account_id, created, _aware(row.password_at), _aware(row.mfa_at), row.csrf)

    def elevate(self, session: Session, now: datetime, *, mfa: bool = False, password: bool = False) -> str:
        """Record a passed check and move the session to a new id (and CSRF token); return the new raw id."""
        new_id = secrets.token_urlsafe(32)
        values = {"id_hash": _digest(new_id), "csrf": secrets.token_urlsafe(32), "last_seen_at": now}
        if mfa:
            values["mfa_at"] = now
        if password:
            values["password_at"] = now
        with self.engine.begin() as conn:
            conn.execute(update(_sessions).where(_sessions.c.id_hash == _digest(session.raw_id)).values(**values))
        return new_id

    def end(self, raw_id: str | None) -> None:
        if raw_id:
            with self.engine.begin() as conn:
                conn.execute(delete(_sessions).where(_sessions.c.id_hash == _digest(raw_id)))

    def end_all(self, account_id: int) -> None:
        """End every session of an account (after its second factor was reset)."""
        with self.engine.begin() as conn:
            conn.execute(delete(_sessions).where(_sessions.c.account_id == account_id))
