"""The database itself moves the ledger epoch when the policy version moves or a person's key is deleted.

Warden's own code moves the epoch in the transaction that changes the policy or
erases a person; these triggers make sure any other writer (an older Warden
during a rolling upgrade, a hand-written statement) does too, so no process
keeps deciding with a cached policy or key that the database no longer holds.
On Postgres they run at commit (deferred), so the chain head is locked only then.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_WATCHED = (("policy_state", "UPDATE"), ("subject_keys", "DELETE"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION warden_move_epoch() RETURNS trigger LANGUAGE plpgsql AS $fn$
            BEGIN
                UPDATE ledger_head SET epoch = epoch + 1 WHERE id = 1;
                RETURN NULL;
            END
            $fn$""")
        for table, event in _WATCHED:
            op.execute(f"CREATE CONSTRAINT TRIGGER {table}_moves_epoch AFTER {event} ON {table} "
                       "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION warden_move_epoch()")
    else:
        for table, event in _WATCHED:
            op.execute(f"CREATE TRIGGER {table}_moves_epoch AFTER {event} ON {table} "
                       "BEGIN UPDATE ledger_head SET epoch = epoch + 1 WHERE id = 1; END")


def downgrade() -> None:
    for table, _ in _WATCHED:
        op.execute(f"DROP TRIGGER {table}_moves_epoch" + (f" ON {table}" if op.get_bind().dialect.name
                                                          == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION warden_move_epoch()")
