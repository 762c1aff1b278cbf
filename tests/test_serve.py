"""`warden serve` for real: TLS 1.3 only, and logs in daily files that the purge removes."""

import datetime
import os
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app import upgrade_database
from tests.conftest import free_port, wait_for_port
from audit.logfiles import DailyFileHandler, purge_logs


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


@pytest.fixture
def tls_server(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    upgrade_database(url)
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {**os.environ, "WARDEN_DATABASE_URL": url, "WARDEN_KEY_DIR": str(tmp_path / "keys"),
           "WARDEN_LOG_DIR": str(tmp_path / "logs")}
    server = subprocess.Popen([sys.executable, "-c", "import app; app.main()", "serve", "--port", str(port),
                               "--workers", "1", "--tls-cert", cert, "--tls-key", key],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield port, cert, tmp_path / "logs"
    server.terminate()
    server.wait(timeout=30)


def client_context(cert: str, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cert)
    context.minimum_version = context.maximum_version = version
    return context


def test_tls13_is_served_and_tls12_refused(tls_server):
    port, cert, logs = tls_server
    url = f"https://localhost:{port}/healthz"
    with urllib.request.urlopen(url, context=client_context(cert, ssl.TLSVersion.TLSv1_3), timeout=10) as r:
        assert r.status == 200
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url, context=client_context(cert, ssl.TLSVersion.TLSv1_2), timeout=10)
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    log = logs / f"warden-{today}.log"
    deadline = time.monotonic() + 10  # access lines are written within a second
    while "GET /healthz" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "GET /healthz" in log.read_text()


def test_daily_log_files_are_purged_after_retention(tmp_path):
    import logging
    handler = DailyFileHandler(tmp_path)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello alice", None, None)
    handler.emit(record)
    handler.close()
    today = datetime.date.today()
    old = tmp_path / f"warden-{(today - datetime.timedelta(days=31)).isoformat()}.log"
    old.write_text("old\n")
    (tmp_path / "unrelated.txt").write_text("kept")
    assert purge_logs(tmp_path, 30, today=today) == [old.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.txt", f"warden-{today.isoformat()}.log"]


def test_access_lines_are_held_a_moment_then_written_whole(tmp_path):
    import logging
    import time
    handler = DailyFileHandler(tmp_path, flush_seconds=0.2)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = tmp_path / f"warden-{datetime.datetime.now(datetime.timezone.utc).date().isoformat()}.log"

    def emit(message, level=logging.INFO):
        handler.handle(logging.LogRecord("gunicorn.access", level, __file__, 1, message, None, None))

    for n in range(3):
        emit(f"GET /{n}")
    assert not log.exists() or log.read_text() == ""  # held, not yet written
    emit("something went wrong", logging.WARNING)  # a warning writes at once, with what was held
    assert log.read_text() == "GET /0\nGET /1\nGET /2\nsomething went wrong\n"
    emit("GET /later")
    deadline = time.monotonic() + 5
    while "GET /later" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().endswith("GET /later\n")  # the flusher wrote it, with no further request
    emit("GET /last")
    handler.close()
    assert log.read_text().endswith("GET /later\nGET /last\n")


def test_a_failed_open_at_midnight_never_closes_someone_elses_descriptor(tmp_path):
    import logging
    import shutil
    handler = DailyFileHandler(tmp_path / "logs")
    handler.handleError = lambda record: None  # the failure is the point here; logging would print it
    yesterday = datetime.datetime(2026, 11, 28, 23, 59, tzinfo=datetime.timezone.utc).timestamp()

    def emit(at: float):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "line", None, None)
        record.created = at
        handler.emit(record)

    emit(yesterday)
    shutil.rmtree(tmp_path / "logs")  # today's file cannot be opened
    emit(yesterday + 120)  # closes yesterday's file, fails to open today's
    read, write = os.pipe()  # likely given the number yesterday's file had
    emit(yesterday + 180)  # fails again: must not close that number a second time
    os.write(write, b"still mine")
    assert os.read(read, 10) == b"still mine"
    os.close(read)
    os.close(write)
    handler.close()
