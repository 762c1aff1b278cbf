"""The shared SQLAlchemy metadata and the engine factory every Warden process uses."""

import os
from urllib.parse import quote

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase

# One naming convention so constraints get the same names on SQLite and Postgres.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base whose metadata Alembic compares against the migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Execution option: a transaction that only reads (verify, export) on SQLite.
READ_ONLY = {"warden_read_only": True}


# The databases Warden runs on, by URL scheme; plain Postgres schemes mean psycopg 3, the driver it ships with.
_DRIVERS = {"sqlite": "sqlite", "sqlite+pysqlite": "sqlite", "postgresql+psycopg": "postgresql+psycopg",
            "postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def make_engine(url: str, *, create: bool = False, **kwargs) -> Engine:
    """Return an engine for `url`; SQLite gets WAL, full fsync and write-locking transactions.
    A SQLite file is opened, never made, unless `create` (migrations): a mistyped path then fails
    (`sqlite3.OperationalError`, see `missing_sqlite_file`) instead of leaving an empty database behind.
    Raises ArgumentError for a URL that names another database or driver."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ArgumentError(f"Warden runs on SQLite or on PostgreSQL through psycopg 3, not {parsed.drivername!r}")
    url = parsed.set(drivername=driver)
    if driver == "sqlite":
        path = sqlite_file(url)
        if path is not None and not create:
            url = url.set(database=f"file:{quote(os.path.abspath(path))}",
                          query={"mode": "rw", **url.query, "uri": "true"})  # a mode the URL gives wins
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    # Sized for a gunicorn worker's threads plus the ledger writer, so requests never
    # queue for a connection or churn through overflow ones. No pre-ping: a round trip
    # per checkout halves throughput; a dead connection fails its request (a deny) once.
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def sqlite_file(url) -> str | None:
    """The file a SQLite URL names, or None (another database, memory, or a URI form already)."""
    url = make_url(url)
    path = url.database
    if _DRIVERS.get(url.drivername) != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def missing_sqlite_file(url: str) -> str | None:
    """The path of the SQLite file `url` names when there is none, else None (also when it cannot be
    looked at: that is another problem than a missing file)."""
    path = sqlite_file(url)
    if path is None:
        return None
    try:
        os.stat(path)
    except FileNotFoundError:
        return path
    except OSError:
        pass
    return None


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control from the driver so BEGIN IMMEDIATE below is honoured.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed ledger record survives power loss, not only a crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A writer takes the database lock at BEGIN, so reading the chain head and
        # appending after it can never race another writer (no SQLITE_BUSY upgrade).
        read_only = conn.get_execution_options().get("warden_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
