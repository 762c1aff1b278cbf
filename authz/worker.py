"""The gunicorn worker `warden serve` runs: gthread's, except that `/v1/authorize` holds no thread while
its record commits, and on a kept-alive connection is decided without a thread handoff.

On gthread a request keeps its pool thread until the answer is written. For
`/v1/authorize` that is a thread asleep on the ledger commit, and when a batch
lands, dozens of threads wake at once and queue for the GIL (the ledger writer
among them). Here the request is decided and its record queued, and the thread
is free. Once the batch is committed, each answer is made and queued for the
poller thread, which writes it: a few hundred bytes that a healthy socket takes
at once (a non-blocking send). Then it puts each connection back on its loop, so
a client's next request is read only once this answer is out (answers stay in
order). A socket that does not take the whole answer is finished on a pool
thread, and a decision that opens a review item is answered from one. An answer
whose commit does not come within the committer's timeout is a 503 deny (see
DecisionService.authorize_later).

Who appends: on Postgres, what the poller decides it also sends to the database
itself, one batch per round of events, with libpq's non-blocking calls
(audit/loop_commit.py), and it reads each batch's outcome when the connection's
socket turns readable; a batch in flight does not hold the poller. A writer
thread beside the poller cost more than the append: every hand-off was a GIL
transfer and a context switch. Everything else (requests decided on pool
threads, SQLite, whatever the loop leaves) goes to the ledger writer thread,
which queues the answers for the poller; the first of a batch wakes the poller,
once for the batch, and the others ride along.

Where the request is decided: when a kept-alive plain-HTTP connection turns
readable and what it has sent (read without waiting) is one whole plain
`POST /v1/authorize` (authz/inline_http.py: a narrow parser that takes the
common shape, with gunicorn's limits and results, and leaves anything else to
gunicorn), the poller thread decides it itself, from what memory holds, with
neither gunicorn's Request and Response nor a full WSGI environ, which spares
each request two thread wake-ups and about a third of the poller thread's CPU. The socket stays
non-blocking meanwhile, and nothing there waits on the database (NotInMemory),
so the poller never waits on a client or a lock. Anything else — a first
request, TLS, a request still arriving, another route, a header the narrow
parser leaves alone, a token, person or policy not cached, or an authorize that
Flask must answer (a bad token, say) — goes to the pool as on gthread.

A connection the server closes lingers for the client's FIN as on gthread (RFC
9112 section 9.6), but on the poller's event loop rather than in a blocking read
there, which held up the whole worker for up to 2 s per such client.

This overrides gthread's `init_process`, `run`, `wait_for_and_dispatch_events`,
`on_client_socket_readable`, `handle_request`, `_keepalive_after`, `enqueue_req`,
`finish_request` and `murder_keepalived`, replaces gunicorn's `util.write_error` in the worker's
process, and reads and writes gunicorn internals (the parser's unreader buffer
and request count, the worker's request count), so setup.cfg pins gunicorn's
minor version; tests/test_worker.py drives it through a real
`warden serve`.
"""

import errno
import gc
import json
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING

from gunicorn import SERVER, http, util
from gunicorn.http import wsgi
from gunicorn.workers import gthread

from audit.memory import NotInMemory
from authz.access_log import log_access
from authz.inline_http import REQUEST_LINE, InlineParser, InlineRequest

if TYPE_CHECKING:
    from audit.loop_commit import LoopCommitter

_PATH = "/v1/authorize"
_LATER = object()  # handle_request's result when the answer comes once the record is committed
_INLINE_READ = 64 * 1024  # one read; a request that is not whole by then goes to the pool
_LINGER_SECONDS, _LINGER_MAX_BYTES, _LINGER_READ = 2.0, 65536, 4096  # as gunicorn's close_graceful


