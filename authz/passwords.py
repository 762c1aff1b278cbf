"""Password hashing with argon2id, and a check that costs the same for unknown users."""

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024


class Passwords:
    """Hashes and checks passwords (argon2-cffi's RFC 9106 low-memory profile by default)."""

    def __init__(self, hasher: PasswordHasher | None = None):
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    @property
    def dummy(self) -> str:
        """Checked against when the account does not exist, so both paths do the same work."""
        if self._dummy is None:
            self._dummy = self.hasher.hash("warden-dummy-password-for-equal-timing")
        return self._dummy

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def check(self, stored_hash: str | None, password: str) -> bool:
        """True when `password` matches `stored_hash`; None (no such account) costs the same and fails."""
        try:
            return self.hasher.verify(stored_hash or self.dummy, password) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    @staticmethod
    def problem(password: str) -> str | None:
        """Why `password` is not acceptable (NIST 800-63B: length, not composition rules), or None."""
        if len(password) < MIN_LENGTH:
            return f"a password needs at least {MIN_LENGTH} characters"
        if len(password) > MAX_LENGTH:
            return f"a password has at most {MAX_LENGTH} characters"
        return None
