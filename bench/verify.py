"""Verification speed: `warden audit verify`'s walk against a raw SELECT of the same rows, in one run.

    createdb -h 127.0.0.1 -U postgres warden_bench_verify
    python bench/verify.py --database-url postgresql+psycopg://postgres@127.0.0.1/warden_bench_verify

Fills an empty database with --records decision-sized records (once; rerun to
reuse them), then times (1) fetching every row through a server-side cursor and doing
nothing with it, and (2) full verification (the hash of each record, its link,
its seq and kind, and the columns that repeat the body) in one process and as
`warden audit verify` runs it, one process per CPU. Prints the rates and ratios.
"""

import argparse
import os
import uuid
import tempfile
import time
from contextlib import closing

from app import create_app, upgrade_database
from audit.db import READ_ONLY
from audit.ledger import Entry
from audit.verify import verify_ledger

RECORD = {"decision_id": "00000000-0000-4000-8000-000000000000", "service": "bench", "request_id": "r" * 32,
          "subject": "alice", "domain": "prod", "object": "db/customers", "action": "read",
          "workflow": "maintenance", "context": {"workflow": "maintenance", "ticket": "OPS-12"},
          "allowed": True, "reason": "allowed by role:engineer for workflow maintenance",
          "matched": [["role:engineer", "prod", "db/*", "read", "maintenance", "allow"]], "policy_version": 1}


INDEX = {k: RECORD[k] for k in ("decision_id", "subject", "domain", "object", "action", "allowed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="as `warden audit verify --processes` (default: one per CPU, as the CLI)")
    args = parser.parse_args()
    upgrade_database(args.database_url)
    app = create_app({"DATABASE_URL": args.database_url, "KEY_DIR": tempfile.mkdtemp()})
    warden = app.extensions["warden"]
    have = warden.ledger.head()[0]
    while have < args.records:
        batch = min(10_000, args.records - have)
        with warden.engine.begin() as conn:
            entries = []
            for _ in range(batch):
                data = {**RECORD, "decision_id": str(uuid.uuid4())}
                entries.append(Entry("decision", data, {**INDEX, "decision_id": data["decision_id"]}))
            warden.ledger.append(conn, entries)
        have += batch
        print(f"\rfilling: {have}/{args.records}", end="", flush=True)
    print()

    with warden.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        start = time.perf_counter()
        with closing(warden.ledger.records(conn, with_columns=True)) as rows:
            count = sum(1 for _ in rows)
        raw = count / (time.perf_counter() - start)
    rates = {}
    for processes in (1, args.processes):
        start = time.perf_counter()
        report = verify_ledger(warden.engine, warden.signer, processes=processes)
        rates[processes] = report.checked / (time.perf_counter() - start)
        assert report.ok, report.first_failure
    print(f"records: {count}, verify ok")
    print(f"raw SELECT of the same rows:           {raw:>10.0f} records/s")
    print(f"verify in one process:                 {rates[1]:>10.0f} records/s")
    print(f"warden audit verify ({args.processes} processes):     {rates[args.processes]:>10.0f} records/s")
    print(f"ratio verify/raw: {rates[args.processes] / raw:.2f} (one process: {rates[1] / raw:.2f})")


if __name__ == "__main__":
    main()
