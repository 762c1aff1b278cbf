"""`warden serve`'s worker for real: `/v1/authorize` answered by the ledger writer once the record is
committed, on kept-alive and pipelined connections, in order, failing closed, over TLS too."""

import http.client
import json
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import types
import urllib.request
import uuid

import pytest

from authz.worker import WardenWorker
from tests.authz.test_api import break_ledger, mend_ledger
from tests.conftest import free_port, ledger_rows, wait_for_port
from tests.test_serve import client_context, self_signed

POLICY = "p, role:engineer, prod, db/*, read, maintenance, allow\ng, alice, role:engineer, *\n"
ALLOWED = {"subject": "alice", "domain": "prod", "object": "db/customers", "action": "read",
           "context": {"workflow": "maintenance"}}


def start(warden, tmp_path, database_url, *extra, threads: int = 4):
    port = free_port()
    env = {**os.environ, "WARDEN_DATABASE_URL": database_url, "WARDEN_KEY_DIR": str(tmp_path / "keys"),
           "WARDEN_LOG_DIR": str(tmp_path / "logs"), "WARDEN_DETECT_SECONDS": "0",
           "WARDEN_PURGE_INTERVAL_HOURS": "0"}
    server = subprocess.Popen([sys.executable, "-c", "import app; app.main()", "serve", "--port", str(port),
                               "--workers", "1", "--threads", str(threads), *extra],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return server, port


def stop(server):
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def served(warden, load_policy, make_token, database_url, tmp_path):
    """A `warden serve` on the test database: (port, token)."""
    load_policy(POLICY)
    token = make_token("authorize")
    server, port = start(warden, tmp_path, database_url)
    yield port, token
    stop(server)


def request_bytes(token: str | None, body: bytes, *headers: str) -> bytes:
    lines = ["POST /v1/authorize HTTP/1.1", "Host: warden", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *headers]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict, dict]]:
    """(status, headers, JSON body) of `count` answers read off `sock`, in the order they came."""
    reader = sock.makefile("rb")
    answers = []
    for _ in range(count):
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline().strip()):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        answers.append((status, headers, json.loads(reader.read(int(headers["content-length"])))))
    return answers


def test_kept_alive_requests_are_each_answered_after_their_record(served, warden, verify, tmp_path):
    port, token = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    seqs = []
    for _ in range(5):
        conn.request("POST", "/v1/authorize", json.dumps(ALLOWED),
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200 and response.getheader("Connection") == "keep-alive"
        assert answer["allowed"] is True
        seqs.append(answer["audit_seq"])
    conn.close()
    assert seqs == sorted(set(seqs))
    recorded = {row.seq: row.kind for row in ledger_rows(warden.engine)}
    assert all(recorded[seq] == "decision" for seq in seqs)  # each answer names its own record
    assert verify().ok
    line = f'"POST /v1/authorize HTTP/1.1" 200 {len(json.dumps(answer, separators=(",", ":"))) + 1}'
    deadline = time.monotonic() + 10  # access lines are written within a second
    logged = ""
    while logged.count(line) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
        logged = "".join(path.read_text() for path in (tmp_path / "logs").glob("warden-*.log"))
    assert logged.count(line) == 5


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "one-at-a-time"])
def test_requests_on_one_connection_are_answered_in_order_and_errors_by_flask(served, pipelined):
    """Pipelined requests are read from the buffer by pool threads; sent one at a time on a kept-alive
    connection, the poller decides them itself and hands Flask's answers (400, 401) to the pool."""
    port, token = served
    good = json.dumps(ALLOWED).encode()
    requests = [request_bytes(token, good), request_bytes(token, b"{not json"), request_bytes(None, good),
                request_bytes(token, good), request_bytes(token, good, "Connection: close")]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if pipelined:
            sock.sendall(b"".join(requests))
            answers = read_answers(sock, 5)
        else:
            answers = []
            for request in requests:
                sock.sendall(request)
                answers += read_answers(sock, 1)
        assert sock.recv(1) == b""  # closed after the answer to `Connection: close`
    assert [status for status, _, _ in answers] == [200, 400, 401, 200, 200]
    assert answers[1][2]["error"]["code"] == "bad_json"
    assert answers[2][2]["error"]["code"] == "unauthorized"
    assert answers[0][2]["audit_seq"] < answers[3][2]["audit_seq"] < answers[4][2]["audit_seq"]
    assert answers[4][1]["connection"] == "close"


