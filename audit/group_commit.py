"""Group commit: concurrent appends in one process share a transaction, and each still waits for it.

A per-record lock-and-commit costs one fsync per record. Here callers hand a
`prepare` function to a single writer thread; it takes everything queued, runs
each `prepare` inside one transaction, appends all the entries and commits once.
The chain head lock, which every process's writer queues for, is held only for
the hashing, the insert and the commit: work that needs no lock (deciding,
serializing) is done before it, unless a `prepare` asks to run under it. Each caller's call returns only after that commit, so
no answer is given before its record is durable; a failed commit fails every
caller in the batch.
"""

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from audit.ledger import Appended, Entry, Ledger
from audit.metrics import BATCH_SIZE, COMMIT_SECONDS

# prepare(conn, memo) -> (entries to append, anything to hand back to the caller).
# `memo` is shared by the batch: a place to read something once per transaction.
Prepare = Callable[[Connection, dict], tuple[list[Entry], Any]]


class Refused(Exception):
    """Raised by a `prepare` to refuse its own request without failing the batch (e.g. 404, 409)."""


class CommitFailed(Exception):
    """The batch could not be committed; nothing of it is in the ledger."""


class GroupCommitter:
    """A writer thread that batches appends; `submit` blocks until the caller's records are committed."""

    def __init__(self, engine: Engine, ledger: Ledger, max_batch: int = 512, timeout: float = 30.0):
        self.engine = engine
        self.ledger = ledger
        self.max_batch = max_batch
        self.timeout = timeout
        self._pending: deque[_Item] = deque()
        self._wake = threading.Condition()
        self._owner_pid = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # committed batches, for tests and metrics

    def submit(self, prepare: Prepare, *, under_lock: bool = False,
               still_valid: Callable[[Connection, dict, Any], bool] | None = None) -> tuple[list[Appended], Any]:
        """Run `prepare` in the next batch and return (its records, its result) once committed.

        `under_lock`: run it while the chain head is locked, so what it reads cannot
        change before its entries land (checks such as "reported only once").
        `still_valid(conn, memo, result)`: asked once the head is locked; when it says
        no (what `prepare` read has changed since), `prepare` runs again under the lock.
        Raises Refused when `prepare` refused, CommitFailed when the batch did not commit.
        """
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise CommitFailed("the ledger writer is closed")
            self._ensure_writer()
            self._pending.append(_Item(prepare, future, under_lock, still_valid))
            self._wake.notify()
        try:
            return future.result(timeout=self.timeout)
        except TimeoutError:
            raise CommitFailed(f"no commit within {self.timeout:.0f}s") from None

    def _ensure_writer(self) -> None:
        if self._owner_pid != os.getpid():  # first use, or a forked child: threads do not survive fork
            self._owner_pid = os.getpid()
            self._pending.clear()
            self._thread = threading.Thread(target=self._run, name="warden-ledger-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Let the writer thread finish what is queued, and wait for it to stop."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None and self._owner_pid == os.getpid():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed and not self._pending:
                    return
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch))]
            self._commit(batch)

    def _commit(self, batch: list["_Item"]) -> None:
        refused: list[tuple[Future, BaseException]] = []
        started = time.perf_counter()
        try:
            with self.engine.begin() as conn:
                memo: dict = {}
                prepared: dict[int, tuple[list[Entry], Any]] = {}
                _prepare(batch, conn, memo, prepared, refused, under_lock=False)
                for index, (mine, _) in list(prepared.items()):
                    try:
                        for entry in mine:
                            entry.data_json  # noqa: B018 - serialize before taking the lock
                    except (ValueError, TypeError, UnicodeError) as exc:  # that caller's data, not the batch
                        del prepared[index]
                        refused.append((batch[index].future, exc))
                head = self.ledger.lock_head(conn)
                stale = [i for i, (_, result) in prepared.items()
                         if batch[i].still_valid and not batch[i].still_valid(conn, memo, result)]
                for index in stale:
                    del prepared[index]
                _prepare(batch, conn, memo, prepared, refused, under_lock=True, also=set(stale))
                done, entries = [], []
                for index, (mine, result) in sorted(prepared.items()):
                    done.append((batch[index].future, len(entries), len(entries) + len(mine), result))
                    entries.extend(mine)
                appended = self.ledger.append(conn, entries, head=head)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of any failure
            failure = CommitFailed(f"{type(exc).__name__}: {exc}")
            for item in batch:
                item.future.set_exception(failure)
            return
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(entries))
        # Answers go out only now, after the commit and with the connection back in the pool.
        for future, refusal in refused:
            future.set_exception(refusal)
        self.batches += 1
        for future, start, end, result in done:
            future.set_result((appended[start:end], result))


@dataclass(frozen=True)
class _Item:
    prepare: Prepare
    future: Future
    under_lock: bool
    still_valid: Callable[[Connection, dict, Any], bool] | None = None


def _prepare(batch: list[_Item], conn: Connection, memo: dict, prepared: dict, refused: list, *,
             under_lock: bool, also: set[int] = frozenset()) -> None:
    """Run each item's prepare; one that refuses or chokes on its own data fails alone.

    A database error is different: the transaction is broken for everyone, so it
    fails the batch.
    """
    for index, item in enumerate(batch):
        if item.under_lock == under_lock or index in also:
            try:
                prepared[index] = item.prepare(conn, memo)
            except SQLAlchemyError:
                raise
            except Exception as exc:  # noqa: BLE001 - handed to that caller, not swallowed
                refused.append((item.future, exc))
