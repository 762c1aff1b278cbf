"""Group commit on an event loop: the loop's thread sends each batch itself, no writer thread.

In CPython a writer thread beside a busy event loop costs more than the append
does: every hand-off between the two is a GIL transfer and a context switch.
(Measured under `warden serve` with the database call replaced by nothing: the
writer thread alone took a worker from about 500 to 740 µs of CPU per authorize.)
So on Postgres, entries made on the loop's thread from cached state are sent by
that thread, with libpq's non-blocking calls: one statement per batch (the
append function of migration 0005), and the answer read when the socket turns
readable. Whatever is decided while one batch is in flight makes the next, so
batches grow with the load and no one lingers. Each caller is told only once its
batch has committed (synchronous_commit stays on), as with the writer thread.

What this does not do goes to the writer thread (GroupCommitter), which handles
every case: entries made for different or outdated epochs, a connection not up
(yet, or any more: it is made again on a pool thread, at most once a second).
"""

import logging
import selectors
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import pq

from audit.chain import utcnow
from audit.group_commit import CommitFailed, GroupCommitter, Item, fail_all, gather, tell
from audit.ledger import APPEND_CALL, StaleEpoch, appended_on_server, server_batch
from audit.metrics import BATCH_SIZE, COMMIT_SECONDS

log = logging.getLogger(__name__)

_STATEMENT = b"warden_ledger_append"
_RECONNECT_SECONDS = 1.0
_CONNECT_TIMEOUT = 10  # seconds; a request thread waits for it


def _integer(value: bytes | None) -> int | None:
    return None if value is None else int(value)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("ascii")


