"""The chain head's epoch, and on Postgres the append as one server-side function.

`ledger_head.epoch` counts changes to what decisions are made from (the policy,
people's keys), so a process may decide from cached state and append only if the
epoch has not moved. `warden_ledger_append` locks the head, chains the given
entries exactly as audit/chain.py does (audit/ledger.py holds the Python twin,
used on SQLite; verification is always the Python one), inserts them and moves
the head: a whole batch in one statement, so the head lock is held only while
the server works, never across a round trip to a client.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

APPEND_FUNCTION = r"""
CREATE FUNCTION warden_ledger_append(expect_epoch bigint, bump_epoch boolean, at timestamptz, entries jsonb)
RETURNS TABLE (seq bigint, hash varchar, created_at timestamptz, epoch bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
-- entries: [[kind, kind as canonical JSON, data as canonical JSON, decision_id, subject, domain,
--            object, action, allowed], ...]. The JSON texts travel as JSON strings, whose
-- values jsonb keeps exactly, so they are hashed as the client made them.
DECLARE
    head_seq bigint;
    head_hash varchar;
    head_epoch bigint;
    at_text text := to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    kinds text[];
    kind_jsons text[];
    datas text[];
    n integer;
    seqs bigint[];
    prevs varchar[];
    hashes varchar[];
    bodies text[];
    body text;
BEGIN
    SELECT h.seq, h.hash, h.epoch INTO head_seq, head_hash, head_epoch
      FROM ledger_head h WHERE h.id = 1 FOR UPDATE;
    IF expect_epoch IS NOT NULL AND head_epoch <> expect_epoch THEN
        -- Made from state that has changed since: append nothing, say what the epoch is.
        RETURN QUERY SELECT NULL::bigint, NULL::varchar, NULL::timestamptz, head_epoch;
        RETURN;
    END IF;
    SELECT array_agg(e->>0 ORDER BY i), array_agg(e->>1 ORDER BY i), array_agg(e->>2 ORDER BY i)
      INTO kinds, kind_jsons, datas FROM jsonb_array_elements(entries) WITH ORDINALITY AS t(e, i);
    n := coalesce(array_length(kinds, 1), 0);
    seqs := array_fill(0::bigint, ARRAY[n]);
    prevs := array_fill(''::varchar, ARRAY[n]);
    hashes := array_fill(''::varchar, ARRAY[n]);
    bodies := array_fill(''::text, ARRAY[n]);
    FOR i IN 1..n LOOP
        head_seq := head_seq + 1;
        -- canonical_json({"data", "kind", "seq", "time"}): keys sorted, no spaces.
        body := '{"data":' || datas[i] || ',"kind":' || kind_jsons[i] || ',"seq":' || head_seq
                || ',"time":"' || at_text || '"}';
        seqs[i] := head_seq;
        prevs[i] := head_hash;
        bodies[i] := body;
        head_hash := encode(sha256(decode(head_hash, 'hex') || convert_to(body, 'UTF8')), 'hex');
        hashes[i] := head_hash;
    END LOOP;
    IF n > 0 THEN
        INSERT INTO ledger_records (seq, prev_hash, hash, kind, created_at, body,
                                    decision_id, subject, domain, object, action, allowed)
        SELECT seqs[i], prevs[i], hashes[i], e->>0, at, bodies[i], e->>3, e->>4, e->>5, e->>6, e->>7,
               (e->>8)::boolean
          FROM jsonb_array_elements(entries) WITH ORDINALITY AS t(e, i);
    END IF;
    IF bump_epoch THEN
        head_epoch := head_epoch + 1;
    END IF;
    UPDATE ledger_head SET seq = head_seq, hash = head_hash, epoch = head_epoch WHERE id = 1;
    RETURN QUERY SELECT s.seq, s.hash, at, head_epoch FROM unnest(seqs, hashes) AS s(seq, hash);
END
$fn$
"""

APPEND_SIGNATURE = "warden_ledger_append(bigint, boolean, timestamptz, jsonb)"


def upgrade() -> None:
    op.add_column("ledger_head", sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        encoding = op.get_bind().exec_driver_sql("SHOW server_encoding").scalar()
        if encoding != "UTF8":
            raise RuntimeError(f"Warden needs a UTF8 Postgres database (this one is {encoding}): "
                               "the chain hashes the UTF-8 bytes of each record")
        op.execute(APPEND_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {APPEND_SIGNATURE}")
    with op.batch_alter_table("ledger_head") as batch:
        batch.drop_column("epoch")