class WardenWorker(gthread.ThreadWorker):
    """gthread, with `/v1/authorize` answered once its record is committed, no thread waiting for it."""

    def init_process(self):
        self._lingering: dict = {}  # closing sockets: [deadline, bytes drained]
        self._unwritten: deque = deque()  # answers for the poller to write (see _answer)
        self._writing_due = False  # whether the poller has been asked to write them
        self._poller_thread: int | None = None  # set once the loop runs
        self._loop_commit = None  # audit/loop_commit.py's LoopCommitter, on Postgres
        # gunicorn answers what it cannot parse (a request line over its limit, a malformed header)
        # itself, in HTML; in this worker's process those answers are Warden's JSON error shape too.
        util.write_error = _json_error
        super().init_process()

    def run(self):
        # The app is loaded: what exists now lives as long as the worker. Frozen, the cyclic garbage
        # collector stops walking it on every full collection (about 8% of the CPU under load, else).
        gc.collect()
        gc.freeze()
        self._poller_thread = threading.get_ident()
        self._loop_commit = self._loop_committer()
        try:
            super().run()
        finally:
            if self._loop_commit is not None:
                self._loop_commit.close()

    def _loop_committer(self) -> "LoopCommitter | None":
        """The appender of what the poller decides (audit/loop_commit.py), started; None where the poller
        decides nothing or the ledger is not on Postgres (the ledger writer thread appends then)."""
        warden = getattr(self.wsgi, "extensions", {}).get("warden")
        if self._inline_parser is None or warden is None or warden.engine.dialect.name != "postgresql":
            return None
        from audit.loop_commit import LoopCommitter  # imports psycopg, which SQLite installs may lack
        loop = LoopCommitter(warden.committer, self.poller, self._offload, self.method_queue.defer)
        loop.start()
        return loop

    @cached_property
    def _fast_path(self):
        """The app's AuthorizeFastPath (create_app installs it), or None."""
        return getattr(self.wsgi, "extensions", {}).get("authorize_fast_path")

    @cached_property
    def _inline_parser(self) -> InlineParser | None:
        """The parser of requests decided on the poller, or None where this worker decides none there:
        no fast path, or settings under which gunicorn's parse means more (a proxy protocol header,
        a SCRIPT_NAME prefix, a request-line limit shorter than the request line)."""
        cfg = self.cfg
        if (self._fast_path is None or cfg.proxy_protocol != "off" or os.environ.get("SCRIPT_NAME")
                or 0 < cfg.limit_request_line < len(REQUEST_LINE)):
            return None
        return InlineParser(cfg.limit_request_fields, cfg.limit_request_field_size, cfg.secure_scheme_headers)

    def on_client_socket_readable(self, conn, client):
        if (self._inline_parser is None or conn.is_http2 or not conn.initialized
                or isinstance(conn.sock, ssl.SSLSocket) or not isinstance(conn.client, tuple)):
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        try:
            request = self._inline_parser.parse(_read_now(conn))
        except Exception:  # noqa: BLE001 - a parser bug must not stop the worker: gunicorn's parser judges
            self.log.exception("inline parse failed")
            request = None
        if request is None or not self._serve_inline(conn, request):
            self.enqueue_req(conn)  # gunicorn parses what was read (it waits in the parser's buffer) on the pool

    def _serve_inline(self, conn, request: InlineRequest) -> bool:
        """Decide `request` (whole in the parser's buffer) on the poller thread, from memory, and queue
        its record: True. False: the fast path did not take it, and the buffer is as it was."""
        started = datetime.now()
        resp = _InlineResponse(request)
        self._count(resp)
        try:
            # gunicorn's default hook logs a debug line; on False the pool runs it again for this request.
            self.cfg.pre_request(self, request)
            environ = request.environ(conn.client)
            taken = self._fast_path.answer_later(environ, partial(self._answer, conn, request, resp, environ, started),
                                                 self._offload, memory_only=True)
        except NotInMemory:  # an uncached token, person or policy: a pool thread may wait on the database
            taken = False
        except Exception as exc:  # noqa: BLE001 - as gthread: a 500 for the client, the log for us
            self._failed(conn, request, exc)
            self.finish_request(conn, _Finished(False))
            return True
        if not taken:
            self.nr -= 1  # the pool's parse counts the request again
            return False
        # The answer cannot be given back before this returns: finish_request runs on this thread.
        conn.parser.req_count += 1
        unreader = conn.parser.unreader
        unreader.unread(unreader.take_buffered()[request.length:])
        return True

    def _failed(self, conn, req, exc: Exception) -> None:
        """gthread's `handle` on an error while serving `req` (which then closes the connection):
        nothing for a client gone, the log for a socket error, else a 400 or 500 answer and the log."""
        if isinstance(exc, (StopIteration, http.errors.NoMoreData)):
            return
        if isinstance(exc, OSError):
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            return
        self.handle_error(req, conn.sock, conn.client, exc)

    def handle_request(self, req, conn):
        """gthread's, except for `POST /v1/authorize` when the fast path takes it: then _LATER (answered
        once the record is committed; see _answer)."""
        if req.method != "POST" or req.path != _PATH or self._fast_path is None:
            return super().handle_request(req, conn)
        self.cfg.pre_request(self, req)
        started = datetime.now()
        resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
        environ["wsgi.multithread"] = True
        self._count(resp)
        if self._fast_path.answer_later(environ, partial(self._answer, conn, req, resp, environ, started),
                                        self._offload):
            return _LATER
        return self._answer_through_flask(req, resp, environ, started)

    def wait_for_and_dispatch_events(self, timeout):
        # As gthread's, except that answers queued meanwhile are written after each event, not when the
        # method queue's turn comes in this batch of events: a committed decision's answer would wait
        # behind every request the batch holds (about 10 ms under load, measured), its connection idle.
        # The records this round decided go to the database as one batch once the round is done.
        try:
            for key, _ in self.poller.select(timeout):
                key.data(key.fileobj)
                if self._unwritten:
                    self._drain_answers()
        except OSError as e:
            if e.errno != errno.EINTR:
                raise
        if self._loop_commit is not None:
            self._loop_commit.send()
            if self._unwritten:
                self._drain_answers()

    def _keepalive_after(self, conn, keepalive):
        # The fast path has read the whole body: there is nothing to drain.
        return keepalive if keepalive is _LATER else super()._keepalive_after(conn, keepalive)

    def enqueue_req(self, conn):
        # As gthread's, except that a request answered after its commit does not wake the poller
        # thread now: the connection is the answer's until it is written (see _write_answers).
        done = self.tpool.submit(self.handle, conn)
        done.add_done_callback(partial(self._handled, conn))

    def _handled(self, conn, done: Future) -> None:
        if done.cancelled() or done.exception() is not None or done.result() is not _LATER:
            self.method_queue.defer(self.finish_request, conn, done)

    def _count(self, resp) -> None:
        """gthread's per-request bookkeeping: max_requests, and when the connection must close."""
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            resp.force_close()
        if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
            resp.force_close()

    def _answer_through_flask(self, req, resp, environ: dict, started: datetime) -> bool:
        """Let the app answer (errors, odd requests), then run the post_request hook; return whether
        the connection stays open."""
        try:
            body = self.wsgi(environ, resp.start_response)
            try:
                for chunk in body:
                    resp.write(chunk)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(body, "close"):
                    body.close()
            return not resp.should_close()
        finally:
            self._post_request(req, environ, resp)

    def _answer(self, conn, req, resp, environ: dict, started: datetime, status: str, body: bytes) -> None:
        """Queue the answer for the poller thread, which writes it (see _write_answers).

        Runs in whichever thread appended the record (the poller itself on Postgres, else the ledger
        writer), or a pool thread, or the deadline watch: it must not raise, nor wait. On the poller it
        only queues: the poller writes the answer before it waits for events again. Elsewhere the
        first answer queued wakes the poller, and the others of the batch ride along, so a batch costs
        the poller one wake-up and the writer no socket call."""
        self._unwritten.append((conn, req, resp, environ, started, status, body))
        if threading.get_ident() == self._poller_thread:
            return  # told by the loop's own batch: the poller writes it before it waits again
        if not self._writing_due:
            self._writing_due = True
            self.method_queue.defer(self._write_answers)

    def _write_answers(self) -> None:
        """On the poller: write every queued answer, where possible without blocking, and put each
        connection back on the poller (or close it)."""
        self._writing_due = False  # before draining: an answer queued from now on wakes the poller again
        self._drain_answers()

    def _drain_answers(self) -> None:
        """Write the answers queued by now. Leaves `_writing_due` alone: only the run it promises
        (_write_answers) may clear it, so no answer is ever queued without a run to come."""
        unwritten = self._unwritten
        while unwritten:
            conn, req, resp, environ, started, status, body = unwritten.popleft()
            try:
                resp.start_response(status, [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))])
                head = "".join(resp.default_headers() + [f"{name}: {value}\r\n" for name, value in resp.headers])
                data = (head + "\r\n").encode("latin-1") + body
                sent = _send_now(conn.sock, data)
                if sent < len(data):
                    self.tpool.submit(self._send_rest, conn, req, resp, environ, started, len(body), data[sent:])
                    continue
                length = len(body)
            except Exception:  # noqa: BLE001 - the client is gone or the answer unsendable: drop the connection
                length = None
            try:
                self.finish_request(conn, _Finished(self._written(req, resp, environ, started, length)))
            except Exception:  # noqa: BLE001 - one connection's failure must not cost the others theirs
                self.log.exception("finishing an answered request failed")

    def _send_rest(self, conn, req, resp, environ: dict, started: datetime, body_length: int, rest: bytes) -> None:
        try:
            conn.sock.setblocking(True)  # this pool thread may wait for the client: nobody else waits on it
            conn.sock.sendall(rest)
        except Exception:  # noqa: BLE001 - as in _write_answers
            body_length = None
        self._give_back(conn, keep_alive=self._written(req, resp, environ, started, body_length))

    def _written(self, req, resp, environ: dict, started: datetime, body_length: int | None) -> bool:
        """Log the request as gthread would (also when the answer could not be written: `body_length`
        None) and run the post_request hook; return whether the connection stays open (not after a
        failure)."""
        resp.headers_sent, resp.sent = body_length is not None, body_length or 0
        try:
            log_access(self.log, self.cfg.access_log_format, resp, req, environ, datetime.now() - started)
        except Exception:  # noqa: BLE001 - a log line must not cost the client its connection
            self.log.exception("access log failed")
        self._post_request(req, environ, resp)
        return body_length is not None and not resp.should_close()

    def finish_request(self, conn, fs):
        # As gthread's, except the graceful close: gthread lingers for the client's FIN (up to 2 s) in a
        # blocking read on this, the poller thread, which stalls every connection of the worker meanwhile.
        if self._closes(fs):
            self.nr_conns -= 1
            self._linger(conn.sock)
        else:
            super().finish_request(conn, fs)

    @staticmethod
    def _closes(fs) -> bool:
        """Whether gthread's finish_request would close the connection gracefully."""
        try:
            return not (fs.result() if not fs.cancelled() else False)
        except Exception:  # noqa: BLE001 - the request failed: gthread closes at once, and so does it here
            return False

    def _linger(self, sock) -> None:
        """gunicorn's `close_graceful` on the poller: shut the write side (the answer is all there is),
        then read and drop what the client still sends until it closes, 64 KiB are drained, or 2 s
        pass (checked by murder_keepalived, once a second), then close. Closing with unread bytes
        would send a reset, which can destroy the answer in flight."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self._drain)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self._lingering[sock] = [time.monotonic() + _LINGER_SECONDS, 0]  # deadline, bytes drained

    def _drain(self, sock) -> None:
        try:
            data = sock.recv(_LINGER_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        state = self._lingering[sock]
        state[1] += len(data)
        if not data or state[1] >= _LINGER_MAX_BYTES:
            self._end_linger(sock)

    def _end_linger(self, sock) -> None:
        del self._lingering[sock]
        try:
            self.poller.unregister(sock)
        except (OSError, ValueError, KeyError):
            pass
        util.close(sock)

    def murder_keepalived(self, force=False):
        super().murder_keepalived(force)
        now = time.monotonic()
        for sock in [sock for sock, (deadline, _) in self._lingering.items() if force or deadline <= now]:
            self._end_linger(sock)

    def _give_back(self, conn, keep_alive: bool) -> None:
        """Hand the connection to the poller thread: back on the poller (keep-alive) or closed."""
        self.method_queue.defer(self.finish_request, conn, _Finished(keep_alive))

    def _offload(self, work: Callable[[], None]) -> None:
        self.tpool.submit(work)

    def _post_request(self, req, environ: dict, resp) -> None:
        try:
            self.cfg.post_request(self, req, environ, resp)
        except Exception:  # noqa: BLE001 - as gunicorn treats the hook
            self.log.exception("Exception in post_request hook")


def _json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, answering `{"error": {"code", "message"}}` as every Warden error does."""
    body = (json.dumps({"error": {"code": reason.lower().replace(" ", "_"), "message": mesg or reason}},
                       separators=(",", ":")) + "\n").encode("utf-8")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def _read_now(conn) -> bytes:
    """Append what `conn` has sent to its parser's buffer, without waiting; return the whole buffer
    (empty when the client closed or the read failed: the pool's read meets that too)."""
    try:
        data = conn.sock.recv(_INLINE_READ)  # the socket is non-blocking while on the poller
    except OSError:
        return b""
    if not data:
        return b""
    unreader = conn.parser.unreader
    unreader.buf.seek(0, os.SEEK_END)  # after what is buffered (gunicorn's `unread` puts data before it)
    unreader.buf.write(data)
    return unreader.buf.getvalue()


