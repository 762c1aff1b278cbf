"""Concurrent writers, threads and processes, never fork the chain."""

import multiprocessing
import threading

from audit.db import make_engine
from audit.ledger import Entry, Ledger
from audit.verify import verify_ledger
from tests.conftest import ledger_rows


def _append_many(url: str, worker: int, count: int) -> None:
    engine = make_engine(url)
    ledger = Ledger(engine)
    for i in range(count):
        ledger.record(Entry("test", {"worker": worker, "i": i}))
    engine.dispose()


def _check(engine, total: int) -> None:
    from audit.signing import LedgerSigner

    rows = ledger_rows(engine)
    assert [r.seq for r in rows] == list(range(1, total + 1))
    report = verify_ledger(engine, LedgerSigner('/nonexistent'))
    assert report.ok, report.first_failure
    assert report.checked == total


def test_threads_append_without_forking(database_url):
    threads = [threading.Thread(target=_append_many, args=(database_url, w, 40)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine = make_engine(database_url)
    _check(engine, 160)
    engine.dispose()


def test_processes_append_without_forking(database_url):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(database_url, w, 60)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0, 0]
    engine = make_engine(database_url)
    _check(engine, 180)
    engine.dispose()
