"""Group commit: concurrent appends in one process share a transaction, and each still waits for it.

A per-record lock-and-commit costs one fsync per record. Here callers hand
their entries to a single writer thread; it takes everything queued, appends it
all and commits once. Each caller's `submit` returns only after that commit (or,
with `submit_later`, the writer tells the caller's Outcome then), so no answer
is given before its record is durable; a failed commit fails every caller in the
batch.

Most callers come with their entries made already, from state they cached, and
the epoch that state belongs to (see LedgerHead.epoch). On Postgres such a batch
is one statement (the append function of migration 0005), so the chain head
lock that every process's writer queues for is held only while the server
works. If the epoch moved, or an item must read the database while the head is
locked, the batch takes the careful path: a transaction that locks the head,
makes the stale items again under the lock, and appends.

An event loop may attach its own appender (audit/loop_commit.py): items its
thread submits ready-made then go out in the loop's batches, and anything that
appender does not handle comes back here through `enqueue`.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from audit.ledger import Appended, Entry, Ledger, StaleEpoch
from audit.metrics import BATCH_SIZE, COMMIT_SECONDS
from audit.process import current_pid

log = logging.getLogger(__name__)

# prepare(conn, memo) -> (entries to append, anything to hand back to the caller).
# `memo` is shared by the batch: a place to read something once per transaction.
Prepare = Callable[[Connection, dict], tuple[list[Entry], Any]]


class Refused(Exception):
    """Raised by a `prepare` to refuse its own request without failing the batch (e.g. 404, 409)."""


class CommitFailed(Exception):
    """The batch could not be committed; nothing of it is in the ledger."""


class GroupCommitter:
    """A writer thread that batches appends; `submit` blocks until the caller's records are committed.

    When the last batch held more than one caller, the writer waits up to `linger`
    seconds for more before it commits: under load that costs a millisecond or two
    of latency and saves most of each commit's fixed cost; a lone caller never waits.
    It waits only for callers that said they are coming (`expecting`) and are still
    making their entries: once every one of them has submitted, it commits at once.
    """

    def __init__(self, engine: Engine, ledger: Ledger, max_batch: int = 512, timeout: float = 30.0,
                 linger: float = 0.002):
        self.engine = engine
        self.linger = linger
        self._concurrent = False
        self._idle = False
        self._coming = 0  # callers inside `expecting` that have not submitted yet
        self._lingering = False
        self.ledger = ledger
        self.max_batch = max_batch
        self.timeout = timeout
        self._pending: deque[Item] = deque()
        self._wake = threading.Condition()
        self._owner_pid = None
        self._closed = False
        self._conn: Connection | None = None  # the writer's own autocommit connection (Postgres)
        self._thread: threading.Thread | None = None
        self.batches = 0  # committed batches, for tests and metrics
        self._loop: LoopOwner | None = None  # see attach_loop

    def expecting(self) -> "_Ticket":
        """Say a submit is on its way, so a lingering writer waits for it: a context manager whose
        ticket (pass it to `submit`) is given up on leaving, should nothing have been submitted."""
        loop = self._loop
        if loop is not None and loop.on_loop_thread():
            return _UNCOUNTED  # the loop sends its own batches: the writer has nothing to wait for
        return _Ticket(self)

    def _arrived(self, ticket: "_Ticket") -> None:
        ticket.used = True
        self._coming -= 1
        if self._lingering and self._coming == 0:
            self._wake.notify()

    def submit(self, prepare: Prepare, *, prepared: tuple[list[Entry], Any] | None = None,
               epoch: int | None = None, refresh: Callable[[], tuple[list[Entry], Any, int]] | None = None,
               under_lock: bool = False, ticket: "_Ticket | None" = None) -> tuple[list[Appended], Any]:
        """Append what `prepare` gives in the next batch; return (its records, its result) once committed.

        `prepared`: what the caller already made from cached state belonging to
        `epoch`. If the epoch moved, `refresh()` makes it again from fresh state
        (entries, result, epoch) without any lock held; `prepare` runs under the
        head lock only if that is not enough.
        `under_lock`: run `prepare` while the chain head is locked, so what it reads
        cannot change before its entries land (checks such as "reported only once").
        Otherwise `prepare` runs in the writer before the lock; it must only read.
        Raises Refused when `prepare` refused, CommitFailed when the batch did not commit.
        """
        slot = Waiter()  # never the loop's: its thread would wait here for its own next round
        self.enqueue(Item(prepare, slot, under_lock, prepared, epoch, refresh), ticket)
        return slot.result(self.timeout)

    def submit_later(self, prepare: Prepare, outcome: "Outcome", *, prepared: tuple[list[Entry], Any] | None = None,
                     epoch: int | None = None, refresh: Callable[[], tuple[list[Entry], Any, int]] | None = None,
                     under_lock: bool = False, ticket: "_Ticket | None" = None) -> None:
        """`submit` without waiting: the writer thread calls `outcome.set_result((records, result))` once
        the batch is committed, or `outcome.set_exception(Refused | CommitFailed)`; exactly one of them,
        once. They run in the appending thread (the writer, or an attached loop), so they must be quick
        (every later batch waits for them).
        Raises CommitFailed at once when the writer is closed."""
        item = Item(prepare, outcome, under_lock, prepared, epoch, refresh)
        loop = self._loop
        # Never a Waiter: whoever waits on it would be the loop's own thread, and the loop would stop.
        if (loop is not None and prepared is not None and not under_lock and not isinstance(outcome, Waiter)
                and loop.on_loop_thread()):
            if self._closed:
                raise CommitFailed("the ledger writer is closed")
            loop.take(item)  # the loop's own batch, sent when its round of events is done
            return
        self.enqueue(item, ticket)

    def enqueue(self, item: "Item", ticket: "_Ticket | None" = None) -> None:
        """Queue `item` for the writer thread (see `submit_later`)."""
        with self._wake:
            if self._closed:
                raise CommitFailed("the ledger writer is closed")
            self._ensure_writer()
            self._pending.append(item)
            if ticket is not None and not ticket.used:
                self._arrived(ticket)  # wakes a lingering writer when this was the last one coming
            if self._idle:  # otherwise the writer looks at the queue anyway when it is done
                self._wake.notify()

    def attach_loop(self, loop: "LoopOwner | None") -> None:
        """Let `loop` (audit/loop_commit.py) append what callers on its thread submit with entries
        made already; None detaches it. Everything else still goes to the writer thread."""
        self._loop = loop

    def _ensure_writer(self) -> None:
        if self._owner_pid != current_pid():  # first use, or a forked child: threads do not survive fork
            self._owner_pid = current_pid()
            self._pending.clear()
            self._coming = 0
            self._conn = None  # a parent's connection is not this process's to use
            self._thread = threading.Thread(target=self._run, name="warden-ledger-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Let the writer thread finish what is queued, and wait for it to stop."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None and self._owner_pid == current_pid():
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._disconnect(broken=False)  # the writer's own, should it not have let go of it

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._idle = True
                    self._wake.wait()
                    self._idle = False
                if self._closed and not self._pending:
                    self._disconnect(broken=False)
                    return
                if self.linger and self._concurrent:
                    # Callers are arriving together: a moment's wait makes the batch bigger and each
                    # commit's fixed cost per record smaller.
                    deadline = time.monotonic() + self.linger
                    while (self._coming and len(self._pending) < self.max_batch
                           and (left := deadline - time.monotonic()) > 0):
                        self._lingering = True
                        self._wake.wait(left)
                        self._lingering = False
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch))]
            self._concurrent = len(batch) > 1
            self._commit(batch)

    def _commit(self, batch: list["Item"]) -> None:
        refused: list[tuple[Outcome, BaseException]] = []
        started = time.perf_counter()
        try:
            done = self._commit_at_once(batch, refused) or self._commit_carefully(batch, refused)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of any failure
            fail_all(batch, exc)
            return
        appended, results = done
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(appended))
        # Answers go out only now, after the commit and with the connection back in the pool.
        for outcome, refusal in refused:
            tell(outcome.set_exception, refusal)
        self.batches += 1
        for outcome, start, end, result in results:
            tell(outcome.set_result, (appended[start:end], result))

    def _commit_at_once(self, batch: list["Item"], refused: list) -> tuple | None:
        """The batch as one autocommitted statement (Postgres); None when it needs the careful path.

        Items made for an older epoch are made again once, outside any lock, from fresh
        state (their `refresh`), and the statement is tried again.
        """
        if self.engine.dialect.name != "postgresql" or any(item.under_lock for item in batch):
            return None
        for retry in (False, True):
            epochs = {item.epoch for item in batch if item.prepared is not None}
            if len(epochs) > 1:
                if retry or not _refresh(batch):
                    return None
                continue
            refusals: list = []
            conn = self._connection()
            try:
                prepared = _prepare(batch, conn, {}, refusals, under_lock=False)
                entries, results = gather(batch, prepared, refusals, self.ledger)
                appended = self.ledger.append(conn, entries, expect_epoch=next(iter(epochs), None))
            except StaleEpoch as stale:
                if retry or not _refresh(batch, stale.epoch):
                    return None
                continue
            except Exception:  # a driver or SQLAlchemy error: the connection's state is unknown
                self._disconnect()  # so the next batch starts on a fresh one
                raise
            refused.extend(refusals)
            return appended, results
        return None

    def _connection(self) -> Connection:
        """The writer's own connection, in autocommit, kept between batches: checking one out of the
        pool per batch (and switching it to autocommit and back) costs more CPU than the append."""
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _disconnect(self, broken: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if broken:
                    conn.invalidate()  # never back into the pool: nobody knows what state it is in
                conn.close()
            except Exception:  # noqa: BLE001 - it is being thrown away either way
                pass

    def _commit_carefully(self, batch: list["Item"], refused: list) -> tuple:
        """Lock the head in a transaction, make again what was made for an older epoch, and append."""
        with self.engine.begin() as conn:
            memo: dict = {}
            prepared = _prepare(batch, conn, memo, refused, under_lock=False)
            head = self.ledger.lock_head(conn)
            memo["epoch"] = head.epoch
            stale = {i for i in prepared if batch[i].epoch not in (None, head.epoch)}
            for index in stale:
                del prepared[index]
            prepared.update(_prepare(batch, conn, memo, refused, under_lock=True, also=stale))
            entries, results = gather(batch, prepared, refused, self.ledger)
            return self.ledger.append(conn, entries, head=head), results


class Outcome(Protocol):
    """Where the writer tells a caller how its submit ended (see `GroupCommitter.submit_later`)."""

    def set_result(self, value: tuple[list[Appended], Any]) -> None: ...

    def set_exception(self, error: BaseException) -> None: ...


def tell(method: Callable[[Any], None], value: Any) -> None:
    """Hand one caller its outcome; a caller whose handler fails must not cost the others theirs."""
    try:
        method(value)
    except Exception:
        log.exception("a ledger caller's outcome handler failed")


class _Ticket:
    """A caller's word that it will submit (see `GroupCommitter.expecting`)."""

    __slots__ = ("committer", "used")

    def __init__(self, committer: GroupCommitter):
        self.committer, self.used = committer, False

    def __enter__(self) -> "_Ticket":
        committer = self.committer
        with committer._wake:
            committer._ensure_writer()
            committer._coming += 1
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.used:  # it failed before submitting
            with self.committer._wake:
                self.committer._arrived(self)


