"""Signed checkpoints and the append-only trigger: what a database superuser can still do is found."""

import json
import os
import stat

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from audit.chain import GENESIS_HASH, chain_hash
from audit.checkpoints import export_checkpoint, read_checkpoint_files
from audit.ledger import Entry
from audit.signing import KeyDirError, LedgerSigner
from audit.walk import BAD_CHECKPOINT, REWRITTEN, TAIL_CUT
from tests.conftest import ledger_rows, tamper


@pytest.fixture
def chain(warden):
    for i in range(12):
        warden.ledger.record(Entry("test", {"n": i}))
    return warden


def rewrite_chain_from(engine, first_seq: int, new_text: str) -> None:
    """Rewrite every record from `first_seq` with fresh, consistent hashes, and the head too."""
    rows = ledger_rows(engine)
    prev = rows[first_seq - 2].hash if first_seq > 1 else GENESIS_HASH
    for row in rows[first_seq - 1:]:
        body = row.body.replace('"n":', f'"{new_text}":') if row.seq == first_seq else row.body
        new_hash = chain_hash(prev, body)
        tamper(engine, "UPDATE ledger_records SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s",
               b=body, p=prev, h=new_hash, s=row.seq)
        prev = new_hash
    tamper(engine, "UPDATE ledger_head SET hash = :h", h=prev)


def test_checkpoint_signs_the_head(chain, app, runner, tmp_path):
    out = tmp_path / "outside"
    out.mkdir()
    result = runner.invoke(args=["audit", "checkpoint", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "checkpoint at seq 12" in result.output
    exported = read_checkpoint_files(out)
    assert [c.seq for c in exported] == [12]
    assert exported[0].hash == ledger_rows(chain.engine)[-1].hash
    assert os.path.exists(os.path.join(app.config["KEY_DIR"], f"ledger-{exported[0].key_id}.pub"))


def test_keys_live_apart_and_private(chain, app):
    chain.checkpoints.create()
    key_dir = app.config["KEY_DIR"]
    assert stat.S_IMODE(os.stat(key_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(key_dir, "ledger-signing.pem")).st_mode) == 0o600
    with chain.engine.connect() as conn:
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM ledger_checkpoints")))
    assert "PRIVATE" not in dump


def test_an_open_key_directory_is_refused(tmp_path):
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o755)
    os.chmod(key_dir, 0o755)
    with pytest.raises(KeyDirError, match="chmod 700"):
        LedgerSigner(key_dir).sign(b"x")


def test_latest_checkpoint_over_http(chain, client, make_token):
    headers = {"Authorization": f"Bearer {make_token('audit:read')}"}
    assert client.get("/v1/audit/checkpoints/latest", headers=headers).status_code == 404
    made = chain.checkpoints.create()
    body = client.get("/v1/audit/checkpoints/latest", headers=headers).get_json()
    assert (body["seq"], body["hash"], body["signature"]) == (made.seq, made.hash, made.signature)


def test_cutting_the_tail_and_the_head_is_found_by_the_checkpoint(chain, verify):
    chain.checkpoints.create()
    rows = ledger_rows(chain.engine)
    tamper(chain.engine, "DELETE FROM ledger_records WHERE seq > 9")
    tamper(chain.engine, "UPDATE ledger_head SET seq = 9, hash = :h", h=rows[8].hash)
    failure = verify().first_failure
    assert (failure.seq, failure.kind) == (10, TAIL_CUT)
    assert "checkpoint" in failure.message


def test_rewriting_the_whole_chain_consistently_is_found(chain, verify):
    chain.ledger.record(Entry("test", {"n": "after"}))
    chain.checkpoints.create()  # at 13
    rewrite_chain_from(chain.engine, 5, "forged")
    assert verify(from_checkpoint=False).first_failure.kind == REWRITTEN
    assert verify().first_failure.seq == 13


def test_without_checkpoints_a_consistent_rewrite_goes_unseen(chain, verify):
    # The limit the checkpoints exist for: documented, and held here so it stays true.
    rewrite_chain_from(chain.engine, 5, "forged")
    assert verify().ok


def test_a_forged_checkpoint_is_refused(chain, verify):
    chain.checkpoints.create()
    rows = ledger_rows(chain.engine)
    tamper(chain.engine, "UPDATE ledger_checkpoints SET seq = 5, hash = :h", h=rows[4].hash)
    failure = verify().first_failure
    assert failure.kind == BAD_CHECKPOINT


def test_checkpoints_kept_outside_catch_a_purged_checkpoint_table(chain, verify, tmp_path):
    export_checkpoint(chain.checkpoints.create(), tmp_path)
    rows = ledger_rows(chain.engine)
    tamper(chain.engine, "DELETE FROM ledger_checkpoints")
    tamper(chain.engine, "DELETE FROM ledger_records WHERE seq > 10")
    tamper(chain.engine, "UPDATE ledger_head SET seq = 10, hash = :h", h=rows[9].hash)
    assert verify().ok  # the database alone now tells a consistent story...
    failure = verify(external=read_checkpoint_files(tmp_path)).first_failure
    assert (failure.seq, failure.kind) == (11, TAIL_CUT)  # ...the exported checkpoint does not


def test_incremental_verification_starts_after_the_newest_checkpoint(chain, verify, runner):
    chain.checkpoints.create()
    for i in range(3):
        chain.ledger.record(Entry("test", {"later": i}))
    report = verify(from_checkpoint=True)
    assert report.ok and report.checked == 3 and report.from_checkpoint == 12
    result = runner.invoke(args=["audit", "verify", "--from-checkpoint", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["checked"] == 3


def test_empty_ledger_has_nothing_to_checkpoint(runner):
    result = runner.invoke(args=["audit", "checkpoint"])
    assert result.exit_code == 1 and "empty" in result.output


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
@pytest.mark.parametrize("statement", ["UPDATE ledger_records SET kind = 'x' WHERE seq = 1",
                                       "DELETE FROM ledger_records WHERE seq = 1",
                                       "TRUNCATE ledger_records"])
def test_postgres_refuses_changes_to_ledger_rows(chain, statement):
    with pytest.raises(DBAPIError, match="append-only"):
        with chain.engine.begin() as conn:
            conn.execute(text(statement))
    assert len(ledger_rows(chain.engine)) == 12