class LoopCommitter:
    """Appends, for the thread that makes it, what that thread submits to `committer`.

    The loop must call `send()` after each round of events it dispatches (it
    sends what that round queued), and dispatch `selector` events to the
    callbacks registered. `offload(fn)` runs `fn` on another thread (connecting
    blocks); `call_soon(fn)` runs `fn` on the loop's thread.
    """

    def __init__(self, committer: GroupCommitter, selector: selectors.BaseSelector,
                 offload: Callable[[Callable[[], None]], object], call_soon: Callable[[Callable[[], None]], None]):
        self.committer = committer
        self.selector = selector
        self.offload, self.call_soon = offload, call_soon
        self._thread = threading.get_ident()
        self._queued: list[Item] = []
        self._in_flight: tuple | None = None  # (items, where each one's records are, time sent, started)
        self._results: list = []  # what the server has answered so far to the batch in flight
        self._conn: psycopg.Connection | None = None
        self._fd: int | None = None
        self._writing = False  # libpq holds bytes of the statement that the socket did not take yet
        self._connecting = False
        self._next_connect = 0.0
        self._closed = False
        self.batches = 0  # committed batches, for tests

    def start(self) -> None:
        """Connect (on another thread), and take this thread's items from the committer from now on."""
        self.committer.attach_loop(self)
        self._connect_soon()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread

    def take(self, item: Item) -> None:
        """Queue `item` for the next batch (the loop's thread only)."""
        self._queued.append(item)

    def send(self) -> None:
        """Send what is queued as one batch, unless a batch is in flight: then it goes once that one is
        answered. Without a connection, or with entries made for different epochs, the writer thread
        appends them. Called every round, it also reconnects, and gives up on a batch in flight for
        longer than the committer's timeout (a connection gone silent)."""
        if self._conn is None:
            self._connect_soon()
        if self._in_flight is not None:
            if time.perf_counter() - self._in_flight[3] > self.committer.timeout:
                self._lost(TimeoutError(f"no answer to a batch within {self.committer.timeout:.0f}s"))
            else:
                return
        if not self._queued:
            return
        limit = self.committer.max_batch
        items, self._queued = self._queued[:limit], self._queued[limit:]
        epochs = {item.epoch for item in items}
        if self._conn is None or len(epochs) != 1 or (epoch := epochs.pop()) is None or epoch < 0:
            self._hand_over(items)
            return
        try:
            refused: list = []
            entries, results = gather(items, {i: item.prepared for i, item in enumerate(items)}, refused,
                                      self.committer.ledger)
        except Exception:  # noqa: BLE001 - not this loop's to judge: nobody was told anything yet
            log.exception("making the event loop's ledger batch failed")
            self._hand_over(items)
            return
        for outcome, refusal in refused:
            tell(outcome.set_exception, refusal)
        if refused:  # told already: only the others are in the batch
            gone = {id(outcome) for outcome, _ in refused}
            items = [item for item in items if id(item.outcome) not in gone]
        if not entries:  # nothing to append (none of them made an entry): done as it stands
            for outcome, _, _, made in results:
                tell(outcome.set_result, ([], made))
            return
        at = utcnow()
        try:
            self._conn.pgconn.send_query_prepared(_STATEMENT, [
                str(epoch).encode(), b"f", at.isoformat().encode(), server_batch(entries).encode()])
        except Exception as exc:  # noqa: BLE001 - not sent (libpq sends the Sync last): nothing committed
            self._lost(exc)
            self._hand_over(items)
            return
        self._in_flight = (items, results, at, time.perf_counter())
        try:
            self._flush()
        except Exception as exc:  # noqa: BLE001 - maybe sent: its outcome is unknown
            self._lost(exc)

    def _flush(self) -> None:
        """Hand libpq's unsent bytes to the socket; watch for it to take more if it did not take them all."""
        writing = self._conn.pgconn.flush() == 1
        if writing != self._writing:
            self._writing = writing
            self.selector.modify(self._fd, selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0),
                                 self._on_ready)

    def _on_ready(self, _fd) -> None:
        """The connection's socket is readable (or writable while a statement is half sent)."""
        if self._conn is None:
            return
        pgconn = self._conn.pgconn
        try:
            if self._writing:
                self._flush()
            pgconn.consume_input()
            # The results come before the transaction ends: only the end marker that follows them (libpq's
            # None, sent at ReadyForQuery, once the commit is on disk) says the batch is durable, and an
            # error in between (a deferred check failing at commit) says it is not.
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    break
                self._results.append(result)
            else:
                return  # more is on its way
            if pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError(pgconn.get_error_message() or "connection lost")
        except Exception as exc:  # noqa: BLE001 - whatever it was, this connection's state is unknown
            self._lost(exc)
            return
        results, self._results = self._results, []
        if self._in_flight is not None:
            self._answered(results)
            self.send()

    def _answered(self, results: list) -> None:
        items, told, at, started = self._in_flight
        self._in_flight = None
        failed = [result for result in results if result.status != pq.ExecStatus.TUPLES_OK]
        if failed or len(results) != 1:
            # The server said the transaction ended without a commit: nothing of the batch is in the
            # ledger. The writer tries it again on its own connection (it fails them, should the
            # database refuse again), and this one is made anew: what failed may be this session's own
            # state (a plan cached for a function since replaced, say).
            message = (failed[0].error_message or b"").decode("utf-8", "replace").strip() if failed else ""
            self._lost(psycopg.DatabaseError(message or "the append gave no rows"))
            self._hand_over(items)
            return
        result = results[0]
        try:
            appended = appended_on_server(
                [(_integer(result.get_value(row, 0)), _text(result.get_value(row, 1)), result.get_value(row, 2))
                 for row in range(result.ntuples)], at)
        except StaleEpoch:
            self._hand_over(items)  # appended nothing: the writer makes them again from fresh state
            return
        except Exception as exc:  # noqa: BLE001 - committed, but what landed where is unreadable
            fail_all(items, exc)
            return
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(appended))
        self.batches += 1
        for outcome, start, end, made in told:
            tell(outcome.set_result, (appended[start:end], made))

    def _hand_over(self, items: list[Item]) -> None:
        """Give `items` to the writer thread (each is told by it, or here if it cannot take them)."""
        for item in items:
            try:
                self.committer.enqueue(item)
            except Exception as exc:  # noqa: BLE001 - closed, or no thread to be had: a deny, not a silence
                tell(item.outcome.set_exception, exc if isinstance(exc, CommitFailed) else CommitFailed(str(exc)))

    def _lost(self, exc: BaseException) -> None:
        """The connection failed: fail the batch in flight (whether it committed is unknown) and let the
        writer thread take the rest until a new connection is up."""
        log.warning("the ledger connection of the event loop failed: %s", exc)
        in_flight, self._in_flight, self._results = self._in_flight, None, []
        self._disconnect()
        if in_flight is not None:
            fail_all(in_flight[0], exc)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if self._fd is not None:
            try:
                self.selector.unregister(self._fd)
            except (KeyError, ValueError, OSError):
                pass
            self._fd, self._writing = None, False
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is being thrown away either way
                pass

    def _connect_soon(self) -> None:
        """Connect on another thread, no sooner than a second after the last try (`send` asks again)."""
        if self._connecting or self._closed or time.monotonic() < self._next_connect:
            return
        self._connecting, self._next_connect = True, time.monotonic() + _RECONNECT_SECONDS
        self.offload(self._connect)

    def _connect(self) -> None:
        """On another thread: a connection of its own (not the pool's), the statement prepared."""
        conn = None
        try:
            engine = self.committer.engine
            args, params = engine.dialect.create_connect_args(engine.url)
            # UTF-8 whatever the server or environment default: the batch is sent as UTF-8 bytes.
            params = {"connect_timeout": _CONNECT_TIMEOUT, **params, "client_encoding": "UTF8", "autocommit": True}
            conn = psycopg.Connection.connect(*args, **params)
            prepared = conn.pgconn.prepare(_STATEMENT, APPEND_CALL.encode())
            if prepared.status != pq.ExecStatus.COMMAND_OK:
                raise psycopg.DatabaseError((prepared.error_message or b"").decode("utf-8", "replace"))
            conn.pgconn.nonblocking = 1
        except Exception as exc:  # noqa: BLE001 - the writer thread appends meanwhile
            log.warning("the event loop could not connect to the ledger (the writer thread appends): %s", exc)
            if conn is not None:
                conn.close()
            conn = None
        try:
            self.call_soon(lambda: self._connected(conn))
        except Exception:  # noqa: BLE001 - the loop is gone (the worker stopped)
            if conn is not None:
                conn.close()

    def _connected(self, conn: psycopg.Connection | None) -> None:
        self._connecting = False
        if conn is None:
            return
        if self._closed:
            conn.close()
            return
        self._conn, self._fd = conn, conn.pgconn.socket
        self.selector.register(self._fd, selectors.EVENT_READ, self._on_ready)

    def close(self) -> None:
        """Stop taking items; fail what is queued or in flight (nobody is left to answer them); disconnect."""
        self._closed = True
        self.committer.attach_loop(None)
        queued, self._queued = self._queued, []
        in_flight, self._in_flight = self._in_flight, None
        fail_all(queued + (in_flight[0] if in_flight else []), CommitFailed("the worker stopped"))
        self._disconnect()
