"""The group committer's lingering: it waits for callers that said they are coming, and only for them."""

import threading
import time

import pytest

from audit.db import make_engine
from audit.group_commit import GroupCommitter
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
