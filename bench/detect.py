"""Scoring cost: `detect train` and `detect run` against reading the same decisions, in one run.

    python bench/detect.py                      # a temporary SQLite database
    python bench/detect.py --database-url postgresql+psycopg://postgres@127.0.0.1/warden_bench_detect

Records --decisions decisions of --people people (all within minutes: the worst
case for the one-hour look-back), then times: reading and parsing every decision
record (the baseline), training, a run over all of them, a run with 100 new
ones, and a run with nothing new; each is printed with its ratio to the baseline.
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app, upgrade_database  # noqa: E402
from authz.requests import parse_authorize  # noqa: E402
from authz.rules import parse_policy_csv  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an empty database (default: a temporary SQLite file)")
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=50)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="warden-bench-detect-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    upgrade_database(url)
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(workdir), "KEY_DIR": str(workdir / "keys")})
    warden = app.extensions["warden"]
    warden.policies.apply(parse_policy_csv("p, role:s, prod, db/*, read, support, allow\n" + "".join(
        f"g, person{i}, role:s, *\n" for i in range(args.people))), replace=True, actor="bench")
    rnd = random.Random(1)

    def record(count: int) -> None:
        for start in range(0, count, 1000):
            warden.decisions.authorize([parse_authorize({
                "subject": f"person{rnd.randrange(args.people)}", "domain": "prod",
                "object": f"db/table{rnd.randrange(20)}", "action": "read", "context": {"workflow": "support"}})
                for _ in range(min(1000, count - start))], service="bench", request_id="bench")

    started = time.perf_counter()
    record(args.decisions)
    print(f"recorded {args.decisions} decisions of {args.people} people in {time.perf_counter() - started:.0f} s")

    def timed(what):
        started = time.perf_counter()
        what()
        return time.perf_counter() - started

    def read_all():
        with warden.engine.connect() as conn:
            for (body,) in conn.exec_driver_sql("SELECT body FROM ledger_records WHERE kind = 'decision'"):
                json.loads(body)

    baseline = timed(read_all)
    print(f"baseline: read and parse every decision record   {baseline:7.2f} s")
    for label, step in (("detect train", lambda: warden.scoring.train(actor="bench")),
                        ("detect run, all decisions new", lambda: warden.scoring.run(actor="bench")),
                        ("record 100 more, detect run", lambda: (record(100), warden.scoring.run(actor="bench"))),
                        ("detect run, nothing new", lambda: warden.scoring.run(actor="bench"))):
        seconds = timed(step)
        print(f"{label:42s}  {seconds:7.2f} s   ratio to baseline {seconds / baseline:6.2f}")


if __name__ == "__main__":
    main()
