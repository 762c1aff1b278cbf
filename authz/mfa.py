"""TOTP second factor: enrollment, verification with replay protection and throttling, recovery codes.

Rules (NIST SP 800-63B, as Warehouse does it): 160-bit secrets sealed with the
person's data key; a code is accepted within one 30-second step of drift and
only once (the last used step is claimed with a conditional UPDATE, so two
concurrent submissions of one code cannot both pass); failures add growing
delays and lock the factor after `max_failures` in a row; recovery codes are
120 random bits, stored as SHA-256, and burn on use.
"""

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import Engine, delete, insert, select, update

from audit.metrics import MFA_FAILURES
from audit.vault import Unreadable, Vault
from authz.accounts import AccountService
from authz.models import Account as AccountRow
from authz.models import RecoveryCode

_accounts = AccountRow.__table__
_codes = RecoveryCode.__table__
STEP = 30
RECOVERY_CODES = 10
FREE_FAILURES = 5         # then 1 s, 2 s, 4 s ... between attempts
MAX_DELAY = 15 * 60
ISSUER = "Warden"
_CODE = re.compile(r"^\d{6}$")


class MfaError(Exception):
    """A refused second factor: `code` is wrong_code, replayed, throttled, locked or not_enrolled."""

    def __init__(self, code: str, message: str, retry_after: int = 0):
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after


@dataclass(frozen=True)
class Enrollment:
    """What the enrollment page shows: the secret and the otpauth URI for the QR code."""

    secret: str
    uri: str


def _recovery_hash(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").replace(" ", "").upper().encode()).hexdigest()


def new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(15)).decode()  # 24 base32 characters: 120 bits
    return "-".join(raw[i:i + 4] for i in range(0, 24, 4))


def delay_after(failures: int) -> int:
    """Seconds to wait before the next attempt after `failures` consecutive failures."""
    return 0 if failures < FREE_FAILURES else min(2 ** (failures - FREE_FAILURES), MAX_DELAY)


