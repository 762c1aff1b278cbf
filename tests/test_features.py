"""Features from ledger events: pseudonyms only, opted-out people left out, counts that add up."""

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.features import FEATURE_NAMES, DecisionEvent, decision_events, extract

POLICY = "p, role:eng, prod, db/*, read, *, allow\ng, alice, role:eng, *\ng, bob, role:eng, *\n"


def test_opted_out_people_produce_no_features(client, auth, load_policy, warden, make_token):
    load_policy(POLICY)
    for subject in ("alice", "bob", "alice"):
        client.post("/v1/authorize", headers=auth, json={"subject": subject, "domain": "prod",
                                                         "object": "db/x", "action": "read"})
    before = list(decision_events(warden.engine, warden.vault))
    assert len(before) == 3 and not {"alice", "bob"} & {e.subject for e in before}
    privacy = {"Authorization": f"Bearer {make_token('privacy')}"}
    client.post("/v1/privacy/requests", json={"subject": "bob", "kind": "opt_out"}, headers=privacy)
    client.post("/v1/authorize", headers=auth, json={"subject": "bob", "domain": "prod", "object": "db/y",
                                                     "action": "read"})
    with warden.engine.connect() as conn:
        bob = warden.vault.find(conn, "bob").pseudonym
    after = list(decision_events(warden.engine, warden.vault))
    assert len(after) == 2 and bob not in {e.subject for e in after}
    seqs, matrix = extract(after)
    assert matrix.shape == (2, len(FEATURE_NAMES)) and seqs == [e.seq for e in after]


T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
events = st.lists(st.builds(
    DecisionEvent, seq=st.integers(1, 10**6), time=st.integers(0, 7200).map(lambda s: T0 + timedelta(seconds=s)),
    subject=st.sampled_from(["p_a", "p_b"]), domain=st.just("prod"), object=st.sampled_from(["db/x", "db/y"]),
    action=st.sampled_from(["read", "write"]), workflow=st.sampled_from(["", "maint"]), allowed=st.booleans(),
), max_size=25, unique_by=lambda e: e.seq).map(
    # ledger order is time order: give later seqs later times
    lambda es: [DecisionEvent(e.seq, t, e.subject, e.domain, e.object, e.action, e.workflow, e.allowed)
                for e, t in zip(sorted(es, key=lambda e: e.seq), sorted(e.time for e in es))])


@settings(max_examples=100, deadline=None)
@given(events, st.randoms())
def test_window_counts_match_a_brute_force_count(evs, rnd):
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    seqs, matrix = extract(shuffled)
    assert seqs == sorted(e.seq for e in evs)
    column = FEATURE_NAMES.index("subject_events_1h")
    for i, event in enumerate(sorted(evs, key=lambda e: e.seq)):
        earlier = [e for e in evs if e.seq < event.seq and e.subject == event.subject
                   and event.time - e.time <= timedelta(hours=1)]
        assert matrix[i, column] == len(earlier)


@settings(max_examples=150, deadline=None)
@given(events, st.data())
def test_extracting_only_new_decisions_gives_the_rows_a_full_extraction_gives(evs, data):
    """What a scoring run does: the new decisions, the hour before them, and the objects used before."""
    from detectors.features import WINDOW

    if not evs:
        return
    k = data.draw(st.integers(0, len(evs) - 1))
    old, new = evs[:k], evs[k:]
    seqs, full = extract(evs)
    since = min(e.time for e in new) - WINDOW
    new_seqs, rows = extract(new, lookback=[e for e in old if e.time >= since],
                             seen={(e.subject, e.object) for e in old})
    assert new_seqs == seqs[k:]
    assert (rows == full[k:]).all()
