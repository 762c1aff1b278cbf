"""Master keys: versioned AES-256 keys kept in the key directory (or the environment), never in the database.

They only ever wrap other keys (envelope encryption): each person's data key is
stored wrapped by a master version, and rotation rewraps those without any
personal data passing through. `index.key` keys the blind index that finds a
person's key row; it is not rotated (rotating it would orphan every row).
"""

import base64
import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.signing import KeyDirError, ensure_key_dir, read_secret_file

_MASTER_FILE = re.compile(r"^master-v(\d+)\.key$")
INDEX_FILE = "index.key"
ENV_KEYS = "WARDEN_MASTER_KEYS"  # "1:<base64>,2:<base64>", for containers without a key directory


def _write_secret(path: Path, key: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(key) + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _read_secret(path: Path) -> bytes:
    key = base64.b64decode(read_secret_file(path).strip(), validate=True)
    if len(key) != 32:
        raise KeyDirError(f"{path} does not hold a 256-bit key")
    return key


class Keyring:
    """Loads master key versions and the index key; wraps and unwraps data keys."""

    def __init__(self, key_dir: str | Path, env_keys: str | None = None):
        self.key_dir = Path(key_dir)
        self.env_keys = env_keys
        self._masters: dict[int, bytes] | None = None
        self._index: bytes | None = None

    # --- loading -------------------------------------------------------------------------

    def _load(self, create: bool) -> None:
        if self._masters is not None:
            return
        masters: dict[int, bytes] = {}
        if self.env_keys:
            for part in self.env_keys.split(","):
                version, _, value = part.strip().partition(":")
                try:
                    masters[int(version)] = base64.b64decode(value, validate=True)
                except ValueError:
                    raise KeyDirError(f"{ENV_KEYS} must look like 1:<base64 of 32 bytes>,2:...") from None
            index = masters.get(0)
            masters.pop(0, None)
        else:
            if not self.key_dir.exists() and not create:
                raise KeyDirError(f"key directory {self.key_dir} does not exist")
            ensure_key_dir(self.key_dir)
            for path in self.key_dir.iterdir():
                if match := _MASTER_FILE.match(path.name):
                    masters[int(match.group(1))] = _read_secret(path)
            index_path = self.key_dir / INDEX_FILE
            index = _read_secret(index_path) if index_path.exists() else None
            if create and not masters:
                masters[1] = secrets.token_bytes(32)
                _write_secret(self.key_dir / "master-v1.key", masters[1])
            if create and index is None:
                index = secrets.token_bytes(32)
                _write_secret(index_path, index)
        if any(len(k) != 32 for k in masters.values()) or (index is not None and len(index) != 32):
            raise KeyDirError("every master key, and the index key, must be 256 bits")
        self._masters, self._index = masters, index

    def ensure(self) -> "Keyring":
        """Load the keys, creating the first master version and the index key if there are none."""
        self._load(create=True)
        if not self._masters or self._index is None:
            raise KeyDirError(f"{ENV_KEYS} must hold the index key as version 0 and at least one master key")
        return self

    def reload(self) -> None:
        self._masters = None
        self._index = None

    @property
    def versions(self) -> list[int]:
        self.ensure()
        return sorted(self._masters)

    @property
    def current_version(self) -> int:
        return self.versions[-1]

    @property
    def index_key(self) -> bytes:
        self.ensure()
        return self._index

    def has_version(self, version: int) -> bool:
        """True when master `version` is loaded; never creates keys."""
        self._load(create=False)
        return version in self._masters

    def has_index(self) -> bool:
        """True when the index key is present; never creates it."""
        self._load(create=False)
        return self._index is not None

    # --- wrapping --------------------------------------------------------------------------

    def wrap(self, plaintext: bytes, aad: bytes) -> tuple[int, str]:
        """Return (master version, base64 nonce+ciphertext) of `plaintext` under the current master."""
        version = self.current_version
        nonce = secrets.token_bytes(12)
        return version, base64.b64encode(nonce + AESGCM(self._masters[version]).encrypt(nonce, plaintext, aad)).decode()

    def unwrap(self, version: int, wrapped: str, aad: bytes) -> bytes:
        """Return the plaintext wrapped by master `version`; KeyDirError if that version is gone."""
        self.ensure()
        if version not in self._masters:
            raise KeyDirError(f"master key version {version} is not in {self.key_dir}: restore the key directory")
        raw = base64.b64decode(wrapped)
        try:
            return AESGCM(self._masters[version]).decrypt(raw[:12], raw[12:], aad)
        except InvalidTag:
            raise KeyDirError(f"a data key does not decrypt under master version {version}: "
                              "wrong key directory, or the row was altered") from None

    # --- rotation --------------------------------------------------------------------------

    def add_version(self) -> int:
        """Create master version N+1 in the key directory and return N+1."""
        if self.env_keys:
            raise KeyDirError(f"keys come from {ENV_KEYS}: add the new version there")
        self.ensure()
        version = max(self._masters) + 1
        key = secrets.token_bytes(32)
        _write_secret(self.key_dir / f"master-v{version}.key", key)
        self._masters[version] = key
        return version

    def retire(self, version: int) -> None:
        """Delete master `version`'s file; the caller has checked that nothing is wrapped by it."""
        if self.env_keys:
            raise KeyDirError(f"keys come from {ENV_KEYS}: remove the version there")
        if version == self.current_version:
            raise KeyDirError("the current master version cannot be retired; rotate first")
        path = self.key_dir / f"master-v{version}.key"
        if not path.exists():
            raise KeyDirError(f"there is no master version {version}")
        path.unlink()
        self.reload()