def _send_now(sock, data: bytes) -> int:
    """Send what the socket takes without waiting; return how many bytes that was."""
    try:
        if not isinstance(sock, ssl.SSLSocket):
            return sock.send(data, socket.MSG_DONTWAIT)
        sock.setblocking(False)  # TLS sockets take no flags; nobody else uses this one meanwhile
        try:
            return sock.send(data)
        finally:
            sock.setblocking(True)
    except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return 0


class _Finished:
    """What finish_request reads of a finished request (a Future's three methods, without its lock)."""

    __slots__ = ("keep_alive",)

    def __init__(self, keep_alive: bool):
        self.keep_alive = keep_alive

    def cancelled(self) -> bool:
        return False

    def exception(self) -> None:
        return None

    def result(self) -> bool:
        return self.keep_alive


class _InlineResponse:
    """What `_write_answers`, `_written` and the access log read of gunicorn's Response, for a request
    decided on the poller: the status, headers and bytes sent, and the head gunicorn would write."""

    __slots__ = ("req", "status", "headers", "sent", "headers_sent", "must_close")

    def __init__(self, req: InlineRequest):
        self.req = req
        self.status, self.headers, self.sent, self.headers_sent, self.must_close = None, [], 0, False, False

    def force_close(self) -> None:
        self.must_close = True

    def should_close(self) -> bool:
        # gunicorn's Response.should_close for an answer with a Content-Length.
        return self.must_close or self.req.should_close()

    def start_response(self, status: str, headers: list[tuple[str, str]]) -> None:
        self.status, self.headers = status, headers

    def default_headers(self) -> list[str]:
        return [f"HTTP/1.1 {self.status}\r\n", f"Server: {SERVER}\r\n", f"Date: {_http_date()}\r\n",
                f"Connection: {'close' if self.should_close() else 'keep-alive'}\r\n"]


_date = (0, "")  # (second, its HTTP date): the Date header changes once a second


def _http_date() -> str:
    """gunicorn's `util.http_date()`, formatted once a second."""
    global _date
    now, date = int(time.time()), _date
    if date[0] != now:
        date = _date = (now, util.http_date(now))
    return date[1]
