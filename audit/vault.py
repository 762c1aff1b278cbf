"""People's keys: pseudonyms, per-person data keys, and the fields encrypted with them.

Every person (subject) gets a random data key and a random salt, stored together
wrapped by the current master key in `subject_keys`, found by a blind index
(HMAC of the identifier under the index key). Their pseudonym is
HMAC-SHA256(salt, identifier): stable while the row exists, unlinkable once it
is gone. Sensitive fields are AES-256-GCM ciphertexts under the data key, with
the record's identity as associated data, so a ciphertext cannot be moved to
another record. The ledger hashes the ciphertext: it verifies without any key.
"""

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from audit.chain import canonical_json, utcnow
from audit.keyring import Keyring
from audit.models import SubjectKey
from audit.randomness import random_bytes
from audit.signing import KeyDirError, KeysOpenToOthers

_keys = SubjectKey.__table__
SEALED_PREFIX = "enc1:"


@dataclass(frozen=True)
class Subject:
    """One person's pseudonym and data key, for the duration of a transaction."""

    pseudonym: str
    data_key: bytes
    opted_out: bool
    # The key's AES-GCM context, made once: every decision seals two fields with it.
    cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "cipher", AESGCM(self.data_key))


class Unreadable(Exception):
    """A sealed field whose key is gone (erased) or that was altered."""