class Mfa:
    """The TOTP factor of accounts; every enrollment, failure, lock, recovery use and reset is audited."""

    def __init__(self, engine: Engine, accounts: AccountService, max_failures: int = 100):
        self.engine = engine
        self.accounts = accounts
        self.vault = accounts.vault
        self.max_failures = max_failures

    def _person(self, conn, row):
        return self.vault.subjects(conn, [row.name])[row.name]

    def _row(self, conn, account_id: int):
        return conn.execute(select(_accounts).where(_accounts.c.id == account_id)).one()

    def begin(self, account_id: int) -> Enrollment:
        """Return the pending secret (made once, sealed), to show as a QR code and as text."""
        with self.engine.begin() as conn:
            row = self._row(conn, account_id)
            person = self._person(conn, row)
            secret = None
            if row.totp_pending_enc:
                try:
                    secret = Vault.open(person, row.totp_pending_enc, f"totp-pending:{account_id}")
                except Unreadable:  # sealed under a key that was erased since: start afresh
                    secret = None
            if secret is None:
                secret = pyotp.random_base32(32)  # 32 base32 characters: 160 bits
                conn.execute(update(_accounts).where(_accounts.c.id == account_id).values(
                    totp_pending_enc=Vault.seal(person, secret, f"totp-pending:{account_id}")))
        return Enrollment(secret, pyotp.TOTP(secret).provisioning_uri(name=row.name, issuer_name=ISSUER))

    def confirm(self, account_id: int, code: str, now: datetime) -> list[str]:
        """Turn the pending secret on if `code` is current; return the recovery codes (shown once)."""
        with self.engine.begin() as conn:
            row = self._row(conn, account_id)
            if not row.totp_pending_enc:
                raise MfaError("not_enrolled", "start the enrollment again: no pending secret")
            person = self._person(conn, row)
            try:
                secret = Vault.open(person, row.totp_pending_enc, f"totp-pending:{account_id}")
            except Unreadable:
                raise MfaError("not_enrolled", "start the enrollment again: the pending secret is gone") from None
            step = _matching_step(secret, code, now)
            if step is None:
                raise MfaError("wrong_code", "that code is not the current one; check the clock of your device")
            codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
            conn.execute(update(_accounts).where(_accounts.c.id == account_id).values(
                totp_secret_enc=Vault.seal(person, secret, f"totp:{account_id}"), totp_pending_enc=None,
                totp_enabled_at=now, totp_last_step=step, mfa_failures=0, mfa_next_attempt_at=None,
                mfa_locked_at=None))
            conn.execute(delete(_codes).where(_codes.c.account_id == account_id))
            conn.execute(insert(_codes), [{"account_id": account_id, "code_hash": _recovery_hash(c)} for c in codes])
            self.accounts.audit(conn, "mfa.enroll", row.name)
        return codes

    def verify(self, account_id: int, code: str, now: datetime) -> str:
        """Accept a current TOTP code or an unused recovery code; return "totp" or "recovery".

        Raises MfaError when refused (and counts the failure).
        """
        code = (code or "").strip()
        with self.engine.begin() as conn:
            outcome = self._verify(conn, account_id, code, now)
        if isinstance(outcome, MfaError):
            raise outcome  # raised only now, so the failure count above was committed
        return outcome

    def _verify(self, conn, account_id: int, code: str, now: datetime) -> "str | MfaError":
        row = self._row(conn, account_id)
        if row.totp_secret_enc is None:
            raise MfaError("not_enrolled", "this account has no second factor yet")
        if row.mfa_locked_at is not None:
            raise MfaError("locked", "the second factor is locked after too many failures; an administrator "
                                     "must reset it")
        wait = _seconds_until(row.mfa_next_attempt_at, now)
        if wait > 0:
            raise MfaError("throttled", f"too many failed codes: wait {wait} s", retry_after=wait)
        person = self._person(conn, row)
        if _CODE.match(code):
            try:
                secret = Vault.open(person, row.totp_secret_enc, f"totp:{account_id}")
            except Unreadable:
                raise MfaError("not_enrolled", "this account's second factor can no longer be read (its "
                                               "holder's data was erased); an administrator must reset it") from None
            step = _matching_step(secret, code, now)
            if step is not None:
                claimed = conn.execute(update(_accounts).where(
                    _accounts.c.id == account_id,
                    (_accounts.c.totp_last_step.is_(None)) | (_accounts.c.totp_last_step < step),
                ).values(totp_last_step=step, mfa_failures=0, mfa_next_attempt_at=None)).rowcount
                if claimed == 1:
                    return "totp"
                return self._fail(conn, row, now, "replayed",
                                  "that code was used already; wait for the next one")
        elif code:
            burned = conn.execute(delete(_codes).where(_codes.c.account_id == account_id,
                                                       _codes.c.code_hash == _recovery_hash(code))).rowcount
            if burned == 1:
                conn.execute(update(_accounts).where(_accounts.c.id == account_id).values(
                    mfa_failures=0, mfa_next_attempt_at=None))
                left = conn.execute(select(_codes.c.id).where(_codes.c.account_id == account_id)).all()
                self.accounts.audit(conn, "mfa.recovery_used", row.name, remaining=len(left))
                return "recovery"
        return self._fail(conn, row, now, "wrong_code", "that code is not right")

    def _fail(self, conn, row, now: datetime, code: str, message: str):
        MFA_FAILURES.labels(why=code).inc()
        failures = conn.execute(update(_accounts).where(_accounts.c.id == row.id)
                                .values(mfa_failures=_accounts.c.mfa_failures + 1)
                                .returning(_accounts.c.mfa_failures)).scalar_one()
        values = {"mfa_next_attempt_at": now + timedelta(seconds=delay_after(failures))}
        if failures >= self.max_failures:
            values["mfa_locked_at"] = now
        conn.execute(update(_accounts).where(_accounts.c.id == row.id).values(**values))
        self.accounts.audit(conn, "mfa.lock" if failures >= self.max_failures else "mfa.failure", row.name,
                            failures=failures, why=code)
        return MfaError(code, message)

    def reset(self, account_id: int, actor: str) -> None:
        """Remove the factor and its recovery codes (the person enrolls again)."""
        with self.engine.begin() as conn:
            row = self._row(conn, account_id)
            conn.execute(update(_accounts).where(_accounts.c.id == account_id).values(
                totp_secret_enc=None, totp_pending_enc=None, totp_enabled_at=None, totp_last_step=None,
                mfa_failures=0, mfa_next_attempt_at=None, mfa_locked_at=None))
            conn.execute(delete(_codes).where(_codes.c.account_id == account_id))
            self.accounts.audit(conn, "mfa.reset", row.name, actor=actor)

    def forget_person(self, name: str, actor: str) -> None:
        """Eraser for privacy requests: an erased person's factor is sealed with a key that is gone,
        so reset it (they enroll again at next sign-in)."""
        with self.engine.connect() as conn:
            account_id = conn.execute(select(_accounts.c.id).where(_accounts.c.name == name)).scalar()
        if account_id is not None:
            self.reset(account_id, actor=actor)

    def recovery_codes_left(self, account_id: int) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(_codes.c.id).where(_codes.c.account_id == account_id)).all())


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (±1 of now) whose code equals `code`, compared in constant time."""
    if not _CODE.match(code or ""):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP
    found = None
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.at(step * STEP), code):
            found = step
    return found


def _seconds_until(moment: datetime | None, now: datetime) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        from datetime import timezone
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0, int((moment - now).total_seconds() + 0.999))
