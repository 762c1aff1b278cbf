"""Service tokens: random bearer credentials, stored only as hashes, each with scopes."""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from audit.chain import utcnow
from audit.db import READ_ONLY
from audit.ledger import Entry, Ledger
from audit.memory import NotInMemory
from authz.models import ServiceToken
from authz.rules import name_problem

SCOPES = ("authorize", "audit:read", "policy:write", "privacy", "review")
TOKEN_PREFIX = "wdn_"
_tokens = ServiceToken.__table__


@dataclass(frozen=True)
class Caller:
    """The service a valid token belongs to."""

    name: str
    scopes: frozenset[str]


class TokenError(ValueError):
    """A token request that cannot be honoured (bad name, unknown scope, name taken)."""


def _digest(token: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenService:
    """Issues and checks service tokens; every issue is audited (never the token itself).

    A valid token is remembered for `cache_seconds` so the decision path does not
    query for it on every request; a rotation reaches other processes within that time.
    """

    def __init__(self, engine: Engine, ledger: Ledger, cache_seconds: float = 2.0):
        self.engine = engine
        self.ledger = ledger
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Caller]] = {}

    def create(self, name: str, scopes: list[str], *, actor: str, rotate: bool = False) -> str:
        """Return a new token for `name` with `scopes`; shown once, only its hash is kept.

        With `rotate`, an existing token of that name is replaced (the old one stops working).
        """
        if problem := name_problem(name, "token name"):
            raise TokenError(problem)
        if len(name) > 100:
            raise TokenError("token name is longer than 100 characters")
        unknown = sorted(set(scopes) - set(SCOPES))
        if not scopes or unknown:
            raise TokenError(f"unknown scope {', '.join(unknown)}; choose from {', '.join(SCOPES)}" if unknown
                             else f"give at least one --scope ({', '.join(SCOPES)})")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        values = {"token_hash": _digest(token), "scopes": " ".join(sorted(set(scopes))),
                  "created_at": utcnow(), "revoked_at": None}
        with self.engine.begin() as conn:
            exists = conn.execute(select(_tokens.c.id).where(_tokens.c.name == name)).scalar_one_or_none()
            if exists is not None and not rotate:
                raise TokenError(f"a token named {name!r} exists already; add --rotate to replace it")
            if exists is None:
                conn.execute(insert(_tokens).values(name=name, **values))
            else:
                conn.execute(update(_tokens).where(_tokens.c.id == exists).values(**values))
            self.ledger.append(conn, [Entry("token.rotate" if exists else "token.create",
                                            {"actor": actor, "name": name, "scopes": sorted(set(scopes))})])
        self._cache.clear()
        return token

    def check(self, token: str | None, memory_only: bool = False) -> Caller | None:
        """Return the caller `token` belongs to, or None when it is not a valid, live token.
        `memory_only`: raise NotInMemory rather than look an uncached token up."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = _digest(token)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if memory_only:
            raise NotInMemory("the token is not cached")
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(select(_tokens.c.name, _tokens.c.token_hash, _tokens.c.scopes)
                               .where(_tokens.c.token_hash == digest, _tokens.c.revoked_at.is_(None))).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        caller = Caller(row.name, frozenset(row.scopes.split()))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self.cache_seconds, caller)
        return caller
