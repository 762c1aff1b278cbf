"""Walking the chain and naming the first record that does not hold.

The report reads like CloudTrail's `validate-logs`: how many records were
checked, from where, against how many signed checkpoints, and the first failure
with its kind.
"""

from collections.abc import Callable, Iterable
from contextlib import closing

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from audit.chain import GENESIS_HASH
from audit.checkpoints import Checkpoints, Signed, statement_matches
from audit.db import READ_ONLY
from audit.ledger import Ledger
from audit.models import LedgerHead
from audit.signing import LedgerSigner
from audit.walk import BAD_CHECKPOINT, BAD_SEAL, REWRITTEN, UNKNOWN_KEY, Report, Walk

def _walk_on_postgres(walk: Walk, conn: Connection, processes: int) -> None:
    """Walk on through COPY (see audit.verify_ranges); the driver's errors come out as SQLAlchemy's,
    as from any other statement."""
    import psycopg  # only here: SQLite installs may lack it

    from audit.verify_ranges import walk_in_ranges

    try:
        walk_in_ranges(walk, conn.connection.dbapi_connection,
                       conn.engine.dialect.create_connect_args(conn.engine.url)[1], processes)
    except psycopg.Error as exc:
        raise DBAPIError.instance("COPY ledger_records", None, exc, psycopg.Error) from exc


def _signature_problem(signed: Signed, kind: str, signer: LedgerSigner) -> tuple[str, str] | None:
    """Return (failure kind, message) when `signed` is not a valid statement of `kind`, else None."""
    what = "purge seal through record" if kind == "seal" else "checkpoint at record"
    if signer.public_key(signed.key_id) is None:
        return UNKNOWN_KEY, (f"the {what} {signed.seq} is signed by key {signed.key_id}, which is not in the "
                             f"key directory ({signer.key_dir}); restore its ledger-{signed.key_id}.pub")
    if not (statement_matches(signed, kind) and signer.check(signed.statement.encode("utf-8"), signed.key_id,
                                                             signed.signature)):
        return (BAD_SEAL if kind == "seal" else BAD_CHECKPOINT,
                f"the {what} {signed.seq} does not carry a valid signature: forged or altered")
    return None


def verify_ledger(engine: Engine, signer: LedgerSigner, *, external: Iterable[Signed] = (),
                  from_checkpoint: bool = False, progress: Callable[[int], None] | None = None,
                  processes: int = 1) -> Report:
    """Verify the stored chain from the latest seal (or the start) against its head and every checkpoint.

    `external` adds checkpoints kept outside the database; `from_checkpoint` starts
    after the newest valid checkpoint instead (an incremental run). On Postgres,
    `processes` > 1 shares a long chain among that many processes.
    """
    ledger = Ledger(engine)
    report = Report()
    options = dict(READ_ONLY)
    if engine.dialect.name == "postgresql":
        # One snapshot for the head, the checkpoints and every row, while appends go on. Read
        # committed would read the rows later than the head, and call the newer ones beyond it.
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as conn, conn.begin():
        head_table = LedgerHead.__table__
        head = tuple(conn.execute(select(head_table.c.seq, head_table.c.hash)).one())
        report.head_seq, report.head_hash = head
        store = Checkpoints(engine, ledger, signer)
        seals, signed = store.seals(conn), store.stored(conn) + list(external)
        start_seq, start_hash = 1, GENESIS_HASH
        if seals:
            seal = seals[-1]
            if problem := _signature_problem(seal, "seal", signer):
                return report.fail(seal.seq, *problem)
            start_seq, start_hash = seal.seq + 1, seal.hash
            report.sealed_through = seal.seq
        checkpoints: dict[int, str] = {}
        for checkpoint in sorted(signed, key=lambda c: c.seq):
            if problem := _signature_problem(checkpoint, "checkpoint", signer):
                return report.fail(checkpoint.seq, *problem)
            if checkpoint.seq == start_seq - 1 and checkpoint.hash != start_hash:
                return report.fail(checkpoint.seq, REWRITTEN, f"the purge seal and the checkpoint at "
                                                              f"{checkpoint.seq} disagree")
            if checkpoint.seq >= start_seq:
                if checkpoints.get(checkpoint.seq, checkpoint.hash) != checkpoint.hash:
                    return report.fail(checkpoint.seq, REWRITTEN, f"two signed checkpoints at {checkpoint.seq} "
                                                                  "name different hashes")
                checkpoints[checkpoint.seq] = checkpoint.hash
        if from_checkpoint and checkpoints:
            newest = max(checkpoints)
            start_seq, start_hash = newest + 1, checkpoints[newest]
            report.from_checkpoint = newest
            report.checkpoints_checked = 1
        walk = Walk(head, start_seq=start_seq, start_hash=start_hash, checkpoints=checkpoints, report=report,
                    progress=progress)
        if engine.dialect.name == "postgresql":
            _walk_on_postgres(walk, conn, processes)
        else:
            with closing(ledger.records(conn, after_seq=start_seq - 1, with_columns=True)) as rows:
                walk.rows(rows)
        return walk.end()
