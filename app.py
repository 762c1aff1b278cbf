"""Composition root: configuration, database, services, blueprints and the `warden` CLI."""

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
from flask import Flask
from flask import current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext
from sqlalchemy import Engine

DEFAULT_RETENTION_DAYS = 30
MAX_BODY_BYTES = 2 * 1024 * 1024


@dataclass
class Warden:
    """The services one app instance owns, reachable as `app.extensions["warden"]`."""

    engine: Engine
    ledger: object
    signer: object
    checkpoints: object
    policies: object
    tokens: object
    committer: object
    decisions: object
    vault: object
    privacy: object
    accounts: object
    mfa: object
    sessions: object
    outcomes: object
    review: object
    scoring: object

    def authenticate(self, token: str | None, memory_only: bool = False):
        """Return the caller a bearer token belongs to, or None (`memory_only`: see TokenService.check)."""
        return self.tokens.check(token, memory_only)


def scoring_lock_file(app: Flask) -> str:
    """The lock that lets one process per host score: one per database, so two Warden instances on
    one host (a demo beside a real one) each score their own ledger."""
    database = hashlib.sha256(app.config["DATABASE_URL"].encode("utf-8")).hexdigest()[:16]
    return os.path.join(app.instance_path, f"scoring-{database}.lock")


def target_metadata():
    """Return the metadata of every table, for Alembic and the schema test."""
    import audit.models  # noqa: F401  (registers the tables)
    import authz.models  # noqa: F401
    import detectors.models  # noqa: F401
    from audit.db import Base

    return Base.metadata


def create_app(config: dict | None = None) -> Flask:
    """Return a configured Warden app; `config` overrides the environment (tests use it)."""
    app = Flask(__name__, instance_relative_config=True, static_folder=None)
    app.json.sort_keys = False  # answers read in the order the contract lists their fields
    _configure(app, config or {})
    _configure_services(app)
    _configure_http(app)
    _configure_cli(app)
    return app


def database_url(instance: Path | None = None) -> str:
    """WARDEN_DATABASE_URL, else the SQLite file in the instance folder (Flask's, unless given)."""
    if url := os.environ.get("WARDEN_DATABASE_URL"):
        return url
    instance = instance if instance is not None else Path(Flask(__name__).instance_path)
    return f"sqlite:///{instance / 'warden.db'}"


