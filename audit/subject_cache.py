"""People's keys kept in memory between decisions, and dropped once an erasure is seen.

Looking a person up costs a query and an unwrap, more than the decision itself.
The cache answers from memory and says which ledger epoch its answer belongs to.
An erasure moves the epoch on in the transaction that destroys the key, and a
record made from cached keys is appended only if the epoch has not moved (the
group committer checks it under the chain head lock and has the record made
again from the database otherwise): no record is ever sealed with a key that
was destroyed before the record was appended.
"""

import threading
import time
from collections.abc import Iterable

from sqlalchemy import Engine

from audit.db import READ_ONLY
from audit.jobs import every
from audit.ledger import Ledger
from audit.memory import NotInMemory
from audit.vault import Subject, Vault


class SubjectCache:
    """Subjects by identifier, for one ledger epoch, each kept at most `ttl` seconds."""

    def __init__(self, engine: Engine, ledger: Ledger, vault: Vault, *, max_entries: int = 50_000, ttl: float = 300.0):
        self.engine = engine
        self.ledger = ledger
        self.vault = vault
        self.max_entries = max_entries
        self.ttl = ttl
        # (epoch, {identifier: (subject, expires)}). Readers only `get` from the dict, which is
        # safe beside an insert under the GIL; a new epoch gets a new dict.
        self._state: tuple[int | None, dict[str, tuple[Subject, float]]] = (None, {})
        self._lock = threading.Lock()

    def get(self, identifiers: Iterable[str], memory_only: bool = False) -> tuple[dict[str, Subject], int]:
        """Return the Subject of each identifier (keys are made for new people) and their epoch.
        `memory_only`: raise NotInMemory rather than read (or make) one that is not cached."""
        identifiers = set(identifiers)
        epoch, entries = self._state
        now = time.monotonic()
        found = {}
        if epoch is not None:
            for identifier in identifiers:
                hit = entries.get(identifier)
                if hit is None or hit[1] < now:
                    break
                found[identifier] = hit[0]
            else:
                return found, epoch
        if memory_only:
            raise NotInMemory("a person's key is not cached")
        return self._load(identifiers)

    def _load(self, identifiers: set[str]) -> tuple[dict[str, Subject], int]:
        # The epoch is read first: keys read after it are at least that fresh.
        with self.engine.begin() as conn:
            epoch = self.ledger.epoch(conn)
            subjects = self.vault.subjects(conn, identifiers)
        expires = time.monotonic() + self.ttl
        with self._lock:
            current, entries = self._state
            if current != epoch:
                entries = {}
            while len(entries) + len(subjects) > self.max_entries and entries:
                del entries[next(iter(entries))]  # the oldest entry
            entries.update((i, (s, expires)) for i, s in subjects.items())
            self._state = (epoch, entries)
        return subjects, epoch

    def sweep(self) -> None:
        """Drop every key if the epoch moved (an erasure elsewhere), and the expired ones anyway, so an
        idle process does not keep a destroyed key in memory."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            epoch = self.ledger.epoch(conn)
        self.forget(unless_epoch=epoch)
        now = time.monotonic()
        with self._lock:
            _, entries = self._state
            expired = [identifier for identifier, (_, expires) in entries.items() if expires < now]
            for identifier in expired:
                del entries[identifier]

    def start_sweeper(self, seconds: float = 5.0) -> threading.Event:
        """`sweep` every `seconds` on a daemon thread until the returned event is set."""
        return every(seconds, self.sweep, "warden-key-sweeper")

    def forget(self, unless_epoch: int | None = None) -> None:
        """Drop every cached key (unless they already belong to `unless_epoch`)."""
        with self._lock:
            if unless_epoch is None or self._state[0] != unless_epoch:
                self._state = (None, {})