def test_a_kept_alive_client_is_answered_while_the_only_pool_thread_is_held(
        warden, load_policy, make_token, database_url, tmp_path):
    """The poller decides a whole authorize on a kept-alive connection itself, so a client that
    never finishes its body, holding the one pool thread, does not hold up everyone else."""
    load_policy(POLICY)
    token = make_token("authorize")
    server, port = start(warden, tmp_path, database_url, threads=1)
    request = request_bytes(token, json.dumps(ALLOWED).encode())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as kept, \
                socket.create_connection(("127.0.0.1", port), timeout=5) as stalled:
            kept.sendall(request)
            assert read_answers(kept, 1)[0][0] == 200  # a first request goes through the pool
            stalled.sendall(request[:-5])  # the pool thread now waits for the rest of this body
            time.sleep(0.3)
            for _ in range(3):
                kept.sendall(request)
                ((status, _, answer),) = read_answers(kept, 1)
                assert status == 200 and answer["allowed"] is True
            stalled.sendall(request[-5:])
            assert read_answers(stalled, 1)[0][0] == 200
    finally:
        stop(server)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # SQLite's write lock is a wait easily made
def test_a_decision_that_needs_the_database_waits_on_a_pool_thread_not_the_poller(served, warden):
    """The poller decides only from what memory holds. A person seen for the first time needs a key
    made (a database write): while the database is locked, that request waits on a pool thread, and
    the worker goes on serving everyone else."""
    port, token = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
        kept.sendall(request_bytes(token, json.dumps(ALLOWED).encode()))
        assert read_answers(kept, 1)[0][0] == 200  # the token is cached now
        lock = sqlite3.connect(warden.engine.url.database, uri=True, isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        try:
            kept.sendall(request_bytes(token, json.dumps({**ALLOWED, "subject": f"new-{uuid.uuid4().hex}"}).encode()))
            time.sleep(0.3)
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
                assert response.status == 200
            assert time.monotonic() - started < 2
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        ((status, _, answer),) = read_answers(kept, 1)
    assert status == 200 and answer["allowed"] is False and answer["audit_seq"] > 0


def test_the_rest_of_an_answer_waits_for_the_client_on_a_socket_left_non_blocking():
    """A request decided on the poller thread leaves its socket non-blocking; what the first send did
    not take, a pool thread writes, waiting for the client rather than failing."""
    server, client = socket.socketpair()
    server.setblocking(False)
    rest, received, written = b"x" * 1_000_000, bytearray(), []

    def read_all():
        while len(received) < len(rest):
            received.extend(client.recv(65536))
    reader = threading.Thread(target=read_all)
    reader.start()
    given_back = []
    worker = types.SimpleNamespace(_written=lambda *args: written.append(args[-1]) or True,
                                   _give_back=lambda conn, keep_alive: given_back.append(keep_alive))
    try:
        WardenWorker._send_rest(worker, types.SimpleNamespace(sock=server), None, None, {}, None, 42, rest)
        reader.join(10)
    finally:
        server.close()
        client.close()
    assert written == [42] and given_back == [True] and bytes(received) == rest


def test_a_client_that_does_not_close_its_side_holds_up_nobody(served):
    """A connection the server closes lingers (RFC 9112 9.6: the client's unread bytes must not turn
    the close into a reset that loses the answer), but on the poller, not in a thread that waits:
    kept-alive clients are answered meanwhile, and the closed-on client gets its whole answer."""
    port, token = served
    good = json.dumps(ALLOWED).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
        kept.sendall(request_bytes(token, good))
        assert read_answers(kept, 1)[0][0] == 200
        lingering = []
        try:
            for _ in range(3):  # each answered, then closed by the server; the client says nothing more
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                lingering.append(sock)
                sock.sendall(request_bytes(token, good, "Connection: close") + b"unread bytes after it")
            waits = []
            for _ in range(5):
                started = time.monotonic()
                kept.sendall(request_bytes(token, good))
                assert read_answers(kept, 1)[0][0] == 200
                waits.append(time.monotonic() - started)
            assert max(waits) < 0.5, waits
            for sock in lingering:
                ((status, headers, _),) = read_answers(sock, 1)
                assert status == 200 and headers["connection"] == "close"
                assert sock.recv(1) == b""  # the server's side is shut: the answer was all
        finally:
            for sock in lingering:
                sock.close()


def test_a_request_that_arrives_in_pieces_is_answered(served):
    """What the poller finds is not yet a whole request: a pool thread reads the rest."""
    port, token = served
    request = request_bytes(token, json.dumps(ALLOWED).encode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        read_answers(sock, 1)
        for cut in ((0, 10), (10, 60), (60, len(request) - 3), (len(request) - 3, len(request))):
            sock.sendall(request[cut[0]:cut[1]])
            time.sleep(0.1)
        ((status, _, answer),) = read_answers(sock, 1)
    assert status == 200 and answer["allowed"] is True


def read_head(sock: socket.socket) -> list[str]:
    """The status line and header lines of one answer (its body read and dropped)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)
    lines = data.decode("latin-1").split("\r\n")[:-2]
    length = int(next(line.split(":")[1] for line in lines if line.lower().startswith("content-length")))
    while length:
        length -= len(sock.recv(length))
    return lines


def test_the_poller_writes_the_head_gunicorn_writes(warden, load_policy, make_token, database_url, tmp_path):
    """A connection's first request is parsed by gunicorn on a pool thread, the next ones by the poller's
    narrow parser (the one pool thread is held meanwhile): the heads are the same, but for the date."""
    load_policy(POLICY)
    token = make_token("authorize")
    server, port = start(warden, tmp_path, database_url, threads=1)
    request = request_bytes(token, json.dumps(ALLOWED).encode(), "X-Request-Id: same")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
                socket.create_connection(("127.0.0.1", port), timeout=5) as stalled:
            sock.sendall(request)
            heads = [read_head(sock)]
            stalled.sendall(request[:-5])  # the pool thread waits for the rest of this body
            time.sleep(0.3)
            sock.sendall(request)
            heads.append(read_head(sock))
            sock.sendall(request_bytes(token, json.dumps(ALLOWED).encode(), "Connection: close"))
            closing = read_head(sock)
            assert sock.recv(1) == b""
            stalled.sendall(request[-5:])
            assert read_answers(stalled, 1)[0][0] == 200
    finally:
        stop(server)
    dates = [[line for line in head if line.startswith("Date: ")] for head in (*heads, closing)]
    assert all(len(date) == 1 and re.fullmatch(r"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", date[0])
               for date in dates)
    heads = [[line for line in head if not line.startswith("Date: ")] for head in heads]
    assert heads[0] == heads[1]
    assert heads[0][:2] == ["HTTP/1.1 200 OK", "Server: gunicorn"] and "Connection: keep-alive" in heads[0]
    assert "Connection: close" in closing


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # parsing, not the database
def test_a_request_the_narrow_parser_leaves_alone_is_answered_by_gunicorns(served, warden):
    """gunicorn drops a field whose name has "_" (so X_Request_Id cannot pose as X-Request-Id) and
    refuses a folded one; the poller's parser leaves both to it, and takes the plain X-Request-Id."""
    port, token = served
    body = json.dumps(ALLOWED).encode()
    sent = [request_bytes(token, body, "X-Request-Id: plain-id"), request_bytes(token, body, "X_Request_Id: posing"),
            request_bytes(token, body, "X-Latin: caf\xe9"), request_bytes(token, body, "X-Folded: a", " b")]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes(token, body))
        read_answers(sock, 1)
        statuses = []
        for request in sent:
            sock.sendall(request)
            statuses += [status for status, _, _ in read_answers(sock, 1)]
    assert statuses == [200, 200, 200, 400]
    bodies = [str(row.body) for row in ledger_rows(warden.engine)]
    assert any("plain-id" in body for body in bodies) and not any("posing" in body for body in bodies)


def test_concurrent_clients_each_get_their_own_record(served, warden, verify):
    port, token = served
    seqs, failures = [], []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(25):
            conn.request("POST", "/v1/authorize", json.dumps(ALLOWED),
                         {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            response = conn.getresponse()
            body = json.loads(response.read())
            if response.status != 200:
                failures.append(body)
            seqs.append(body.get("audit_seq"))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(set(seqs)) == 200
    assert verify().ok


def test_no_durable_record_means_503_then_service_resumes(served, warden):
    port, token = served
    before = ledger_rows(warden.engine)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    break_ledger(warden.engine)
    try:
        conn.request("POST", "/v1/authorize", json.dumps(ALLOWED), headers)
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        mend_ledger(warden.engine)
    assert response.status == 503
    assert answer["allowed"] is False and answer["error"]["code"] == "audit_unavailable"
    assert ledger_rows(warden.engine) == before
    conn.request("POST", "/v1/authorize", json.dumps(ALLOWED), headers)  # same connection, kept alive
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["allowed"] is True
    conn.close()


def test_a_decision_that_opens_a_review_item_names_it(served, warden):
    port, token = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/authorize", json.dumps({**ALLOWED, "context": {"workflow": "break-glass"}}),
                 {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    conn.close()
    assert answer["review"]["detector"] == "break_glass"
    items, _ = warden.review.list()
    assert [item["id"] for item in items] == [answer["review"]["id"]]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # TLS is the same on every database
def test_answers_go_out_over_tls_too(warden, load_policy, make_token, database_url, tmp_path):
    load_policy(POLICY)
    token = make_token("authorize")
    cert, key = self_signed(tmp_path)
    server, port = start(warden, tmp_path, database_url, "--tls-cert", cert, "--tls-key", key)
    try:
        conn = http.client.HTTPSConnection("localhost", port, timeout=10,
                                           context=client_context(cert, ssl.TLSVersion.TLSv1_3))
        for _ in range(3):
            conn.request("POST", "/v1/authorize", json.dumps(ALLOWED),
                         {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["allowed"] is True
        conn.close()
    finally:
        stop(server)


# It needs a commit that takes a while: a Postgres trigger that sleeps.
@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_no_pool_thread_waits_for_a_commit(warden, load_policy, make_token, database_url, tmp_path):
    """With one pool thread, gthread could only ever commit one decision at a time: the thread
    sleeps until its commit is done. Here the thread decides the next requests while the writer
    commits, so they share the next batch."""
    load_policy(POLICY)
    token = make_token("authorize")
    engine = warden.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$")
        conn.exec_driver_sql("CREATE TRIGGER slow AFTER INSERT ON ledger_records "
                             "FOR EACH STATEMENT EXECUTE FUNCTION slow()")
    try:
        server, port = start(warden, tmp_path, database_url, threads=1)
        try:
            _concurrently(port, token, clients=6)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                metrics = response.read().decode()
        finally:
            stop(server)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER slow ON ledger_records")
            conn.exec_driver_sql("DROP FUNCTION slow()")
    batches = re.search(r"^warden_ledger_batch_records_count (\S+)$", metrics, re.M)
    records = re.search(r"^warden_ledger_batch_records_sum (\S+)$", metrics, re.M)
    assert float(records.group(1)) == 6
    assert float(batches.group(1)) < 6  # six decisions, fewer commits
    assert re.search(r'^warden_decisions_total\{allowed="true"\} 6\.0$', metrics, re.M)  # counted in the worker


def _concurrently(port: int, token: str, clients: int) -> None:
    """`clients` authorize requests at once, each on its own connection; each must be allowed."""
    statuses = []

    def one():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/authorize", json.dumps(ALLOWED),
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        conn.close()
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * clients


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # gunicorn's own answers, not the database's
def test_what_gunicorn_refuses_itself_is_answered_in_warden_json_too(served):
    port, token = served
    bad_header = b"POST /v1/authorize HTTP/1.1\r\nHost: w\r\nContent-Length: 2\r\nBad Header: x\r\n\r\n{}"
    for request, status in ((b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: w\r\n\r\n", 414),
                            (b"GET / HTTP/1.1\r\nHost: w\r\nBad Header\r\n\r\n", 400),
                            (bad_header, 400)):
        for kept_alive in (False, True):  # on a kept-alive connection, the poller parses an authorize
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                if kept_alive:
                    sock.sendall(request_bytes(token, json.dumps(ALLOWED).encode()))
                    assert read_answers(sock, 1)[0][0] == 200
                sock.sendall(request)
                ((got, headers, body),) = read_answers(sock, 1)
                assert sock.recv(1) == b""
            assert got == status and headers["content-type"] == "application/json"
            assert set(body["error"]) == {"code", "message"}


class _StubResponse:
    """What _write_answers reads of a Response."""

    headers: list = []

    def start_response(self, status, headers):
        self.status, self.headers = status, headers

    def default_headers(self):
        return [f"HTTP/1.1 {self.status}\r\n"]


def test_answers_queued_while_the_poller_dispatches_events_are_written_before_the_next_event():
    """A batch of events can hold dozens of requests to decide; an answer committed meanwhile goes out after
    the event in hand, not after the method queue's turn. Its wake-up still comes, and finds nothing left."""
    from collections import deque

    deferred, finished, order = [], [], []
    worker = types.SimpleNamespace(
        _unwritten=deque(), _writing_due=False, method_queue=types.SimpleNamespace(defer=deferred.append),
        _written=lambda req, resp, environ, started, length: True, _poller_thread=None, _loop_commit=None,
        finish_request=lambda conn, fs: finished.append(conn))
    worker._drain_answers = lambda: WardenWorker._drain_answers(worker)
    worker._write_answers = lambda: WardenWorker._write_answers(worker)
    server, client = socket.socketpair()
    try:
        conn = types.SimpleNamespace(sock=server)

        def first_event(fileobj):  # the ledger writer answers while the poller decides this one
            order.append("decide 1")
            WardenWorker._answer(worker, conn, None, _StubResponse(), {}, None, "200 OK", b"{}")

        def second_event(fileobj):
            order.append(f"decide 2, {len(finished)} answer(s) written")

        keys = [(types.SimpleNamespace(data=callback, fileobj=None), None) for callback in (first_event, second_event)]
        worker.poller = types.SimpleNamespace(select=lambda timeout: keys)
        WardenWorker.wait_for_and_dispatch_events(worker, 1.0)
        assert order == ["decide 1", "decide 2, 1 answer(s) written"] and finished == [conn]
        assert client.recv(100) == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        assert len(deferred) == 1 and worker._writing_due  # the wake-up asked for is still to run
        deferred[0]()
        assert finished == [conn] and not worker._writing_due  # it wrote nothing twice
    finally:
        server.close()
        client.close()


def test_a_batch_of_answers_wakes_the_poller_once_and_each_is_written():
    """The ledger writer queues a batch's answers one after another; only the first wakes the poller, whose
    run writes every one queued by then and puts each connection back. An answer queued after that run
    began wakes it again."""
    from collections import deque

    deferred, finished = [], []
    worker = types.SimpleNamespace(
        _unwritten=deque(), _writing_due=False, method_queue=types.SimpleNamespace(defer=deferred.append),
        _written=lambda req, resp, environ, started, length: length == 2, _poller_thread=None,
        finish_request=lambda conn, fs: finished.append((conn, fs.result())))
    worker._drain_answers = lambda: WardenWorker._drain_answers(worker)
    worker._write_answers = lambda: WardenWorker._write_answers(worker)
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        conns = [types.SimpleNamespace(sock=server) for server, _ in pairs]
        for conn in conns[:3]:
            WardenWorker._answer(worker, conn, None, _StubResponse(), {}, None, "200 OK", b"{}")
        assert len(deferred) == 1 and len(worker._unwritten) == 3 and not finished
        deferred[0]()  # the poller's run
        assert finished == [(conn, True) for conn in conns[:3]] and not worker._unwritten
        assert [client.recv(100) for _, client in pairs[:3]] == [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"] * 3
        WardenWorker._answer(worker, conns[3], None, _StubResponse(), {}, None, "200 OK", b"{}")
        assert len(deferred) == 2
    finally:
        for server, client in pairs:
            server.close()
            client.close()


def test_the_pollers_own_batch_goes_out_after_the_round_and_its_answers_need_no_wake_up():
    """On Postgres the poller appends what it decides (audit/loop_commit.py): the round's records are sent
    once every event of the round is handled, and answers told on the poller itself (by its batch's
    outcome, or at once when sending fails) are written before it waits again, without a wake-up."""
    from collections import deque

    deferred, finished, order = [], [], []
    worker = types.SimpleNamespace(
        _unwritten=deque(), _writing_due=False, method_queue=types.SimpleNamespace(defer=deferred.append),
        _written=lambda req, resp, environ, started, length: True, _poller_thread=threading.get_ident(),
        finish_request=lambda conn, fs: finished.append(conn))
    worker._drain_answers = lambda: WardenWorker._drain_answers(worker)
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        conns = [types.SimpleNamespace(sock=server) for server, _ in pairs]

        def send():
            order.append(f"send, {len(finished)} answer(s) written")
            WardenWorker._answer(worker, conns[1], None, _StubResponse(), {}, None, "503 SERVICE UNAVAILABLE", b"{}")

        def batch_committed(fileobj):
            order.append("committed")
            WardenWorker._answer(worker, conns[0], None, _StubResponse(), {}, None, "200 OK", b"{}")

        worker._loop_commit = types.SimpleNamespace(send=send)
        keys = [(types.SimpleNamespace(data=callback, fileobj=None), None)
                for callback in (batch_committed, lambda fileobj: order.append("decide"))]
        worker.poller = types.SimpleNamespace(select=lambda timeout: keys)
        WardenWorker.wait_for_and_dispatch_events(worker, 1.0)
        assert order == ["committed", "decide", "send, 1 answer(s) written"]
        assert finished == conns and not worker._unwritten
        assert deferred == [] and not worker._writing_due
        assert [client.recv(100).split(b"\r\n")[0] for _, client in pairs] == [
            b"HTTP/1.1 200 OK", b"HTTP/1.1 503 SERVICE UNAVAILABLE"]
    finally:
        for server, client in pairs:
            server.close()
            client.close()
