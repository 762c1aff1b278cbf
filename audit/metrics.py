"""Prometheus metrics: decisions, ledger batches and failures, second-factor failures.

Under gunicorn each worker is a process: with PROMETHEUS_MULTIPROC_DIR set
(`warden serve` sets it to a fresh folder) the counts of all workers are added up.
"""

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

DECISIONS = Counter("warden_decisions_total", "Decisions recorded and answered", ["allowed"])
UNAUDITED = Counter("warden_decisions_unaudited_total", "Requests denied with 503: the ledger did not commit")
BATCH_SIZE = Histogram("warden_ledger_batch_records", "Records per group-commit transaction",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
COMMIT_SECONDS = Histogram("warden_ledger_commit_seconds", "Time to prepare, append and commit one batch",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
MFA_FAILURES = Counter("warden_mfa_failures_total", "Refused second-factor codes", ["why"])


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type, summed over workers when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