def fail_all(items: list["Item"], exc: BaseException) -> None:
    """Tell every caller of a batch that did not commit (CommitFailed, naming why)."""
    failure = CommitFailed(f"{type(exc).__name__}: {exc}")
    for item in items:
        tell(item.outcome.set_exception, failure)


class _Uncounted:
    """The ticket of a caller on an attached loop's thread: the writer thread waits for nobody there."""

    __slots__ = ()
    used = True

    def __enter__(self) -> "_Uncounted":
        return self

    def __exit__(self, *exc_info) -> None:
        pass


_UNCOUNTED = _Uncounted()


class LoopOwner(Protocol):
    """An event loop's appender that the committer hands its thread's items to (audit/loop_commit.py)."""

    def on_loop_thread(self) -> bool: ...

    def take(self, item: "Item") -> None: ...


class Waiter:
    """An Outcome to wait on: where the writer puts one caller's outcome; cheaper than a Future (one lock, no
    condition variable to re-acquire on waking)."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self):
        self._done = threading.Lock()
        self._done.acquire()
        self._value = self._error = None

    def set_result(self, value) -> None:
        self._value = value
        self._done.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.release()

    def result(self, timeout: float):
        if not self._done.acquire(timeout=timeout):
            raise CommitFailed(f"no commit within {timeout:.0f}s")
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(slots=True)
class Item:
    """One caller's submit: how to make its entries, where to tell it the outcome, and what it made."""

    prepare: Prepare
    outcome: "Outcome"
    under_lock: bool
    prepared: tuple[list[Entry], Any] | None = None
    epoch: int | None = None
    refresh: Callable[[], tuple[list[Entry], Any, int]] | None = None


