"""Verifying a long chain on Postgres in several processes at once, one range of seqs each.

Every process reads the same snapshot (exported by the one that holds the head),
so together they see one moment of the ledger. A range's process reports only
"every record here holds, linked from hash A to hash B"; the parent joins the
ranges in order, and where a range does not hold or does not join, it walks on
from there itself, so the report is always the one a single walk would give.

A helper process is `python -m audit.verify_ranges`: a job in JSON on its stdin,
the outcome in JSON on its stdout. It imports only what a walk needs.
"""

import json
import logging
import re
import subprocess
import sys
import tempfile
from contextlib import closing
from dataclasses import dataclass

import psycopg

from audit.verify_blocks import block_holds, copy_blocks, parse_rows, verifying_session
from audit.walk import Walk

MIN_RECORDS_PER_PROCESS = 100_000  # below this a helper costs more to start than it saves
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")
log = logging.getLogger(__name__)


def walk_blocks(walk: Walk, dbapi_connection, after_seq: int, upto_seq: int | None = None) -> bool:
    """Walk the records after `after_seq` (up to `upto_seq`), a block at a time; False at a failure."""
    with closing(copy_blocks(dbapi_connection, after_seq, upto_seq)) as blocks:
        for text in blocks:
            if not block_holds(text, walk) and not walk.rows(parse_rows(text)):
                return False
    return True


def walk_in_ranges(walk: Walk, dbapi_connection, connect_kwargs: dict, processes: int) -> None:
    """Walk on to the end of the chain, sharing the records after the walk's start among up to
    `processes` processes (one per MIN_RECORDS_PER_PROCESS records at most)."""
    verifying_session(dbapi_connection)
    after = walk.expected_seq - 1
    processes = min(processes, (walk.report.head_seq - after) // MIN_RECORDS_PER_PROCESS)
    if processes < 2:
        walk_blocks(walk, dbapi_connection, after)
        return
    share = (walk.report.head_seq - after) // processes
    snapshot = _export_snapshot(dbapi_connection)
    bounds = [after + i * share for i in range(processes)] + [None]  # the last range runs past the head
    helpers: list[_Helper] = []
    try:
        for i in range(1, processes):
            helpers.append(_Helper.start(connect_kwargs, snapshot, bounds[i], bounds[i + 1], walk))
        if not walk_blocks(walk, dbapi_connection, bounds[0], bounds[1]):
            return
        for helper in helpers:
            outcome = helper.outcome()
            if walk.expected_seq != helper.after + 1 or outcome is None or outcome["first_prev"] != walk.prev_hash:
                walk_blocks(walk, dbapi_connection, walk.expected_seq - 1)  # the walk names what broke
                return
            walk.skip(outcome["checked"], outcome["last_hash"], outcome["checkpoints"])
    finally:
        for helper in helpers:  # those whose range is no longer needed, or done already
            helper.stop()


def _export_snapshot(dbapi_connection) -> str:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT pg_export_snapshot()")
        return cursor.fetchone()[0]


@dataclass
class _Helper:
    """A helper process walking the records after `after` (up to `upto`)."""

    process: subprocess.Popen
    errors: object  # a temporary file: what the helper printed on stderr
    after: int
    upto: int | None

    @classmethod
    def start(cls, connect_kwargs: dict, snapshot: str, after: int, upto: int | None, walk: Walk) -> "_Helper":
        # The driver's own objects (SQLAlchemy passes psycopg an adapters map) stay behind: a helper
        # needs only where to connect and as whom. The password travels on stdin, never in argv.
        connect = {k: v for k, v in connect_kwargs.items() if isinstance(v, (str, int, float, bool))}
        connect = {"connect_timeout": 10, **connect, "client_encoding": "UTF8"}
        job = {"connect": connect, "snapshot": snapshot, "after": after, "upto": upto,
               "head": [walk.report.head_seq, walk.report.head_hash],
               "checkpoints": {str(s): h for s, h in walk.checkpoints.items()
                               if s > after and (upto is None or s <= upto)}}
        errors = tempfile.TemporaryFile()
        try:
            # -P: not the current directory first on sys.path, where a folder named `audit` could
            # stand in for this package and vouch for records it never read.
            process = subprocess.Popen([sys.executable, "-P", "-m", "audit.verify_ranges"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=errors, text=True)
        except BaseException:
            errors.close()
            raise
        helper = cls(process, errors, after, upto)
        try:
            process.stdin.write(json.dumps(job))
            process.stdin.close()
        except OSError:
            pass  # it died at once: outcome() says so
        return helper

    def outcome(self) -> dict | None:
        """What the helper found when every record of its range holds, else None (and a warning)."""
        output = self.process.stdout.read()
        if self.process.wait() == 0 and output.strip() not in ("", "null"):
            return json.loads(output)
        if self.process.returncode != 0:
            self.errors.seek(0)
            lines = self.errors.read().decode("utf-8", "replace").strip().splitlines()
            log.warning("the helper verifying records %d..%s failed (%s); walking them here instead",
                        self.after + 1, self.upto or "the end", lines[-1] if lines else f"exit {self.process.returncode}")
        return None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        self.errors.close()


def verify_range(job: dict) -> dict | None:
    """In a helper: walk the job's range in its snapshot; what it found when every record holds, else None."""
    if not _SNAPSHOT_ID.fullmatch(job["snapshot"]):
        raise ValueError("not a snapshot id")
    with psycopg.connect(**job["connect"], autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(f"SET TRANSACTION SNAPSHOT '{job['snapshot']}'")
        verifying_session(conn)
        with conn.cursor() as cursor:
            cursor.execute("SELECT prev_hash FROM ledger_records WHERE seq = %s", (job["after"] + 1,))
            first = cursor.fetchone()
        if first is None:
            return None
        walk = Walk(tuple(job["head"]), start_seq=job["after"] + 1, start_hash=first[0],
                    checkpoints={int(s): h for s, h in job["checkpoints"].items()})
        if not walk_blocks(walk, conn, job["after"], job["upto"]):
            return None
        if job["upto"] is not None and walk.expected_seq != job["upto"] + 1:
            return None
    return {"first_prev": first[0], "last_hash": walk.prev_hash, "checked": walk.report.checked,
            "checkpoints": sorted(s for s in walk.checkpoints if s < walk.expected_seq)}


if __name__ == "__main__":
    print(json.dumps(verify_range(json.loads(sys.stdin.read()))))
