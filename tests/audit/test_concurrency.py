"""Concurrent writers, threads and processes, never fork the chain."""

import multiprocessing
import threading

import pytest
from sqlalchemy import text

from audit.db import make_engine
from audit.group_commit import CommitFailed, GroupCommitter
from audit.ledger import Entry, Ledger
from audit.verify import verify_ledger
from tests.conftest import ledger_rows, reset_postgres


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


def _decide_many(url: str, worker: int, threads: int, count: int) -> None:
    import threading as th

    engine = make_engine(url)
    committer = GroupCommitter(engine, Ledger(engine))

    def run(t):
        for i in range(count):
            committer.submit(lambda conn, memo, t=t, i=i: ([Entry("test", {"w": worker, "t": t, "i": i})], None))
    pool = [th.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    committer.close()
    engine.dispose()


def test_group_commit_in_many_processes_keeps_one_chain(database_url):
    """Thousands of records from 4 processes x 8 threads, batched per process, on one chain."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_decide_many, args=(database_url, w, 8, 80)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert [p.exitcode for p in workers] == [0] * 4
    engine = make_engine(database_url)
    _check(engine, 4 * 8 * 80)
    engine.dispose()


def test_group_commit_batches_concurrent_callers(warden):
    gate = threading.Barrier(16)
    results = []

    def run():
        gate.wait()
        results.append(warden.committer.submit(lambda conn, memo: ([Entry("test", {})], None))[0][0].seq)
    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 17))
    assert warden.committer.batches < 16
    # every caller returned after its own record was committed: all of them are readable now
    assert [r.seq for r in ledger_rows(warden.engine)] == list(range(1, 17))


@pytest.mark.postgres
def test_the_writer_replaces_a_connection_the_server_dropped(postgres_migrated):
    """On Postgres the writer keeps one connection between batches; if it dies, that batch fails
    (no answer without a record) and the next one appends on a fresh connection."""
    reset_postgres(postgres_migrated)
    engine = make_engine(postgres_migrated)
    committer = GroupCommitter(engine, Ledger(engine))

    def one(n):
        return committer.submit(lambda conn, memo: ([Entry("test", {"n": n})], None),
                                prepared=([Entry("test", {"n": n})], None), epoch=0)

    assert one(1)[0][0].seq == 1
    writer_pid = committer._conn.connection.dbapi_connection.info.backend_pid
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": writer_pid})
    with pytest.raises(CommitFailed):
        one(2)
    assert one(3)[0][0].seq == 2
    committer.close()
    _check(engine, 2)
    engine.dispose()
