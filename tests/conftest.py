"""Fixtures: an app per test on SQLite (and on Postgres when WARDEN_TEST_DATABASE_URL is set).

Migrations run once per session and backend; each test then gets an empty
database: a copy of the migrated SQLite file, or the Postgres tables emptied.
Set WARDEN_REQUIRE_POSTGRES=1 (CI does) to make a missing server a failure.
"""

import os
import shutil
import socket
import time

import pytest
from sqlalchemy import text

from app import create_app, upgrade_database
from audit.chain import GENESIS_HASH
from audit.db import READ_ONLY, make_engine
from authz.rules import parse_policy_csv

PG_URL = os.environ.get("WARDEN_TEST_DATABASE_URL", "")
PG_REQUIRED = os.environ.get("WARDEN_REQUIRE_POSTGRES") == "1"
PG_HOWTO = ("Postgres tests skipped: set WARDEN_TEST_DATABASE_URL="
            "postgresql+psycopg://postgres@127.0.0.1:5432/warden_test (after `createdb warden_test`)")

# Tables emptied between Postgres tests, children first.
DATA_TABLES = ("ledger_records", "ledger_checkpoints", "ledger_seals", "policy_rules", "service_tokens",
               "subject_keys", "privacy_requests", "web_sessions", "recovery_codes", "accounts", "review_items")


def _postgres_or_skip() -> str:
    if not PG_URL:
        if PG_REQUIRED:
            pytest.fail("WARDEN_REQUIRE_POSTGRES=1 but WARDEN_TEST_DATABASE_URL is not set")
        pytest.skip(PG_HOWTO)
    return PG_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "warden.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_migrated():
    url = _postgres_or_skip()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade_database(url)
    return url


def reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        # As a superuser may: replica mode skips the ledger's append-only triggers.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY"))
        conn.execute(text("UPDATE ledger_head SET seq = 0, hash = :h, epoch = 0"), {"h": GENESIS_HASH})
        conn.execute(text("UPDATE detector_state SET scored_through = 0, baseline = NULL"))
        conn.execute(text("UPDATE policy_state SET version = 0"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """The URL of an empty, migrated database, once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "warden.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_migrated")
    reset_postgres(url)
    return url


@pytest.fixture
def app(database_url, tmp_path, monkeypatch, request):
    for name in ("WARDEN_DATABASE_URL", "WARDEN_KEY_DIR", "WARDEN_MODEL", "WARDEN_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "INSTANCE_PATH": str(tmp_path),
                      "KEY_DIR": str(tmp_path / "keys"), "SESSION_COOKIE_SECURE": False,
                      "MFA_MAX_FAILURES": 12, **getattr(request, "param_overrides", {})})
    yield app
    app.extensions["warden"].committer.close()
    app.extensions["warden"].engine.dispose()


@pytest.fixture
def warden(app):
    return app.extensions["warden"]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make_token(warden):
    """Return a function creating a service token with the given scopes."""
    counter = iter(range(10_000))

    def make(*scopes: str) -> str:
        return warden.tokens.create(f"svc-{next(counter)}", list(scopes or ("authorize",)), actor="test")
    return make


@pytest.fixture
def load_policy(warden):
    """Return a function loading Casbin CSV text into the app's policy store."""
    def load(csv_text: str, replace: bool = True):
        return warden.policies.apply(parse_policy_csv(csv_text), replace=replace, actor="test")
    return load


@pytest.fixture
def auth(make_token):
    """Headers carrying a token with the `authorize` scope."""
    return {"Authorization": f"Bearer {make_token('authorize')}"}


def tamper(engine, statement: str, **params) -> None:
    """Run `statement` as an attacker with database superuser rights would: triggers off."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE ledger_records DISABLE TRIGGER USER"))
        conn.execute(text(statement), params)
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE ledger_records ENABLE TRIGGER USER"))


@pytest.fixture
def verify(warden):
    """Return a function verifying the app's ledger (keyword arguments go to verify_ledger)."""
    from audit.verify import verify_ledger

    return lambda **kwargs: verify_ledger(warden.engine, warden.signer, **kwargs)


def ledger_rows(engine):
    """Return every stored ledger row, in seq order."""
    with engine.connect().execution_options(**READ_ONLY) as conn:
        return conn.execute(text("SELECT seq, prev_hash, hash, kind, body FROM ledger_records ORDER BY seq")).all()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Return once something accepts connections on `port`, or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listens on port {port} after {timeout:.0f}s")
