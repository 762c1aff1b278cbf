"""The group committer's lingering: it waits for callers that said they are coming, and only for them."""

import threading
import time

import pytest

from audit.db import make_engine
from audit.group_commit import CommitFailed, GroupCommitter
from audit.ledger import Entry, Ledger

LINGER = 5.0  # long enough that waiting it out would show


@pytest.fixture
def committer(database_url):
    engine = make_engine(database_url)
    committer = GroupCommitter(engine, Ledger(engine), linger=LINGER)
    assert submit(committer, "warm-up") == 1
    committer._concurrent = True  # as after a batch of several callers: the writer lingers now
    yield committer
    committer.close()
    engine.dispose()


def submit(committer: GroupCommitter, name: str, ticket=None) -> int:
    return committer.submit(lambda conn, memo: ([Entry("test", {"name": name})], None), ticket=ticket)[0][0].seq


def in_background(action) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(action()))
    thread.start()
    return thread, out


def test_with_nobody_coming_the_writer_commits_at_once(committer):
    started = time.monotonic()
    assert submit(committer, "alone") == 2
    assert time.monotonic() - started < LINGER / 2


def test_the_writer_waits_for_a_caller_that_is_coming_and_commits_when_it_arrives(committer):
    with committer.expecting() as ticket:
        first, seqs = in_background(lambda: submit(committer, "first"))
        time.sleep(0.3)
        assert first.is_alive()  # held back: a caller is still making its entries
        started = time.monotonic()
        assert submit(committer, "second", ticket) in (2, 3)
    first.join(LINGER)
    assert time.monotonic() - started < LINGER / 2 and sorted(seqs) in ([2], [3])
    assert committer.batches == 2  # the warm-up, then both together


def test_a_caller_that_fails_before_submitting_does_not_hold_the_batch(committer):
    with pytest.raises(RuntimeError):
        with committer.expecting():
            first, seqs = in_background(lambda: submit(committer, "first"))
            time.sleep(0.3)
            started = time.monotonic()
            raise RuntimeError("deciding failed")
    first.join(LINGER)
    assert seqs == [2] and time.monotonic() - started < LINGER / 2


class Told:
    """An outcome that records what the writer told it, and in which thread."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.told: list = []
        self.done = threading.Event()

    def set_result(self, value):
        self.told.append(("result", value[0][0].seq, threading.current_thread().name))
        self.done.set()
        if self.fail:
            raise RuntimeError("this caller's handler is broken")

    def set_exception(self, error):
        self.told.append(("error", error, threading.current_thread().name))
        self.done.set()


def test_submit_later_tells_each_caller_once_from_the_writer_even_past_a_broken_handler(committer):
    broken, fine = Told(fail=True), Told()
    batches = committer.batches
    with committer.expecting() as first, committer.expecting() as second:  # so they share one batch
        committer.submit_later(lambda conn, memo: ([Entry("test", {"n": 1})], None), broken, ticket=first)
        committer.submit_later(lambda conn, memo: ([Entry("test", {"n": 2})], None), fine, ticket=second)
    assert broken.done.wait(10) and fine.done.wait(10)
    assert broken.told == [("result", 2, "warden-ledger-writer")]
    assert fine.told == [("result", 3, "warden-ledger-writer")]
    assert committer.batches == batches + 1
    assert submit(committer, "after") == 4  # the writer carried on


def test_submit_later_on_a_closed_writer_refuses_at_once(committer):
    committer.close()
    with pytest.raises(CommitFailed):
        committer.submit_later(lambda conn, memo: ([Entry("test", {})], None), Told())
