"""The app factory: configuration from the environment, refused clearly when wrong."""

import os
import sqlite3
import subprocess
import sys

import click
import pytest

from app import create_app


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("WARDEN_DATABASE_URL", "WARDEN_KEY_DIR", "WARDEN_MODEL", "WARDEN_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_put_sqlite_and_keys_in_the_instance_folder(tmp_path):
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'warden.db'}"
    assert app.config["KEY_DIR"] == str(tmp_path / "keys")
    assert app.config["RETENTION_DAYS"] == 30


def test_environment_names_from_the_design(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    monkeypatch.setenv("WARDEN_KEY_DIR", str(tmp_path / "k"))
    monkeypatch.setenv("WARDEN_RETENTION_DAYS", "7")
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["DATABASE_URL"].endswith("other.db")
    assert app.config["KEY_DIR"] == str(tmp_path / "k")
    assert app.config["RETENTION_DAYS"] == 7


@pytest.mark.parametrize("days", ["0", "-3", "thirty"])
def test_bad_retention_is_refused(tmp_path, monkeypatch, days):
    monkeypatch.setenv("WARDEN_RETENTION_DAYS", days)
    with pytest.raises(click.UsageError, match="WARDEN_RETENTION_DAYS"):
        create_app({"INSTANCE_PATH": str(tmp_path)})


def test_missing_or_wrong_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_MODEL", str(tmp_path / "none.conf"))
    with pytest.raises(click.UsageError, match="cannot read"):
        create_app({"INSTANCE_PATH": str(tmp_path)})
    wrong = tmp_path / "wrong.conf"
    wrong.write_text("[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n"
                     "[policy_effect]\ne = some(where (p.eft == allow))\n[matchers]\nm = r.sub == p.sub\n")
    monkeypatch.setenv("WARDEN_MODEL", str(wrong))
    with pytest.raises(click.UsageError, match="r = sub, dom, obj, act, wf"):
        create_app({"INSTANCE_PATH": str(tmp_path)})


def test_a_custom_model_decides_through_pycasbin(tmp_path, monkeypatch):
    from app import upgrade_database
    from authz.decider import CasbinDecider, Request
    from authz.rules import parse_policy_csv

    # Same request shape, but actions must match exactly (no `*` for any action).
    model = tmp_path / "strict.conf"
    from authz.model_file import bundled_model_text
    model.write_text(bundled_model_text().replace('(p.act == "*" || r.act == p.act)', "r.act == p.act"))
    monkeypatch.setenv("WARDEN_MODEL", str(model))
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    upgrade_database(app.config["DATABASE_URL"])
    warden = app.extensions["warden"]
    warden.policies.apply(parse_policy_csv("p, alice, *, db/*, *, *, allow\n"), replace=True, actor="test")
    with warden.engine.begin() as conn:
        snapshot = warden.policies.snapshot(conn)
    assert isinstance(snapshot.decider, CasbinDecider)
    assert snapshot.decider.decide(Request("alice", "prod", "db/x", "read")).allowed is False
    warden.engine.dispose()


def _warden(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WARDEN_DATABASE_URL": url, "WARDEN_KEY_DIR": str(tmp_path / "keys")}
    return subprocess.run([sys.executable, "-c", "import app; app.main()", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("url,expected", [
    ("sqlite:///{tmp}/never-migrated.db", "has no Warden schema, or an older one (no such table"),
    ("sqlite:///{tmp}/mistyped/warden.db", "there is no SQLite database at"),
    ("bogus://somewhere", "WARDEN_DATABASE_URL is not a database URL Warden can use"),
    ("mysql://somewhere/db", "Warden runs on SQLite or on PostgreSQL through psycopg 3, not 'mysql'"),
    ("postgresql+psycopg://nobody@127.0.0.1:1/none", "cannot use the database at"),
])
def test_database_problems_are_one_line_not_a_traceback(tmp_path, url, expected):
    # Each run starts a Python with the whole app (about 2 s): one command, and serve for the first.
    commands = [["serve", "--port", "1"], ["audit", "verify"]] if url.startswith("sqlite") else [["policy", "export"]]
    if "never-migrated" in url:
        sqlite3.connect(tmp_path / "never-migrated.db").close()  # a database, but not Warden's
    for args in commands:
        result = _warden(tmp_path, url.format(tmp=tmp_path), *args)
        assert result.returncode == 1, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
    if url.startswith("sqlite"):
        assert "run `warden db upgrade` first" in result.stderr
    assert not (tmp_path / "mistyped").exists()  # a mistyped path leaves nothing behind


def test_without_a_database_url_the_default_file_is_named_when_missing(tmp_path, monkeypatch, capsys):
    import flask

    import app

    monkeypatch.delenv("WARDEN_DATABASE_URL", raising=False)
    monkeypatch.setenv("WARDEN_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(tmp_path / "instance"))
    monkeypatch.setattr(sys, "argv", ["warden", "audit", "verify"])
    with pytest.raises(SystemExit) as stopped:
        app.main()
    assert stopped.value.code == 1
    assert (f"there is no SQLite database at {tmp_path / 'instance' / 'warden.db'}: run `warden db upgrade` first"
            in capsys.readouterr().err)
    assert not (tmp_path / "instance").exists()


def test_a_sqlite_file_that_cannot_be_looked_at_is_not_called_missing(tmp_path):
    from audit.db import missing_sqlite_file

    assert missing_sqlite_file(f"sqlite:///{tmp_path}/absent.db") == f"{tmp_path}/absent.db"
    (tmp_path / "afile").write_text("")
    assert missing_sqlite_file(f"sqlite:///{tmp_path}/afile/warden.db") is None  # ENOTDIR: not "missing"
    assert missing_sqlite_file("sqlite://") is None and missing_sqlite_file("postgresql://h/d") is None


def test_db_upgrade_that_cannot_make_the_file_says_so_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    result = _warden(tmp_path, f"sqlite:///{tmp_path}/afile/warden.db", "db", "upgrade")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot make a SQLite database at {tmp_path}/afile/warden.db" in result.stderr


def test_a_mode_the_sqlite_url_gives_is_kept(tmp_path):
    from audit.db import make_engine

    assert make_engine(f"sqlite:///{tmp_path}/x.db").url.query["mode"] == "rw"
    assert make_engine(f"sqlite:///{tmp_path}/x.db?mode=ro").url.query["mode"] == "ro"


def test_db_upgrade_makes_the_sqlite_file_and_its_folder(tmp_path):
    url = f"sqlite:///{tmp_path}/new/folder/warden.db"
    assert _warden(tmp_path, url, "db", "upgrade").returncode == 0
    result = _warden(tmp_path, url, "audit", "verify")
    assert result.returncode == 0 and "INTACT" in result.stdout


@pytest.mark.parametrize("url", ["postgresql://u@h/d", "postgres://u@h/d", "postgresql+psycopg://u@h/d"])
def test_a_plain_postgres_url_means_psycopg_3_the_driver_warden_ships_with(url):
    from audit.db import make_engine

    engine = make_engine(url)  # connects only when used
    assert engine.url.drivername == "postgresql+psycopg" and engine.url.host == "h"


@pytest.mark.parametrize("url", ["mysql://u@h/d", "postgresql+asyncpg://u@h/d", "postgresql+psycopg2://u@h/d"])
def test_another_database_or_driver_is_refused_before_its_driver_is_imported(url):
    from sqlalchemy.exc import ArgumentError

    from audit.db import make_engine

    with pytest.raises(ArgumentError, match="Warden runs on SQLite or on PostgreSQL through psycopg 3"):
        make_engine(url)


def test_a_postgres_database_without_the_schema_says_to_migrate(tmp_path):
    url = os.environ.get("WARDEN_TEST_DATABASE_URL")
    if not url:
        pytest.skip("needs WARDEN_TEST_DATABASE_URL")  # the SQLite case above covers the logic
    # The test database, seen through a search path where no Warden table is.
    result = _warden(tmp_path, url + "?options=-csearch_path%3Dnowhere", "token", "create", "x", "--scope",
                     "authorize")
    assert result.returncode == 1
    assert 'relation "service_tokens" does not exist' in result.stderr
    assert "run `warden db upgrade` first" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_certificate_and_key_that_are_not_a_pair(tmp_path):
    from tests.test_serve import self_signed

    cert, key = self_signed(tmp_path)
    result = _warden(tmp_path, f"sqlite:///{tmp_path}/w.db", "serve", "--tls-cert", key, "--tls-key", cert)
    assert result.returncode == 2
    assert "are not a certificate and its private key in PEM" in result.stderr


def test_version_names_warden_and_help_offers_only_what_an_operator_can_use():
    from importlib.metadata import version

    from click.testing import CliRunner

    from app import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output == f"warden {version('warden')}\n"
    options = CliRunner().invoke(cli, ["--help"]).output.split("Commands:")[0]
    assert "Show Warden's version" in options and "Flask" not in options
    assert "--app" not in options and "--env-file" not in options and "--debug" not in options


def test_start_is_refused_when_a_signing_key_others_may_read_lies_in_the_key_directory(app, warden):
    """Checked before any key is needed: on a fresh database no person's key exists yet, and the signing
    key is otherwise first read at the first checkpoint (`warden serve` runs this check first)."""
    from pathlib import Path

    from app import preflight
    from audit.signing import LedgerSigner

    preflight(warden)  # nothing exposed: no complaint
    key_dir = Path(app.config["KEY_DIR"])
    LedgerSigner(key_dir).sign(b"x")
    (key_dir / "ledger-signing.pem").chmod(0o644)
    with pytest.raises(click.ClickException, match=f"^refusing to start: key file {key_dir / 'ledger-signing.pem'} "
                                                   "is open to other users \\(mode 644\\); run: chmod 600 "):
        preflight(warden)
