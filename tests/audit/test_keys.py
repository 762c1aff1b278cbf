import os

import pytest

from audit.keyring import Keyring
from audit.signing import KeyDirError, KeysOpenToOthers, LedgerSigner


def test_keys_are_created_0600_in_a_0700_directory(tmp_path):
    key_dir = tmp_path / "keys"
    Keyring(key_dir).ensure()
    LedgerSigner(key_dir).sign(b"x")
    assert os.stat(key_dir).st_mode & 0o777 == 0o700
    secrets = [path for path in key_dir.iterdir() if path.suffix in (".key", ".pem")]
    assert {path.name for path in secrets} == {"master-v1.key", "index.key", "ledger-signing.pem"}
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in secrets)


@pytest.mark.parametrize("name,mode", [("master-v1.key", 0o644), ("index.key", 0o640), ("ledger-signing.pem", 0o604)])
def test_a_secret_key_file_others_may_read_is_refused_and_the_fix_named(tmp_path, name, mode):
    key_dir = tmp_path / "keys"
    Keyring(key_dir).ensure()
    LedgerSigner(key_dir).sign(b"x")
    (key_dir / name).chmod(mode)
    with pytest.raises(KeysOpenToOthers, match=f"key file {key_dir / name} is open to other users "
                                                f"\\(mode {mode:o}\\); run: chmod 600 {key_dir / name}"):
        Keyring(key_dir).ensure()
        LedgerSigner(key_dir).sign(b"x")


def test_public_keys_may_be_read_by_anyone(tmp_path):
    key_dir = tmp_path / "keys"
    kid, signature = LedgerSigner(key_dir).sign(b"statement")
    (key_dir / f"ledger-{kid}.pub").chmod(0o644)
    assert LedgerSigner(key_dir).check(b"statement", kid, signature)


def test_a_key_directory_others_may_enter_is_refused(tmp_path):
    key_dir = tmp_path / "keys"
    Keyring(key_dir).ensure()
    key_dir.chmod(0o755)
    with pytest.raises(KeyDirError, match=f"key directory {key_dir} is open to other users \\(mode 755\\); "
                                          f"run: chmod 700 {key_dir}$"):
        Keyring(key_dir).ensure()
