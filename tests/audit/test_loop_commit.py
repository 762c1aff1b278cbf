"""The event loop's own group commit (audit/loop_commit.py), on a real Postgres and a real selector loop:
batches sent by the loop's thread, told only once committed, and everything it does not do left to
the writer thread."""

import contextlib
import queue
import selectors
import threading
import time

import pytest
from sqlalchemy import text

from audit.db import make_engine
from audit.group_commit import CommitFailed, GroupCommitter, Waiter
from audit.ledger import Entry, Ledger
from audit.loop_commit import LoopCommitter
from audit.verify import verify_ledger

pytestmark = pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                     indirect=True)


class Told:
    """An Outcome that keeps what it was told, and on which thread."""

    def __init__(self):
        self.value = self.error = self.thread = None
        self.times = 0

    def set_result(self, value):
        self.value, self.thread, self.times = value, threading.get_ident(), self.times + 1

    def set_exception(self, error):
        self.error, self.thread, self.times = error, threading.get_ident(), self.times + 1

    @property
    def seqs(self) -> list[int]:
        return [record.seq for record in self.value[0]]


class Loop:
    """A selector loop on the test's thread, run as the worker's poller runs its own: events, then
    what other threads asked it to do, then the batch of the round."""

    def __init__(self, committer: GroupCommitter):
        self.selector = selectors.DefaultSelector()
        self.asked: queue.SimpleQueue = queue.SimpleQueue()
        self.appender = LoopCommitter(committer, self.selector, self._offload, self.asked.put)

    @staticmethod
    def _offload(work):
        threading.Thread(target=work, daemon=True).start()

    def round(self, timeout: float = 0.02) -> None:
        for key, _ in self.selector.select(timeout):
            key.data(key.fileobj)
        while not self.asked.empty():
            self.asked.get()()
        self.appender.send()

    def until(self, done, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the loop did not get there in time"
            self.round()

    def connected(self) -> "Loop":
        self.appender.start()
        self.until(lambda: self.appender._conn is not None)
        return self


@pytest.fixture
def committer(database_url):
    engine = make_engine(database_url)
    committer = GroupCommitter(engine, Ledger(engine))
    yield committer
    committer.close()
    engine.dispose()


@pytest.fixture
def loop(committer):
    loop = Loop(committer)
    yield loop
    loop.appender.close()


def epoch_now(committer) -> int:
    with committer.engine.connect() as conn:
        return Ledger.epoch(conn)


def submit(committer, name: str, epoch: int, refresh=None) -> Told:
    told = Told()
    entries = [Entry("test", {"name": name})]
    committer.submit_later(lambda conn, memo: (entries, name), told, prepared=(entries, name), epoch=epoch,
                           refresh=refresh)
    return told


def sql(committer, *statements: str) -> None:
    with committer.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


@contextlib.contextmanager
def slow_appends(committer, seconds: float):
    """Every append statement takes `seconds` longer while inside."""
    sql(committer, "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$",
        "CREATE TRIGGER slow AFTER INSERT ON ledger_records FOR EACH STATEMENT EXECUTE FUNCTION slow()")
    try:
        yield
    finally:
        sql(committer, "DROP TRIGGER slow ON ledger_records", "DROP FUNCTION slow()")


def test_what_the_loop_thread_submits_is_appended_by_it_in_one_batch(committer, loop):
    loop.connected()
    epoch = epoch_now(committer)
    told = [submit(committer, f"n{i}", epoch) for i in range(5)]
    assert all(t.times == 0 for t in told)  # queued for the round's batch, not sent yet
    loop.until(lambda: all(t.times for t in told))
    assert [t.seqs for t in told] == [[1], [2], [3], [4], [5]]
    assert [t.value[1] for t in told] == ["n0", "n1", "n2", "n3", "n4"]
    assert {t.thread for t in told} == {threading.get_ident()}
    assert (loop.appender.batches, committer.batches) == (1, 0)  # the writer thread appended nothing
    assert verify_ledger(committer.engine, None).ok


def test_what_is_decided_while_a_batch_is_in_flight_makes_the_next_batch(committer, loop):
    loop.connected()
    epoch = epoch_now(committer)
    with slow_appends(committer, seconds=0.3):
        first = submit(committer, "first", epoch)
        loop.round(timeout=0)  # sent
        later = [submit(committer, f"later{i}", epoch) for i in range(3)]
        loop.round(timeout=0)  # the first batch is still in flight: these wait for it
        assert first.times == 0 and loop.appender._queued
        loop.until(lambda: all(t.times for t in [first, *later]))
    assert [t.seqs for t in [first, *later]] == [[1], [2], [3], [4]]
    assert loop.appender.batches == 2


def test_a_batch_is_told_only_once_its_commit_is_done_and_a_failed_commit_fails_it(committer, loop):
    """The rows of the statement come before the commit; a check deferred to the commit fails after
    them. Nobody may hear of success from the rows alone."""
    loop.connected()
    epoch = epoch_now(committer)
    sql(committer, "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$",
        "CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON ledger_records DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()")
    try:
        told = [submit(committer, f"n{i}", epoch) for i in range(3)]
        loop.until(lambda: all(t.times for t in told))
    finally:
        sql(committer, "DROP TRIGGER at_commit ON ledger_records", "DROP FUNCTION refuse_at_commit()")
    # The writer tried them again, and the database refused them again.
    assert all(isinstance(t.error, CommitFailed) and "refused at commit" in str(t.error) for t in told)
    loop.until(lambda: loop.appender._conn is not None)
    again = submit(committer, "again", epoch)
    loop.until(lambda: again.times)
    assert again.seqs == [1] and again.thread == threading.get_ident() and loop.appender.batches == 1
    assert verify_ledger(committer.engine, None).ok


def test_entries_made_for_an_epoch_that_moved_are_made_again_by_the_writer(committer, loop):
    loop.connected()
    old = epoch_now(committer)
    sql(committer, "UPDATE ledger_head SET epoch = epoch + 1")
    fresh = Entry("test", {"name": "fresh"})
    told = submit(committer, "stale", old, refresh=lambda: ([fresh], "made again", old + 1))
    loop.until(lambda: told.times)
    assert told.value[1] == "made again" and told.seqs == [1]
    assert told.thread != threading.get_ident()  # the writer thread's
    assert (loop.appender.batches, committer.batches) == (0, 1)


def test_before_its_connection_is_up_the_writer_thread_appends(committer, loop):
    told = submit(committer, "early", epoch_now(committer))  # not attached yet: the writer's at once
    loop.appender.start()
    early = submit(committer, "before the connection", epoch_now(committer))
    loop.appender.send()  # no connection yet: handed over
    loop.until(lambda: told.times and early.times)
    assert told.seqs == [1] and early.seqs == [2]
    assert {told.thread, early.thread} != {threading.get_ident()}
    assert loop.appender.batches == 0


def test_a_lost_connection_fails_the_batch_in_flight_and_a_new_one_takes_over(committer, loop):
    loop.connected()
    epoch = epoch_now(committer)
    with slow_appends(committer, seconds=2):
        in_flight = submit(committer, "in flight", epoch)
        loop.round(timeout=0)
        sql(committer, f"SELECT pg_terminate_backend({loop.appender._conn.pgconn.backend_pid})")
        loop.until(lambda: in_flight.times)
    assert isinstance(in_flight.error, CommitFailed)
    meanwhile = submit(committer, "meanwhile", epoch)
    loop.until(lambda: meanwhile.times)
    assert meanwhile.thread != threading.get_ident() and meanwhile.seqs == [1]
    loop.until(lambda: loop.appender._conn is not None)  # made again, a second after the loss
    after = submit(committer, "after", epoch)
    loop.until(lambda: after.times)
    assert after.thread == threading.get_ident() and after.seqs == [2] and loop.appender.batches == 1


def test_a_waiting_submit_on_the_loop_thread_goes_to_the_writer_and_tickets_are_not_counted(committer, loop):
    loop.connected()
    with committer.expecting() as ticket:  # the writer must not linger for what the loop sends itself
        assert committer._coming == 0
        records, result = committer.submit(lambda conn, memo: ([Entry("test", {"n": 1})], "waited"),
                                           ticket=ticket)
    assert result == "waited" and records[0].seq == 1 and committer.batches == 1


def test_closing_fails_what_is_queued_and_lets_the_writer_take_the_thread_back(committer, loop):
    loop.connected()
    queued = submit(committer, "queued", epoch_now(committer))
    loop.appender.close()
    assert isinstance(queued.error, CommitFailed)
    told = submit(committer, "after close", epoch_now(committer))
    deadline = time.monotonic() + 10
    while not told.times and time.monotonic() < deadline:
        time.sleep(0.01)
    assert told.seqs == [1] and told.thread != threading.get_ident()


def test_an_entry_that_cannot_be_serialized_is_refused_alone(committer, loop):
    loop.connected()
    epoch = epoch_now(committer)
    bad, entries = Told(), [Entry("test", {"not json": {1, 2}})]
    committer.submit_later(lambda conn, memo: (entries, None), bad, prepared=(entries, None), epoch=epoch)
    good = submit(committer, "good", epoch)
    loop.until(lambda: bad.times and good.times)
    assert isinstance(bad.error, TypeError) and bad.times == 1
    assert good.seqs == [1] and loop.appender.batches == 1


def test_a_batch_the_database_refuses_is_tried_again_by_the_writer_on_a_new_connection(committer, loop):
    """An error ends the transaction without a commit, so nothing of the batch is in the ledger: the writer
    tries it on its own connection, and the loop makes its own anew (the error may be that session's)."""
    loop.connected()
    first = loop.appender._conn
    sql(committer, "CREATE SEQUENCE refusals",
        "CREATE FUNCTION refuse_once() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF nextval('refusals') = 1 THEN RAISE EXCEPTION 'refused once'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_once BEFORE INSERT ON ledger_records FOR EACH ROW EXECUTE FUNCTION refuse_once()")
    try:
        told = submit(committer, "refused, then taken", epoch_now(committer))
        loop.until(lambda: told.times)
    finally:
        sql(committer, "DROP TRIGGER refuse_once ON ledger_records", "DROP FUNCTION refuse_once()",
            "DROP SEQUENCE refusals")
    assert told.seqs == [1] and told.thread != threading.get_ident()
    loop.until(lambda: loop.appender._conn is not None)
    assert loop.appender._conn is not first
    after = submit(committer, "after", epoch_now(committer))
    loop.until(lambda: after.times)
    assert after.seqs == [2] and after.thread == threading.get_ident()


def test_a_batch_in_flight_past_the_timeout_fails_and_what_waits_goes_to_the_writer(committer, loop):
    loop.connected()
    committer.timeout = 0.5
    epoch = epoch_now(committer)
    with slow_appends(committer, seconds=1.5):
        stuck = submit(committer, "stuck", epoch)
        loop.round(timeout=0)
        waiting = submit(committer, "waiting", epoch)
        loop.until(lambda: stuck.times and waiting.times)
    assert isinstance(stuck.error, CommitFailed) and "within" in str(stuck.error)
    assert waiting.thread != threading.get_ident() and waiting.times == 1


def test_an_item_without_entries_is_told_at_once(committer, loop):
    loop.connected()
    told = Told()
    committer.submit_later(lambda conn, memo: ([], "nothing"), told, prepared=([], "nothing"),
                           epoch=epoch_now(committer))
    loop.round(timeout=0)
    assert told.value == ([], "nothing") and loop.appender._in_flight is None


def test_an_outcome_someone_waits_on_is_never_the_loops(committer, loop):
    """Whoever waits on a Waiter made on the loop's thread is that thread: the loop would never run."""
    loop.connected()
    waiter, entries = Waiter(), [Entry("test", {"n": 1})]
    committer.submit_later(lambda conn, memo: (entries, "w"), waiter, prepared=(entries, "w"),
                           epoch=epoch_now(committer))
    records, result = waiter.result(10)  # no loop round in between
    assert result == "w" and records[0].seq == 1
