"""DecisionService.authorize_later: the answer comes from the ledger writer once the record is committed."""

import threading
import time

import pytest
from prometheus_client import REGISTRY

from audit.ledger import Entry
from audit.memory import NotInMemory
from authz.requests import parse_authorize
from tests.authz.test_api import break_ledger, mend_ledger
from tests.conftest import ledger_rows

POLICY = "p, role:engineer, prod, db/*, read, maintenance, allow\ng, alice, role:engineer, *\n"
ALLOWED = {"subject": "alice", "domain": "prod", "object": "db/customers", "action": "read",
           "context": {"workflow": "maintenance"}}


def later(warden, body: dict, offload=None) -> tuple[dict | None, str, list]:
    """(answer, the thread `then` ran in, what was offloaded)."""
    done, out, offloaded = threading.Event(), [], []

    def then(answer):
        out.append((answer, threading.current_thread().name))
        done.set()

    def run_elsewhere(work):
        offloaded.append(work)
        threading.Thread(target=work, name="pool").start()

    warden.decisions.authorize_later(parse_authorize(body), service="svc", request_id="r1", then=then,
                                     offload=offload or run_elsewhere)
    assert done.wait(10)
    return (*out[0], offloaded)


def test_the_writer_answers_once_the_record_is_committed(warden, load_policy):
    load_policy(POLICY)
    answer, thread, offloaded = later(warden, ALLOWED)
    assert thread == "warden-ledger-writer" and offloaded == []
    assert answer["allowed"] is True and answer["review"] is None
    row = next(r for r in ledger_rows(warden.engine) if r.seq == answer["audit_seq"])
    assert row.kind == "decision" and answer["decision_id"] in row.body


def test_a_decision_that_opens_a_review_item_is_answered_off_the_writer(warden, load_policy):
    load_policy(POLICY)
    answer, thread, offloaded = later(warden, {**ALLOWED, "context": {"workflow": "break-glass"}})
    assert thread == "pool" and len(offloaded) == 1
    assert answer["review"]["detector"] == "break_glass"


def test_no_durable_record_answers_none(warden, load_policy):
    load_policy(POLICY)
    before = ledger_rows(warden.engine)
    break_ledger(warden.engine)
    try:
        answer, _, _ = later(warden, ALLOWED)
    finally:
        mend_ledger(warden.engine)
    assert answer is None
    assert ledger_rows(warden.engine) == before


def test_a_failing_offload_still_answers(warden, load_policy):
    load_policy(POLICY)

    def broken(work):
        raise RuntimeError("the pool is shut down")
    answer, thread, _ = later(warden, {**ALLOWED, "context": {"workflow": "break-glass"}}, offload=broken)
    assert thread == "warden-ledger-writer"
    assert answer["decision_id"] and answer["review"] is None  # the next scoring run opens it


def test_the_writer_carries_on_after_answers(warden, load_policy):
    load_policy(POLICY)
    first, _, _ = later(warden, ALLOWED)
    appended, _ = warden.committer.submit(lambda conn, memo: ([Entry("test", {})], None))
    assert appended[0].seq == first["audit_seq"] + 1


def test_a_commit_that_hangs_is_answered_503_at_the_deadline_and_only_once(warden, load_policy):
    load_policy(POLICY)
    later(warden, ALLOWED)  # policy and alice's key cached: deciding needs no database now
    warden.committer.timeout = 1.0  # the watch looks every quarter of it
    answers, first = [], threading.Event()

    def then(answer):
        answers.append(answer)
        first.set()

    blocker = warden.engine.connect()  # holds the ledger's write lock, as a stuck transaction would
    transaction = blocker.begin()  # SQLite: BEGIN IMMEDIATE
    if warden.engine.dialect.name == "postgresql":
        blocker.exec_driver_sql("SELECT seq FROM ledger_head FOR UPDATE")
    try:
        warden.decisions.authorize_later(parse_authorize(ALLOWED), service="svc", request_id="r1", then=then,
                                         offload=lambda work: work())
        assert first.wait(10)
        assert answers == [None]  # 503: no commit within the timeout
    finally:
        transaction.rollback()
        blocker.close()
    warden.committer.submit(lambda conn, memo: ([Entry("test", {})], None))  # the stuck batch is in by now
    assert answers == [None]  # the late commit did not answer a second time


