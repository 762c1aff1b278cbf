"""Checkpoints, seals, searchable decision columns, and append-only ledger rows on Postgres.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Postgres refuses UPDATE, DELETE and TRUNCATE on ledger rows. The retention purge
# is the one sanctioned path: it sets warden.ledger_purge for its own transaction.
APPEND_ONLY_FUNCTION = """
CREATE FUNCTION warden_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('warden.ledger_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'ledger_records is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$
"""


def _signed_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    )
    op.create_index(op.f(f"ix_{name}_seq"), name, ["seq"])


def upgrade() -> None:
    _signed_table("ledger_checkpoints")
    _signed_table("ledger_seals")
    with op.batch_alter_table("ledger_records") as batch:
        batch.add_column(sa.Column("decision_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("subject", sa.String(255), nullable=True))
        batch.add_column(sa.Column("domain", sa.String(255), nullable=True))
        batch.add_column(sa.Column("object", sa.String(255), nullable=True))
        batch.add_column(sa.Column("action", sa.String(255), nullable=True))
        batch.add_column(sa.Column("allowed", sa.Boolean(), nullable=True))
        batch.create_index(batch.f("ix_ledger_records_subject"), ["subject"])
        batch.create_index(batch.f("ix_ledger_records_object"), ["object"])
        batch.create_unique_constraint(batch.f("uq_ledger_records_kind_decision_id"), ["kind", "decision_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute("CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger_records "
                   "FOR EACH ROW EXECUTE FUNCTION warden_ledger_append_only()")
        op.execute("CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger_records "
                   "FOR EACH STATEMENT EXECUTE FUNCTION warden_ledger_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_no_truncate ON ledger_records")
        op.execute("DROP TRIGGER ledger_append_only ON ledger_records")
        op.execute("DROP FUNCTION warden_ledger_append_only()")
    with op.batch_alter_table("ledger_records") as batch:
        batch.drop_constraint(batch.f("uq_ledger_records_kind_decision_id"), type_="unique")
        batch.drop_index(batch.f("ix_ledger_records_object"))
        batch.drop_index(batch.f("ix_ledger_records_subject"))
        for column in ("allowed", "action", "object", "domain", "subject", "decision_id"):
            batch.drop_column(column)
    op.drop_index(op.f("ix_ledger_seals_seq"), table_name="ledger_seals")
    op.drop_table("ledger_seals")
    op.drop_index(op.f("ix_ledger_checkpoints_seq"), table_name="ledger_checkpoints")
    op.drop_table("ledger_checkpoints")