class Vault:
    """Finds or creates people's keys and seals or opens their fields."""

    def __init__(self, keyring: Keyring):
        self.keyring = keyring
        self._checked = False

    def lookup(self, identifier: str) -> str:
        """The blind index of `identifier`: finds its key row without storing it."""
        return hmac.new(self.keyring.index_key, identifier.encode("utf-8"), hashlib.sha256).hexdigest()

    def _aad(self, lookup: str) -> bytes:
        return b"warden-subject-key:" + lookup.encode()

    def _subject(self, row, identifier: str | None = None) -> Subject:
        secret = self.keyring.unwrap(row.master_version, row.wrapped, self._aad(row.lookup))
        return Subject(row.pseudonym, secret[:32], row.opted_out_at is not None)

    def subjects(self, conn: Connection, identifiers, *, create: bool = True) -> dict[str, Subject]:
        """Return the Subject of each identifier, creating keys for new people when `create`."""
        self._ready(conn)
        # Sorted: two transactions creating the same new people insert them in one order (no deadlock).
        wanted = {identifier: self.lookup(identifier) for identifier in sorted(set(identifiers))}
        found = self._rows(conn, wanted.values())
        missing = [i for i, lookup in wanted.items() if lookup not in found]
        if missing and create:
            rows = []
            for identifier in missing:
                lookup, salt, data_key = wanted[identifier], secrets.token_bytes(32), secrets.token_bytes(32)
                version, wrapped = self.keyring.wrap(data_key + salt, self._aad(lookup))
                pseudonym = "p_" + hmac.new(salt, identifier.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
                rows.append({"lookup": lookup, "pseudonym": pseudonym, "master_version": version,
                             "wrapped": wrapped, "created_at": utcnow()})
            # Another process may create the same person at the same moment: first one wins.
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            conn.execute(insert(_keys).on_conflict_do_nothing(index_elements=["lookup"]), rows)
            found.update(self._rows(conn, [wanted[i] for i in missing]))
        return {i: self._subject(found[lookup]) for i, lookup in wanted.items() if lookup in found}

    def _rows(self, conn: Connection, lookups) -> dict:
        lookups = list(lookups)
        if not lookups:
            return {}
        return {row.lookup: row for row in conn.execute(select(_keys).where(_keys.c.lookup.in_(lookups)))}

    def find(self, conn: Connection, identifier: str) -> Subject | None:
        """The Subject of `identifier` if Warden holds keys for them, else None."""
        return self.subjects(conn, [identifier], create=False).get(identifier)

    def by_pseudonym(self, conn: Connection, pseudonym: str) -> Subject | None:
        self._ready(conn)
        row = conn.execute(select(_keys).where(_keys.c.pseudonym == pseudonym)).first()
        return self._subject(row) if row else None

    def erase(self, conn: Connection, identifier: str) -> str | None:
        """Destroy `identifier`'s key and salt; return the pseudonym they had, or None if unknown.

        The caller appends the erasure's record with `bump_epoch`, so that every
        process drops the keys it cached.
        """
        lookup = self.lookup(identifier)
        pseudonym = conn.execute(select(_keys.c.pseudonym).where(_keys.c.lookup == lookup)).scalar()
        conn.execute(delete(_keys).where(_keys.c.lookup == lookup))
        return pseudonym

    def opt_out(self, conn: Connection, identifier: str) -> str:
        """Mark `identifier` as excluded from profiling; return their pseudonym."""
        subject = self.subjects(conn, [identifier])[identifier]
        conn.execute(update(_keys).where(_keys.c.pseudonym == subject.pseudonym, _keys.c.opted_out_at.is_(None))
                     .values(opted_out_at=utcnow()))
        return subject.pseudonym

    def opted_out(self, conn: Connection) -> set[str]:
        """The pseudonyms of everyone who opted out of profiling."""
        return set(conn.execute(select(_keys.c.pseudonym).where(_keys.c.opted_out_at.is_not(None))).scalars())

    # --- fields ----------------------------------------------------------------------------

    @staticmethod
    def seal(subject: Subject, value, aad: str) -> str:
        """Encrypt the JSON value `value` under `subject`'s key, bound to `aad` (the record's identity)."""
        nonce = random_bytes(12)
        ct = subject.cipher.encrypt(nonce, canonical_json(value).encode("utf-8"), aad.encode("utf-8"))
        return SEALED_PREFIX + base64.b64encode(nonce + ct).decode()

    @staticmethod
    def open(subject: Subject | None, sealed: str, aad: str):
        """Decrypt a sealed field; Unreadable when the key is gone or the field was altered."""
        if subject is None:
            raise Unreadable("the key of this person was erased")
        raw = base64.b64decode(sealed.removeprefix(SEALED_PREFIX))
        try:
            return json.loads(subject.cipher.decrypt(raw[:12], raw[12:], aad.encode("utf-8")))
        except InvalidTag:
            raise Unreadable("the field does not decrypt: altered, or moved from another record") from None

    # --- keys ------------------------------------------------------------------------------

    def check(self, conn: Connection) -> None:
        """Raise KeyDirError, loudly, when people's keys exist but the keys that wrap them are not here.

        Runs before the first key is used in a process, so a lost key directory is
        an error and never a fresh set of keys silently written over existing data.
        """
        used = set(conn.execute(select(_keys.c.master_version).distinct()).scalars())
        if used:
            try:
                missing = sorted(v for v in used if not self.keyring.has_version(v))
                has_index = self.keyring.has_index()
            except KeysOpenToOthers:
                raise  # the keys are there, but exposed: that message says what to do
            except KeyDirError as exc:
                raise KeyDirError(f"people's keys exist in the database, but {exc}: restore the key directory "
                                  "(Warden will not create new keys over existing data)") from None
            if missing or not has_index:
                lost = f"master key version(s) {', '.join(map(str, missing))}" if missing else "the index key"
                raise KeyDirError(f"people's keys exist in the database but {lost} are not in "
                                  f"{self.keyring.key_dir}: restore the key directory (Warden will not "
                                  "create new keys over existing data)")
        self._checked = True

    def _ready(self, conn: Connection) -> None:
        if not self._checked:
            self.check(conn)

    def rotate(self, conn: Connection) -> tuple[int, int]:
        """Create a new master version and rewrap every data key with it; return (version, rewrapped)."""
        self._ready(conn)
        version = self.keyring.add_version()
        count = 0
        for row in conn.execute(select(_keys).where(_keys.c.master_version != version)).all():
            secret = self.keyring.unwrap(row.master_version, row.wrapped, self._aad(row.lookup))
            new_version, wrapped = self.keyring.wrap(secret, self._aad(row.lookup))
            conn.execute(update(_keys).where(_keys.c.id == row.id).values(master_version=new_version, wrapped=wrapped))
            count += 1
        return version, count

    def versions_in_use(self, conn: Connection) -> dict[int, int]:
        return dict(conn.execute(select(_keys.c.master_version, func.count()).group_by(_keys.c.master_version)).all())
