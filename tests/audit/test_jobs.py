"""Scheduled upkeep: checkpoints every N records or M seconds, and the purge on its interval."""

from audit.jobs import LedgerJobs
from audit.ledger import Entry


def make_jobs(warden, tmp_path, purges):
    return LedgerJobs(warden.checkpoints, lambda: purges.append(1), every_records=5, every_seconds=60,
                      purge_hours=24, export_dir=str(tmp_path / "cp"))


def test_checkpoint_after_n_records_or_m_seconds(warden, tmp_path):
    purges = []
    jobs = make_jobs(warden, tmp_path, purges)
    start = jobs._last_checkpoint_at
    for i in range(3):
        warden.ledger.record(Entry("test", {"i": i}))
    jobs.tick(start + 1)
    assert warden.checkpoints.latest() is None  # 3 behind, 1 s: not yet
    jobs.tick(start + 61)
    assert warden.checkpoints.latest().seq == 3  # time is up
    for i in range(5):
        warden.ledger.record(Entry("test", {"i": i}))
    jobs.tick(start + 62)
    assert warden.checkpoints.latest().seq == 8  # five records behind
    assert sorted(p.name for p in (tmp_path / "cp").iterdir()) == ["checkpoint-000000000003.json",
                                                                  "checkpoint-000000000008.json"]


def test_purge_runs_on_its_interval(warden, tmp_path):
    purges = []
    jobs = make_jobs(warden, tmp_path, purges)
    jobs.tick(1000.0)
    jobs.tick(1000.0 + 3600)
    assert purges == [1]
    jobs.tick(1000.0 + 24 * 3600)
    assert purges == [1, 1]