def _configure(app: Flask, overrides: dict) -> None:
    env = os.environ
    instance = Path(overrides.get("INSTANCE_PATH", app.instance_path))
    app.config.update(
        DATABASE_URL=database_url(instance),
        KEY_DIR=env.get("WARDEN_KEY_DIR") or str(instance / "keys"),
        MASTER_KEYS=env.get("WARDEN_MASTER_KEYS"),
        LOG_DIR=env.get("WARDEN_LOG_DIR") or str(instance / "logs"),
        RETENTION_DAYS=env.get("WARDEN_RETENTION_DAYS", DEFAULT_RETENTION_DAYS),
        MODEL=env.get("WARDEN_MODEL"),
        CHECKPOINT_EVERY=env.get("WARDEN_CHECKPOINT_EVERY", 10_000),
        CHECKPOINT_SECONDS=env.get("WARDEN_CHECKPOINT_SECONDS", 300),
        CHECKPOINT_DIR=env.get("WARDEN_CHECKPOINT_DIR"),
        PURGE_INTERVAL_HOURS=env.get("WARDEN_PURGE_INTERVAL_HOURS", 24),
        DETECT_SECONDS=env.get("WARDEN_DETECT_SECONDS", 60),
        BACKGROUND_JOBS=False,
        MFA_MAX_FAILURES=env.get("WARDEN_MFA_MAX_FAILURES", 100),
        SESSION_COOKIE_SECURE=env.get("WARDEN_COOKIE_SECURE", "1") != "0",
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    app.config.update(overrides)
    for key, low in (("RETENTION_DAYS", 1), ("CHECKPOINT_EVERY", 1), ("CHECKPOINT_SECONDS", 1),
                     ("PURGE_INTERVAL_HOURS", 0), ("DETECT_SECONDS", 0), ("MFA_MAX_FAILURES", 1)):
        app.config[key] = _whole_number(key, app.config[key], low)


def _whole_number(key: str, value, low: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise click.UsageError(f"WARDEN_{key} must be a whole number, got {value!r}") from None
    if number < low:
        raise click.UsageError(f"WARDEN_{key} must be at least {low}, got {number}")
    return number


def _model_text(path: str | None) -> str:
    from authz.model_file import bundled_model_text, check_model

    if not path:
        return bundled_model_text()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.UsageError(f"WARDEN_MODEL: cannot read {path}: {exc.strerror}") from None
    try:
        check_model(text)
    except ValueError as exc:
        raise click.UsageError(f"WARDEN_MODEL {path}: {exc}") from None
    return text


def _configure_services(app: Flask) -> None:
    from audit.checkpoints import Checkpoints
    from audit.db import make_engine
    from audit.group_commit import GroupCommitter
    from audit.ledger import Ledger
    from audit.outcomes import OutcomeService
    from audit.privacy import PrivacyService
    from audit.keyring import Keyring
    from audit.signing import LedgerSigner
    from audit.subject_cache import SubjectCache
    from audit.vault import Vault
    from authz.accounts import AccountService
    from authz.decisions import DecisionService
    from authz.mfa import Mfa
    from authz.passwords import Passwords
    from authz.sessions import Sessions
    from authz.policy_store import PolicyStore
    from authz.tokens import TokenService
    from detectors.review import ReviewQueue
    from detectors.scoring import Scoring

    engine = make_engine(app.config["DATABASE_URL"])
    ledger = Ledger(engine)
    signer = LedgerSigner(app.config["KEY_DIR"])
    vault = Vault(Keyring(app.config["KEY_DIR"], app.config["MASTER_KEYS"]))
    policies = PolicyStore(engine, ledger, _model_text(app.config["MODEL"]), vault)
    committer = GroupCommitter(engine, ledger)
    checkpoints = Checkpoints(engine, ledger, signer)
    accounts = AccountService(engine, ledger, vault, Passwords())
    mfa = Mfa(engine, accounts, app.config["MFA_MAX_FAILURES"])
    review = ReviewQueue(engine, ledger, vault)
    if app.config["BACKGROUND_JOBS"]:
        _start_ledger_jobs(app, checkpoints)
    scoring = Scoring(engine, ledger, vault, review)
    subjects = SubjectCache(engine, ledger, vault)
    if app.config["BACKGROUND_JOBS"]:
        subjects.start_sweeper()
        if app.config["DETECT_SECONDS"]:
            scoring.start_schedule(app.config["DETECT_SECONDS"], lock_file=scoring_lock_file(app))
    app.extensions["warden"] = Warden(
        engine=engine, ledger=ledger, signer=signer, checkpoints=checkpoints,
        policies=policies, tokens=TokenService(engine, ledger),
        committer=committer, vault=vault,
        decisions=DecisionService(committer, policies, vault, subjects, review=review),
        outcomes=OutcomeService(committer),
        privacy=PrivacyService(engine, ledger, vault,
                               erasers=[policies.erase_person, mfa.forget_person, review.erase_person],
                               holdings={"policy": policies.rows_naming, "review_items": review.items_about},
                               forget_keys=subjects.forget),
        accounts=accounts, mfa=mfa, sessions=Sessions(engine), review=review,
        scoring=scoring,
    )


def _start_ledger_jobs(app: Flask, checkpoints) -> None:
    from audit.jobs import LedgerJobs
    from audit.logfiles import purge_logs
    from audit.retention import purge_ledger

    config, c = app.config, checkpoints
    def purge():
        purge_ledger(c.engine, c.ledger, c.signer, config["RETENTION_DAYS"], actor="schedule")
        purge_logs(config["LOG_DIR"], config["RETENTION_DAYS"])

    LedgerJobs(checkpoints, purge,
               every_records=config["CHECKPOINT_EVERY"], every_seconds=config["CHECKPOINT_SECONDS"],
               purge_hours=config["PURGE_INTERVAL_HOURS"], export_dir=config["CHECKPOINT_DIR"]).start()


def _configure_http(app: Flask) -> None:
    import audit.web
    from audit.api import bp as audit_bp
    from audit.privacy_api import bp as privacy_bp
    from authz.pages import bp as pages_bp
    from authz.policy_api import bp as policy_bp
    from authz.api import bp as authz_bp
    from authz.fast_path import AuthorizeFastPath
    from detectors.api import bp as review_bp
    from detectors.pages import bp as review_pages_bp

    audit.web.install(app)
    app.register_blueprint(audit_bp)
    app.register_blueprint(authz_bp)
    app.register_blueprint(privacy_bp)
    app.register_blueprint(pages_bp)
    app.register_blueprint(policy_bp)
    app.register_blueprint(review_bp)
    app.register_blueprint(review_pages_bp)
    app.wsgi_app = app.extensions["authorize_fast_path"] = AuthorizeFastPath(app, app.wsgi_app)


def _configure_cli(app: Flask) -> None:
    from audit.cli import audit_cli, keys_cli, logs_cli
    from authz.cli import policy_cli, token_cli, user_cli
    from detectors.cli import detect_cli, evidence_command

    for command in (db_cli, audit_cli, keys_cli, logs_cli, policy_cli, token_cli, user_cli, detect_cli,
                    evidence_command, serve_command, demo_command):
        app.cli.add_command(command)


# --- commands that need the whole app -------------------------------------------------

db_cli = AppGroup("db", help="The database schema (Alembic owns it).")


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema to the newest revision."""
    upgrade_database(current_app.config["DATABASE_URL"], revision)
    click.echo(f"database at revision {revision}: {_safe_url(current_app.config['DATABASE_URL'])}")


def upgrade_database(url: str, revision: str = "head") -> None:
    """Run Alembic's upgrade against `url` (a SQLite file is made here, and its folder)."""
    from alembic import command

    from audit.db import sqlite_file
    from migrations import alembic_config

    from sqlalchemy.exc import OperationalError

    path = sqlite_file(url)
    try:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        command.upgrade(alembic_config(url), revision)
    except (OSError, OperationalError) as exc:
        if path is None or (isinstance(exc, OperationalError) and os.path.exists(path)):
            raise  # not about making the file: main() says what it is
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise click.ClickException(f"cannot make a SQLite database at {os.path.abspath(path)}: {detail}") from exc


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _serve_options(f):
    f = click.option("--host", default="127.0.0.1", show_default=True)(f)
    f = click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))(f)
    f = click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
                     help="Worker processes.")(f)
    f = click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
                     help="Threads per worker; concurrent decisions share one ledger commit.")(f)
    f = click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
                     help="PEM certificate; Warden then speaks TLS 1.3 only.")(f)
    f = click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")(f)
    return f


