"""The ledger's signing key: Ed25519, kept in the key directory, never in the database.

Checkpoints and purge seals are signed with it; verification needs only the
public keys, which stay in the directory under their key id after a rotation.
"""

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_NAME = "ledger-signing.pem"


class KeyDirError(RuntimeError):
    """The key directory is missing a key it must have, or is open to other users."""


class KeysOpenToOthers(KeyDirError):
    """The key directory, or a secret key in it, can be read by users other than its owner."""


def ensure_key_dir(path: Path) -> Path:
    """Create `path` 0700 if absent; refuse one that group or others can read or enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _refuse_open(path, "key directory", 0o700)
    return path


def read_secret_file(path: Path) -> bytes:
    """The bytes of a secret key file; refused when group or others may read or write it (it must be 0600)."""
    _refuse_open(path, "key file", 0o600)
    return path.read_bytes()


def refuse_exposed_keys(key_dir: Path) -> None:
    """Raise KeysOpenToOthers when `key_dir`, if it exists, or a secret key file in it is open to others:
    checked at start, before any key is needed."""
    if key_dir.exists():
        _refuse_open(key_dir, "key directory", 0o700)
        for path in sorted(key_dir.iterdir()):
            if path.suffix in (".key", ".pem"):
                _refuse_open(path, "key file", 0o600)


def _refuse_open(path: Path, what: str, fix: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeysOpenToOthers(f"{what} {path} is open to other users (mode {mode:o}); run: chmod {fix:o} {path}")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def key_id(public: Ed25519PublicKey) -> str:
    """Return a short, stable name for `public`: the first 16 hex digits of its SHA-256."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class LedgerSigner:
    """Signs and checks ledger statements with the key in `key_dir`."""

    def __init__(self, key_dir: str | Path):
        self.key_dir = Path(key_dir)
        self._private: Ed25519PrivateKey | None = None

    def _load_private(self, create: bool) -> Ed25519PrivateKey:
        if self._private is None:
            path = ensure_key_dir(self.key_dir) / PRIVATE_NAME
            if not path.exists():
                if not create:
                    raise KeyDirError(f"no ledger signing key in {self.key_dir}")
                private = Ed25519PrivateKey.generate()
                _write_private(path, private.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
                public = private.public_key()
                (self.key_dir / f"ledger-{key_id(public)}.pub").write_bytes(
                    public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
            self._private = serialization.load_pem_private_key(read_secret_file(path), password=None)
        return self._private

    def sign(self, message: bytes) -> tuple[str, str]:
        """Return (key id, hex signature) of `message`, creating the key on first use."""
        private = self._load_private(create=True)
        return key_id(private.public_key()), private.sign(message).hex()

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        """Return the public key named `kid`, or None when the directory does not hold it."""
        path = self.key_dir / f"ledger-{kid}.pub"
        if not kid.isalnum() or not path.exists():
            return None
        return serialization.load_pem_public_key(path.read_bytes())

    def check(self, message: bytes, kid: str, signature_hex: str) -> bool:
        """True when `signature_hex` is a signature of `message` by key `kid`."""
        public = self.public_key(kid)
        if public is None:
            return False
        try:
            public.verify(bytes.fromhex(signature_hex), message)
        except (InvalidSignature, ValueError):
            return False
        return True