def _prepare(batch: list[Item], conn: Connection, memo: dict, refused: list, *,
             under_lock: bool, also: set[int] = frozenset()) -> dict[int, tuple[list[Entry], Any]]:
    """Run the prepare of each item due now; one that refuses or chokes on its own data fails alone.

    Before the lock, items that came prepared are taken as they are. A database
    error is different: the transaction is broken for everyone, so it fails the batch.
    """
    prepared = {}
    for index, item in enumerate(batch):
        if not under_lock and item.prepared is not None:
            prepared[index] = item.prepared
        elif item.under_lock == under_lock or index in also:
            try:
                prepared[index] = item.prepare(conn, memo)
            except SQLAlchemyError:
                raise
            except Exception as exc:  # noqa: BLE001 - handed to that caller, not swallowed
                refused.append((item.outcome, exc))
    return prepared


def _refresh(batch: list[Item], epoch: int | None = None) -> bool:
    """Make again, from fresh state, every item not made for `epoch` (all of them when None); False when
    one cannot be (then the careful path makes it under the lock)."""
    for index, item in enumerate(batch):
        if item.prepared is None or (epoch is not None and item.epoch == epoch):
            continue
        if item.refresh is None:
            return False
        try:
            entries, result, fresh_epoch = item.refresh()
        except Exception:  # noqa: BLE001 - the careful path will make it, and report its own failure
            return False
        batch[index] = replace(item, prepared=(entries, result), epoch=fresh_epoch)
    return True


def gather(batch: list[Item], prepared: dict, refused: list, ledger: Ledger) -> tuple[list[Entry], list]:
    """All entries in batch order, and where each caller's records will be; an item whose data
    cannot be serialized is refused alone."""
    entries, results = [], []
    for index, (mine, result) in sorted(prepared.items()):
        try:
            ledger.serialize(mine)  # now, before the head is locked
        except (ValueError, TypeError, UnicodeError) as exc:  # that caller's data, not the batch
            refused.append((batch[index].outcome, exc))
            continue
        results.append((batch[index].outcome, len(entries), len(entries) + len(mine), result))
        entries.extend(mine)
    return entries, results
