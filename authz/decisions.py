"""The decision path: decide against the current policy, record in the ledger, then answer."""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from audit.db import READ_ONLY
from audit.group_commit import CommitFailed, GroupCommitter, Waiter
from audit.ledger import Entry
from audit.memory import NotInMemory
from audit.metrics import DECISIONS, UNAUDITED
from audit.pii import scrub_value
from audit.process import current_pid
from audit.randomness import uuid7_text
from audit.subject_cache import SubjectCache
from audit.vault import Subject, Vault
from authz.decider import Decision
from authz.policy_store import PolicyStore, Snapshot
from authz.requests import AuthorizeRequest

log = logging.getLogger(__name__)
_DECIDED = {allowed: DECISIONS.labels(allowed=str(allowed).lower()) for allowed in (True, False)}


class ReviewHook(Protocol):
    """Opens review items for decisions as they are recorded (detectors.review.ReviewQueue)."""

    def flags(self, records: list[dict]) -> bool: ...

    def open_for_records(self, records: list[dict]) -> list[dict | None]: ...


class AuditUnavailable(Exception):
    """The ledger could not commit: the caller must answer deny with 503."""


class DecisionService:
    """Decides requests and returns them only once their ledger records are committed.

    Decisions and their records are made in the caller's thread from what this
    process has cached (the policy, people's keys), for the ledger epoch that
    state belongs to. The group committer appends them only if the epoch has not
    moved (a policy change or an erasure moves it); otherwise it has them made
    again, under the chain head lock, from the database.
    """

    def __init__(self, committer: GroupCommitter, policies: PolicyStore, vault: Vault,
                 subjects: SubjectCache, review: "ReviewHook | None" = None):
        self.committer = committer
        self.policies = policies
        self.vault = vault
        self.subjects = subjects
        # Given the decisions just recorded ({data, seq, time, opted_out}; pseudonyms only), `review`
        # opens items at once where a rule needs no history (`open_for_records`, which says per decision
        # what its answer's `review` is), and tells whether it would (`flags`, no database work).
        self.review = review
        self._view: tuple[int, Snapshot] | None = None  # (epoch, the policy as of that epoch)
        self._watch_lock = threading.Lock()
        self._watcher_pid: int | None = None
        self._waiting: deque = deque()  # authorize_later's outcomes, oldest first, until answered

    def authorize(self, requests: list[AuthorizeRequest], *, service: str, request_id: str,
                  stop: Callable[[Decision], bool] | None = None) -> list[dict]:
        """Return one answer per request, in order, each backed by a durable ledger record.

        With `stop`, deciding ends after the first decision it is true for (AuthZEN's
        short-circuit semantics); only the decisions made are recorded and returned.
        Raises AuditUnavailable when the records cannot be committed: then nothing
        was decided as far as any caller knows.
        """
        waiter = Waiter()
        self._record(requests, service, request_id, stop, waiter)
        try:
            appended, result = waiter.result(self.committer.timeout)
        except Exception as exc:
            raise self._unaudited(len(requests), exc) from exc
        return self._answers(appended, result, self._reviews)

    def authorize_later(self, request: AuthorizeRequest, *, service: str, request_id: str,
                        then: Callable[[dict | None], None], offload: Callable[[Callable[[], None]], object],
                        memory_only: bool = False) -> None:
        """Decide one request and queue its record without waiting for the commit.

        Once the record is committed, `then(answer)` is called in the thread that appended it
        (the ledger writer, or an event loop's own appender: see GroupCommitter.attach_loop);
        `then(None)` if it could not be (deny with 503). When the decision opens a review item,
        which takes a database write, `then` is called from `offload(fn)` (a thread pool's submit)
        instead, so the appender never waits on it.
        Raises AuditUnavailable, before queuing anything, when the decision cannot be made;
        with `memory_only`, NotInMemory when making it needs the database (nothing was queued).
        The deadline counts from now, so a database read that deciding waits on (a lock held on the
        ledger head, say) is inside it: past it, `then(None)`, and then nothing is recorded or raised.
        """
        later = _Later(self, then, offload, time.monotonic() + self.committer.timeout)
        self._watch(later)
        try:
            self._record([request], service, request_id, None, later, memory_only, abandoned=later.answered)
        except Exception:
            if later.claim():
                raise  # nothing was queued and nobody answered: the caller answers, or tries elsewhere
            # The deadline watch answered while deciding waited: that answer stands.

    def _watch(self, later: "_Later") -> None:
        """Keep `later` until it is answered; past its deadline, answer it 503 (as `authorize` does
        when its wait times out), so a commit that hangs never leaves a client without an answer."""
        with self._watch_lock:
            if self._watcher_pid != current_pid():  # first use, or a forked child
                self._watcher_pid = current_pid()
                self._waiting = deque()
                threading.Thread(target=self._watch_deadlines, name="warden-answer-deadlines",
                                 daemon=True).start()
            self._waiting.append(later)

    def _watch_deadlines(self) -> None:
        waiting = self._waiting
        while True:
            time.sleep(min(1.0, self.committer.timeout / 4))
            now = time.monotonic()
            while waiting and (waiting[0].answered() or waiting[0].deadline <= now):
                later = waiting.popleft()
                if later.claim():
                    try:
                        later.fail(CommitFailed(f"no commit within {self.committer.timeout:.0f}s"))
                    except Exception:  # noqa: BLE001 - the watch must outlive any one answer
                        log.exception("answering a request past its deadline failed")

    def _record(self, requests: list[AuthorizeRequest], service: str, request_id: str,
                stop: Callable[[Decision], bool] | None, outcome, memory_only: bool = False,
                abandoned: Callable[[], bool] = lambda: False) -> None:
        """Decide in this thread and queue the records; the writer tells `outcome` how the commit went.
        `memory_only`: raise NotInMemory, queuing nothing, where deciding needs the database.
        `abandoned()` true once deciding is done: the caller was answered meanwhile (a 503 at its
        deadline, counted already), so nothing is queued, and a failure raises as it is, uncounted."""
        names = {item.request.subject for item in requests}

        def decide(snapshot: Snapshot, subjects: dict):
            decided = []
            for item in requests:
                decision = snapshot.decider.decide(item.request)
                decided.append((item, decision, uuid7_text()))
                if stop is not None and stop(decision):
                    break
            entries = [_entry(item, decision, decision_id, service, request_id, snapshot.version,
                              subjects[item.request.subject])
                       for item, decision, decision_id in decided]
            self.committer.ledger.serialize(entries)  # here, not in the writer's critical path
            opted_out = [subjects[item.request.subject].opted_out for item, _, _ in decided]
            return entries, (snapshot, decided, entries, opted_out)

        def decide_again(conn, memo):
            # The epoch moved: under the head lock, from the database.
            if "policy" not in memo:
                memo["policy"] = self.policies.snapshot(conn)
                self._view = (memo["epoch"], memo["policy"])
                self.subjects.forget(unless_epoch=memo["epoch"])
            return decide(memo["policy"], self.vault.subjects(conn, names))

        def decide_fresh(fresh: bool = True, memory_only: bool = False):
            epoch, snapshot = self._policy_view(fresh=fresh, memory_only=memory_only)
            if fresh:
                self.subjects.forget(unless_epoch=epoch)
            subjects, subjects_epoch = self.subjects.get(names, memory_only)
            # When one of them is behind, the epoch matches nothing and the writer sorts it out.
            return (*decide(snapshot, subjects), epoch if subjects_epoch == epoch else -1)

        try:
            with self.committer.expecting() as ticket:  # a lingering writer waits for these records
                entries, result, epoch = decide_fresh(fresh=False, memory_only=memory_only)
                if abandoned():
                    return
                self.committer.submit_later(decide_again, outcome, prepared=(entries, result), epoch=epoch,
                                            refresh=decide_fresh, ticket=ticket)
        except NotInMemory:
            raise  # nothing was queued: the caller tries again where the database may be waited on
        except Exception as exc:  # a lost key, a closed writer, anything: no record, so no decision
            if abandoned():
                raise
            raise self._unaudited(len(requests), exc) from exc

    @staticmethod
    def _unaudited(count: int, exc: BaseException) -> AuditUnavailable:
        """Log and count decisions that were not recorded; the error to answer them with."""
        log.error("decision not recorded, denying %d request(s): %s: %s", count, type(exc).__name__, exc)
        UNAUDITED.inc(count)
        return AuditUnavailable(str(exc))

    def _answers(self, appended: list, result: tuple, reviews: Callable) -> list[dict]:
        """The answers of committed decisions (counted in the metrics)."""
        snapshot, decided, entries, opted_out = result
        for _, decision, _ in decided:
            _DECIDED[decision.allowed].inc()
        return [{"allowed": decision.allowed, "decision_id": decision_id, "audit_seq": record.seq,
                 "policy_version": snapshot.version, "reason": decision.reason,
                 "matched": decision.matched, "review": review}
                for (item, decision, decision_id), record, review
                in zip(decided, appended, reviews(appended, result))]

    @staticmethod
    def _review_records(appended: list, result: tuple) -> list[dict]:
        """What the review hook is given: the decisions just recorded, pseudonyms only."""
        _, _, entries, opted_out = result
        return [{"data": entry.data, "seq": record.seq, "time": record.time, "opted_out": out}
                for entry, record, out in zip(entries, appended, opted_out)]

    def _reviews(self, appended: list, result: tuple) -> list[dict | None]:
        """The `review` of each answer (people who opted out of profiling are not reviewed). The
        decisions are recorded already, so a failure here only logs: the next scoring run opens them."""
        if self.review is None:
            return [None] * len(appended)
        try:
            return self.review.open_for_records(self._review_records(appended, result))
        except Exception:
            log.exception("opening review items at decision time failed; the next scoring run will")
            return [None] * len(appended)

    def _policy_view(self, fresh: bool = False, memory_only: bool = False) -> tuple[int, Snapshot]:
        """The cached (epoch, policy); read from the database the first time, or when `fresh`
        (`memory_only`: NotInMemory instead of the first read)."""
        view = self._view
        if view is None and memory_only:
            raise NotInMemory("the policy is not loaded yet")
        if view is None or fresh:
            with self.committer.engine.connect().execution_options(**READ_ONLY) as conn:
                epoch = self.committer.ledger.epoch(conn)  # first: the policy read next is at least this fresh
                view = self._view = (epoch, self.policies.snapshot(conn))
        return view