@click.command("serve")
@_serve_options
@with_appcontext
def serve_command(host, port, workers, threads, tls_cert, tls_key) -> None:
    """Serve the HTTP API and pages with gunicorn."""
    check_tls_options(tls_cert, tls_key)
    preflight(current_app.extensions["warden"])
    run_server(host, port, workers, threads, tls_cert, tls_key)


def preflight(warden) -> None:
    """Refuse to start, loudly, when the keys that protect existing data are missing, or any key is
    open to other users."""
    from audit.signing import KeyDirError, refuse_exposed_keys

    try:
        refuse_exposed_keys(Path(warden.vault.keyring.key_dir))
        with warden.engine.connect() as conn:
            warden.vault.check(conn)
    except KeyDirError as exc:
        raise click.ClickException(f"refusing to start: {exc}") from None


def run_server(host: str, port: int, workers: int, threads: int, tls_cert: str | None,
               tls_key: str | None) -> None:
    """Run gunicorn in the foreground; each worker builds its own app (and engine)."""
    from gunicorn.app.base import BaseApplication

    options = {"bind": f"{host}:{port}", "workers": workers, "threads": threads,
               "worker_class": "authz.worker.WardenWorker",
               "accesslog": "-", "logconfig_dict": log_config(current_app.config["LOG_DIR"]),
               "access_log_format": ACCESS_LOG_FORMAT}
    if tls_cert:
        options.update(certfile=tls_cert, keyfile=tls_key, ssl_context=_tls13_context)

    # Gunicorn 25+ opens a control socket in $HOME shared by every instance; Warden does not use it.
    options["control_socket_disable"] = True

    class Server(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(key, value)

        def load(self):
            return create_app({"BACKGROUND_JOBS": True})

    scheme, only = ("https", ", TLS 1.3 only") if tls_cert else ("http", "")
    click.echo(f"Warden listening on {scheme}://{host}:{port} ({workers} workers x {threads} threads{only}); "
               f"access and application logs in {current_app.config['LOG_DIR']}; Ctrl-C stops it.")
    Server().run()


ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def log_config(log_dir: str) -> dict:
    """Gunicorn logging: access and application logs to daily files (purged after retention), errors
    also to the terminal."""
    daily = {"class": "audit.logfiles.DailyFileHandler", "log_dir": log_dir, "formatter": "plain"}
    # Access lines are written a second at a time (see DailyFileHandler); everything else at once.
    access = {**daily, "flush_seconds": 1.0}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"daily": daily, "access": access,
                     "console": {"class": "logging.StreamHandler", "level": "WARNING", "formatter": "plain"}},
        "loggers": {"gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
                    "gunicorn.error": {"handlers": ["daily", "console"], "level": "INFO", "propagate": False}},
        "root": {"handlers": ["daily", "console"], "level": "INFO"},
    }


