"""Review items opened by the detectors, and the detectors' progress and baseline.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detector", sa.String(40), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("seqs", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("priority", sa.String(10), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("assignee", sa.String(100), nullable=True),
        sa.Column("history", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
        sa.UniqueConstraint("detector", "first_seq", name="uq_review_items_detector_first_seq"),
    )
    op.create_index(op.f("ix_review_items_opened_at"), "review_items", ["opened_at"])
    op.create_index(op.f("ix_review_items_subject"), "review_items", ["subject"])
    op.create_index(op.f("ix_review_items_status"), "review_items", ["status"])
    state = op.create_table(
        "detector_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("scored_through", sa.BigInteger(), nullable=False),
        sa.Column("baseline", sa.Text(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_detector_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detector_state")),
    )
    op.bulk_insert(state, [{"id": 1, "scored_through": 0, "baseline": None}])


def downgrade() -> None:
    op.drop_table("detector_state")
    op.drop_index(op.f("ix_review_items_status"), table_name="review_items")
    op.drop_index(op.f("ix_review_items_subject"), table_name="review_items")
    op.drop_index(op.f("ix_review_items_opened_at"), table_name="review_items")
    op.drop_table("review_items")
