"""People's wrapped keys and privacy requests.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subject_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lookup", sa.String(64), nullable=False),
        sa.Column("pseudonym", sa.String(40), nullable=False),
        sa.Column("master_version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject_keys")),
        sa.UniqueConstraint("lookup", name=op.f("uq_subject_keys_lookup")),
        sa.UniqueConstraint("pseudonym", name=op.f("uq_subject_keys_pseudonym")),
    )
    op.create_index(op.f("ix_subject_keys_master_version"), "subject_keys", ["master_version"])
    op.create_table(
        "privacy_requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pseudonym", sa.String(40), nullable=False),
        sa.Column("subject_enc", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("history", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_requests")),
    )
    op.create_index(op.f("ix_privacy_requests_pseudonym"), "privacy_requests", ["pseudonym"])


def downgrade() -> None:
    op.drop_index(op.f("ix_privacy_requests_pseudonym"), table_name="privacy_requests")
    op.drop_table("privacy_requests")
    op.drop_index(op.f("ix_subject_keys_master_version"), table_name="subject_keys")
    op.drop_table("subject_keys")