def check_tls_options(cert: str | None, key: str | None) -> None:
    """Refuse to start with only one of the two, or with a certificate and key that do not load as a
    pair (swapped, wrong key, not PEM): otherwise every handshake would fail, one log line each."""
    import ssl

    if bool(cert) != bool(key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if not cert:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise click.UsageError(f"--tls-cert {cert} and --tls-key {key} are not a certificate and its "
                               f"private key in PEM ({exc.reason or exc})") from None


def _tls13_context(config, default_ssl_context_factory):
    """Gunicorn hook: the default context, refusing anything older than TLS 1.3."""
    import ssl

    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


@click.command("demo")
@with_appcontext
@_serve_options
@click.option("--no-serve", is_flag=True, help="Prepare the demo and print the steps, but do not serve.")
def demo_command(host, port, workers, threads, tls_cert, tls_key, no_serve) -> None:
    """Migrate, seed demo roles, policies and a service token, print the first steps, then serve."""
    from authz.demo import admin_enrolled, demo_instructions, seed_accounts, seed_demo, seed_history

    warden = current_app.extensions["warden"]
    check_tls_options(tls_cert, tls_key)
    upgrade_database(current_app.config["DATABASE_URL"])
    preflight(warden)
    token = seed_demo(warden)
    if seed_history(warden):
        click.echo("Recorded the demo's history and trained the detector on it.")
    passwords = seed_accounts(warden)
    scheme = "https" if tls_cert else "http"
    click.echo(demo_instructions(f"{scheme}://{host}:{port}", token, current_app.config["DATABASE_URL"],
                                 current_app.config["LOG_DIR"], passwords, admin_enrolled(warden)))
    if not no_serve:
        run_server(host, port, workers, threads, tls_cert, tls_key)


@click.group(cls=FlaskGroup, create_app=create_app, load_dotenv=False, set_debug_flag=False)
def cli():
    """Warden: access decisions with a tamper-evident audit ledger."""


# Flask's --app, --env-file and --debug options mean nothing for Warden (the app is fixed, config comes
# from WARDEN_* variables): keep `warden --help` to what a Warden operator can use.
cli.params = [param for param in cli.params if param.name not in ("app", "env_file", "debug", "version")]
click.version_option(package_name="warden", prog_name="warden", message="%(prog)s %(version)s",
                     help="Show Warden's version and exit.")(cli)


def main() -> None:
    """Entry point of the `warden` console script."""
    if len(sys.argv) > 1 and sys.argv[1] in ("serve", "demo") and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Gunicorn workers are processes: their metrics are summed through files in a fresh folder,
        # which must be named before prometheus_client is first imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="warden-metrics-")
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    try:
        cli(prog_name="warden")
    except (ArgumentError, NoSuchModuleError, DBAPIError) as exc:
        click.echo(f"Error: {database_problem(exc)}", err=True)
        sys.exit(1)


def database_problem(exc: Exception) -> str:
    """One line for an operator, instead of a traceback, when the database is missing, unreachable,
    not migrated, or named by a URL nobody can use."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    url = os.environ.get("WARDEN_DATABASE_URL")
    where = f"the database at {_safe_url(url)}" if url and "://" in url else "the database"
    url = url or database_url()
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if isinstance(exc, (ArgumentError, NoSuchModuleError)) or isinstance(getattr(exc, "orig", None), ValueError):
        return (f"WARDEN_DATABASE_URL is not a database URL Warden can use ({detail}); use "
                "sqlite:///path/to/warden.db or postgresql+psycopg://user@host:5432/dbname")
    from audit.db import missing_sqlite_file

    if "://" in url and (path := missing_sqlite_file(url)) is not None:
        return (f"there is no SQLite database at {os.path.abspath(path)}: run `warden db upgrade` first "
                "(it makes one)")
    missing = ("no such table", "no such column", "does not exist", "undefined")
    if any(word in detail.lower() for word in missing) and "database" not in detail.lower():
        return f"{where} has no Warden schema, or an older one ({detail}): run `warden db upgrade` first"
    return f"cannot use {where}: {detail}"