@pytest.mark.parametrize("then_the_read", ["returns", "fails"])
def test_a_decision_stuck_on_a_database_read_is_answered_503_at_the_deadline_and_only_once(
        warden, load_policy, monkeypatch, then_the_read):
    """The deadline counts from the request, not from the queued record: a read deciding waits on (a lock
    held on the ledger head, say) is inside it. Whatever the read does later, nothing more is answered,
    nothing is recorded for the request (its client was told so), and the deny is counted once."""
    load_policy(POLICY)
    later(warden, ALLOWED)
    warden.committer.timeout = 1.0
    answers, released, returned = [], threading.Event(), []
    real_get = warden.decisions.subjects.get

    def stuck_read(names, memory_only=False):
        assert released.wait(10)
        if then_the_read == "fails":
            raise RuntimeError("the read failed after all")
        return real_get(names, memory_only)

    monkeypatch.setattr(warden.decisions.subjects, "get", stuck_read)
    before = len(ledger_rows(warden.engine))
    unaudited = REGISTRY.get_sample_value("warden_decisions_unaudited_total") or 0

    def request():
        warden.decisions.authorize_later(parse_authorize(ALLOWED), service="svc", request_id="r1",
                                         then=answers.append, offload=lambda work: work())
        returned.append(True)

    caller = threading.Thread(target=request)
    caller.start()
    deadline = time.monotonic() + 5
    while not answers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answers == [None] and not returned  # 503 while the read still waits
    released.set()
    caller.join(10)
    assert returned == [True]  # no exception for a request answered already
    warden.committer.submit(lambda conn, memo: ([Entry("test", {})], None))  # any queued record is in by now
    assert answers == [None]
    assert len(ledger_rows(warden.engine)) == before + 1  # the test's own record only
    assert (REGISTRY.get_sample_value("warden_decisions_unaudited_total") or 0) == unaudited + 1


def test_memory_only_refuses_what_needs_the_database_and_queues_nothing(warden, load_policy, make_token):
    """The worker's poller asks for memory only: a person, the policy or a token not cached yet is
    NotInMemory, with nothing queued or counted; asked again without it, the decision is made."""
    load_policy(POLICY)
    token = make_token("authorize")
    with pytest.raises(NotInMemory):
        warden.authenticate(token, memory_only=True)
    assert "authorize" in warden.authenticate(token).scopes
    assert warden.authenticate(token, memory_only=True).name == warden.authenticate(token).name

    before = ledger_rows(warden.engine)
    unaudited = REGISTRY.get_sample_value("warden_decisions_unaudited_total") or 0
    for body in (ALLOWED, {**ALLOWED, "subject": "somebody-new"}):
        with pytest.raises(NotInMemory):  # first the policy is not loaded, then the person is not known
            warden.decisions.authorize_later(parse_authorize(body), service="svc", request_id="r1",
                                             then=lambda answer: None, offload=None, memory_only=True)
        later(warden, body)  # without memory_only: decided and recorded, and now cached
    assert len(ledger_rows(warden.engine)) == len(before) + 2
    assert (REGISTRY.get_sample_value("warden_decisions_unaudited_total") or 0) == unaudited
    answer, thread = later_memory_only(warden, {**ALLOWED, "subject": "somebody-new"})
    assert thread == "warden-ledger-writer" and answer["allowed"] is False


def later_memory_only(warden, body: dict) -> tuple[dict | None, str]:
    done, out = threading.Event(), []

    def then(answer):
        out.append((answer, threading.current_thread().name))
        done.set()
    warden.decisions.authorize_later(parse_authorize(body), service="svc", request_id="r1", then=then,
                                     offload=None, memory_only=True)
    assert done.wait(10)
    return out[0]
