"""Accounts of people who use the pages: creation, sign-in, and the roles that need a second factor."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select

from audit.chain import utcnow
from audit.db import READ_ONLY
from audit.ledger import Entry, Ledger
from audit.vault import Vault
from authz.models import Account as AccountRow
from authz.passwords import Passwords
from authz.rules import name_problem

_accounts = AccountRow.__table__
ADMIN = "admin"
REVIEWER = "security-reviewer"
USER = "user"
MFA_ROLES = (ADMIN, REVIEWER)  # these must pass TOTP in every session


@dataclass(frozen=True)
class Account:
    """A signed-in person as the pages see them."""

    id: int
    name: str
    role: str
    mfa_enabled: bool
    mfa_locked: bool

    @property
    def needs_mfa(self) -> bool:
        return self.role in MFA_ROLES or self.mfa_enabled


class AccountError(ValueError):
    """A request about accounts that cannot be honoured; the message says why."""


def account_from_row(row) -> Account:
    return Account(row.id, row.name, row.role, row.totp_enabled_at is not None, row.mfa_locked_at is not None)


class AccountService:
    """Creates accounts and checks passwords; sign-ins and failures go to the ledger by pseudonym."""

    def __init__(self, engine: Engine, ledger: Ledger, vault: Vault, passwords: Passwords):
        self.engine = engine
        self.ledger = ledger
        self.vault = vault
        self.passwords = passwords

    def audit(self, conn, kind: str, name: str | None, **data) -> None:
        """Append `kind` naming the account holder only by pseudonym."""
        if name is not None:
            data["account"] = self.vault.subjects(conn, [name])[name].pseudonym
        self.ledger.append(conn, [Entry(kind, data)])

    def create(self, name: str, role: str, password: str, actor: str,
               policy_roles: frozenset[str] = frozenset()) -> Account:
        """Create an account with `role`: admin, security-reviewer, user, or a role the policy grants."""
        if problem := name_problem(name, "account name"):
            raise AccountError(problem)
        allowed = {ADMIN, REVIEWER, USER} | set(policy_roles)
        if role not in allowed:
            raise AccountError(f"unknown role {role!r}: choose {ADMIN}, {REVIEWER}, {USER}"
                               + (f", or a role of the policy ({', '.join(sorted(policy_roles))})"
                                  if policy_roles else ""))
        if problem := Passwords.problem(password):
            raise AccountError(problem)
        with self.engine.begin() as conn:
            if conn.execute(select(_accounts.c.id).where(_accounts.c.name == name)).first():
                raise AccountError(f"an account named {name!r} exists already")
            conn.execute(insert(_accounts).values(name=name, role=role, password_hash=self.passwords.hash(password),
                                                  created_at=utcnow(), mfa_failures=0))
            self.audit(conn, "account.create", name, role=role, actor=actor)
        return self.get_by_name(name)

    def set_password(self, name: str, password: str, actor: str) -> None:
        """Replace an account's password (audited); AccountError if unknown or too weak."""
        if problem := Passwords.problem(password):
            raise AccountError(problem)
        with self.engine.begin() as conn:
            changed = conn.execute(_accounts.update().where(_accounts.c.name == name).values(
                password_hash=self.passwords.hash(password))).rowcount
            if not changed:
                raise AccountError(f"no account named {name!r}")
            self.audit(conn, "account.password", name, actor=actor)

    def get(self, account_id: int) -> Account | None:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(select(_accounts).where(_accounts.c.id == account_id)).first()
        return account_from_row(row) if row else None

    def get_by_name(self, name: str) -> Account | None:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(select(_accounts).where(_accounts.c.name == name)).first()
        return account_from_row(row) if row else None

    def all(self) -> list[Account]:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return [account_from_row(r) for r in conn.execute(select(_accounts).order_by(_accounts.c.name))]

    def authenticate(self, name: str, password: str) -> Account | None:
        """The account when `password` is right; None otherwise, in the same time whether or not it exists."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(select(_accounts).where(_accounts.c.name == name)).first()
        ok = self.passwords.check(row.password_hash if row else None, password)
        with self.engine.begin() as conn:
            if ok:
                self.audit(conn, "auth.login", name, outcome="password accepted")
            else:
                # Unknown names are not recorded by name or pseudonym: no key rows for strangers.
                self.audit(conn, "auth.failure", name if row else None, outcome="bad credentials")
        return account_from_row(row) if ok else None

    def check_password(self, account_id: int, password: str) -> bool:
        """A fresh password check for a signed-in person (before MFA changes)."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(select(_accounts.c.password_hash).where(_accounts.c.id == account_id)).first()
        return self.passwords.check(row.password_hash if row else None, password)


def is_fresh(moment: datetime | None, now: datetime, seconds: int) -> bool:
    return moment is not None and (now - _aware(moment)).total_seconds() <= seconds


def _aware(moment: datetime) -> datetime:
    from datetime import timezone
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
