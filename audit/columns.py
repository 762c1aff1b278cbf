"""The ledger's columns that repeat what a record's hashed body says, for search and retention."""

REPEATED_COLUMNS = ("created_at", "decision_id", "subject", "domain", "object", "action", "allowed")
# The repeated columns (after created_at) that records of each kind fill; every other one is NULL, and
# a record of any other kind fills none. Bodies of these two kinds hold no nested object, so a member
# `"key":value` found in one is the record's own.
FILLED_COLUMNS = {"decision": frozenset(REPEATED_COLUMNS[1:]), "outcome": frozenset({"decision_id"})}
# created_at as the text a record's body holds (ISO 8601, microseconds, Z), on Postgres. Qualified, so a
# to_char put earlier on the search path cannot answer for it.
CREATED_AT_TEXT_POSTGRES = "pg_catalog.to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