def _no_reviews(appended: list, result: tuple) -> list[None]:
    return [None] * len(appended)


class _Later:
    """The outcome of one `authorize_later`: makes the answer and hands it to `then`, exactly once,
    whoever comes first: the writer with the commit's outcome, or the deadline watch."""

    __slots__ = ("service", "then", "offload", "deadline", "_once")

    def __init__(self, service: DecisionService, then: Callable[[dict | None], None],
                 offload: Callable[[Callable[[], None]], object], deadline: float):
        self.service, self.then, self.offload, self.deadline = service, then, offload, deadline
        self._once = threading.Lock()

    def claim(self) -> bool:
        """True for the first caller only: it answers."""
        return self._once.acquire(blocking=False)

    def answered(self) -> bool:
        return self._once.locked()

    def set_result(self, value) -> None:
        if not self.claim():
            return  # the deadline came first: answered 503 already
        appended, result = value
        review = self.service.review
        try:
            if review is not None and review.flags(self.service._review_records(appended, result)):
                self.offload(lambda: self._answer(appended, result, self.service._reviews))
                return
        except Exception:  # noqa: BLE001 - answered here then, its review left to the next scoring run
            log.exception("review hook or offload failed for decision %s", appended[0].seq)
        self._answer(appended, result, _no_reviews)

    def set_exception(self, error: BaseException) -> None:
        if self.claim():
            self._offloaded(lambda: self.fail(error))  # logging (maybe to a blocked stderr) off the writer

    def fail(self, error: BaseException) -> None:
        self.service._unaudited(1, error)
        self._hand(None)

    def _answer(self, appended: list, result: tuple, reviews: Callable) -> None:
        try:
            answer = self.service._answers(appended, result, reviews)[0]
        except Exception:  # recorded, but no answer can be made of it: deny, as for no record
            log.exception("decision %s recorded but not answered; denying", appended[0].seq)
            answer = None
        self._hand(answer)

    def _hand(self, answer: dict | None) -> None:
        try:
            self.then(answer)
        except Exception:  # noqa: BLE001 - `then` must not fail; if it does, say so rather than vanish
            log.exception("answering an authorize request failed")

    def _offloaded(self, work: Callable[[], None]) -> None:
        try:
            self.offload(work)
        except Exception:  # noqa: BLE001 - no pool (shutting down): here then
            work()


