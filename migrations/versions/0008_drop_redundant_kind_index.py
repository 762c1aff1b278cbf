"""Drop the ledger's index on `kind` alone: the unique (kind, decision_id) index already leads with it.

Every lookup by kind (a decision's record, its outcome) also names the decision,
and a query on kind alone can use the unique index's first column, so the single
column index only cost each append one more index insert and its WAL.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_ledger_records_kind", table_name="ledger_records")


def downgrade() -> None:
    op.create_index("ix_ledger_records_kind", "ledger_records", ["kind"])
