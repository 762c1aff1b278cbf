"""PROTOTYPE, not part of Warden: `/v1/authorize` answered by the ledger writer instead of a waiting thread.

Measured by `python bench/authorize.py --prototype async_response ...` (see the
README, "Benchmarks"). On this path a gunicorn thread decides, queues the record
and is free again; the ledger writer, once the batch is committed, writes each
response and hands the connection back to gunicorn's poller. So no thread sleeps
on a commit and wakes to fight for the GIL.

What it leaves out, and a real version must not: Flask's answers for anything
unusual once the body is read (it answers 400 itself), review items at decision
time, TLS, `Connection: close`, and keep-alive limits. It reaches into gunicorn's
gthread worker (`handle_request`, `finish_request`, `method_queue`), so it is
tied to the gunicorn version installed here. Loaded as `sitecustomize` through
PYTHONPATH, so nothing in Warden imports it.
"""

import select
import time
from datetime import timedelta

from gunicorn.http import wsgi
from gunicorn.workers import gthread

from audit.group_commit import _Item
from audit.metrics import DECISIONS
from audit.randomness import uuid4
from audit.web import ApiError, bearer_token, decode_json_object
from authz.decisions import _entry
from authz.requests import parse_authorize

_ANSWERED_LATER = object()


class _WhenCommitted:
    """Where the writer puts a batch's outcome: calls `done(value, error)` in the writer thread."""

    __slots__ = ("done",)

    def __init__(self, done):
        self.done = done

    def set_result(self, value):
        self.done(value, None)

    def set_exception(self, error):
        self.done(None, error)


def _begin(worker, req, conn):
    """Decide and queue the record; return _ANSWERED_LATER, or None to let gunicorn and Flask answer."""
    if req.should_close() or not worker.alive or not worker.cfg.keepalive or worker.cfg.is_ssl:
        return None
    app = worker.wsgi
    warden = app.extensions["warden"]
    headers = dict(req.headers)
    caller = warden.authenticate(bearer_token(headers.get("AUTHORIZATION", "")))
    if caller is None or "authorize" not in caller.scopes:
        return None
    started = time.monotonic()
    resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, worker.cfg)
    try:
        item = parse_authorize(decode_json_object(req.body.read()))
    except ApiError as exc:
        _send(worker, conn, req, resp, environ, started, "400 BAD REQUEST",
              {"error": {"code": exc.code, "message": exc.message}})
        return _ANSWERED_LATER
    decisions = warden.decisions
    epoch, snapshot = decisions._policy_view()
    subjects, subjects_epoch = decisions.subjects.get({item.request.subject})
    decision = snapshot.decider.decide(item.request)
    decision_id = str(uuid4())
    entry = _entry(item, decision, decision_id, caller.name, uuid4().hex, snapshot.version,
                   subjects[item.request.subject])
    decisions.committer.ledger.serialize([entry])

    def done(value, error):  # in the writer thread, after the commit
        if error is not None:
            return _send(worker, conn, req, resp, environ, started, "503 SERVICE UNAVAILABLE",
                         {"allowed": False, "error": {"code": "audit_unavailable", "message": str(error)}})
        appended, _ = value
        DECISIONS.labels(allowed=str(decision.allowed).lower()).inc()
        _send(worker, conn, req, resp, environ, started, "200 OK", {
            "allowed": decision.allowed, "decision_id": decision_id, "audit_seq": appended[0].seq,
            "policy_version": snapshot.version, "reason": decision.reason, "matched": decision.matched,
            "review": None})

    committer = decisions.committer
    with committer._wake:
        committer._ensure_writer()
        committer._pending.append(_Item(lambda _conn, _memo: ([entry], None), _WhenCommitted(done), False,
                                        ([entry], None), epoch if subjects_epoch == epoch else -1, None))
        if committer._idle:
            committer._wake.notify()
    return _ANSWERED_LATER


def _send(worker, conn, req, resp, environ, started, status, body):
    """Write the response and log it. The connection is back on gunicorn's poller already (the client
    sends nothing more until it has this answer), so the socket may be non-blocking by now."""
    data = (worker.wsgi.json.dumps(body, separators=(",", ":")) + "\n").encode("utf-8")
    resp.start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    head = "".join(resp.default_headers() + [f"{name}: {value}\r\n" for name, value in resp.headers]) + "\r\n"
    out = memoryview(head.encode("latin-1") + data)
    try:
        while out:
            try:
                out = out[conn.sock.send(out):]
            except BlockingIOError:
                select.select([], [conn.sock], [], 1.0)
    except OSError:
        return
    resp.sent = len(data)
    worker.log.access(resp, req, environ, timedelta(seconds=time.monotonic() - started))


_original_handle_request = gthread.ThreadWorker.handle_request


def handle_request(self, req, conn):
    if req.method == "POST" and req.path == "/v1/authorize" and not req.query:
        if _begin(self, req, conn) is not None:
            return True  # keep-alive: the connection goes back to the poller; the writer answers on it
    return _original_handle_request(self, req, conn)


gthread.ThreadWorker.handle_request = handle_request