def _entry(item: AuthorizeRequest, decision: Decision, decision_id: str, service: str,
           request_id: str, version: int, subject: Subject) -> Entry:
    """The ledger entry of one decision: the person only as a pseudonym, their identifier and the
    request context sealed with their key (the context scrubbed of PII first)."""
    request = item.request
    name, pseudonym = request.subject, subject.pseudonym
    reason = decision.reason
    for prefix in ("allowed by ", "denied by rule "):
        if reason.startswith(f"{prefix}{name} ") or reason.startswith(f"{prefix}{name},"):
            reason = prefix + pseudonym + reason[len(prefix) + len(name):]
    data = {"decision_id": decision_id, "service": service, "request_id": request_id,
            "subject": pseudonym, "subject_enc": Vault.seal(subject, name, f"{decision_id}:subject"),
            "domain": request.domain, "object": request.object, "action": request.action,
            "workflow": request.workflow,
            "context_enc": Vault.seal(subject, scrub_value(item.context), f"{decision_id}:context")
            if item.context else None,
            "allowed": decision.allowed, "reason": reason,
            "matched": [[pseudonym if field == name else field for field in rule] for rule in decision.matched],
            "policy_version": version}
    index = {"decision_id": decision_id, "subject": pseudonym, "domain": request.domain,
             "object": request.object, "action": request.action, "allowed": decision.allowed}
    return Entry("decision", data, index)
