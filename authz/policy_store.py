"""Policies in the database: loading, replacing and exporting, each change audited.

The store keeps a decider for the newest policy version it has seen; any
process (a gunicorn worker, the CLI) notices another's change through the
version row and rebuilds, so every worker decides with the committed policy.
"""

import threading
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, select, update

from audit.db import READ_ONLY
from audit.ledger import Entry, Ledger
from authz.decider import CasbinDecider, CompiledDecider
from authz.models import PolicyRow, PolicyState
from authz.rules import Policy, PolicyRule, RoleRule
from audit.vault import Vault
from authz.model_file import is_bundled_model

_rows = PolicyRow.__table__
_state = PolicyState.__table__
_VALUES = ("v0", "v1", "v2", "v3", "v4", "v5")


@dataclass(frozen=True)
class PolicyChange:
    """What a load did: rows added and removed, and the version it produced."""

    added: int
    removed: int
    version: int


@dataclass(frozen=True)
class Snapshot:
    """A policy version and the decider built for it."""

    version: int
    decider: CompiledDecider | CasbinDecider


def _row_values(rule: PolicyRule | RoleRule) -> dict:
    values = dict.fromkeys(_VALUES, "")
    values.update(zip(_VALUES, rule.fields()))
    return {"ptype": rule.ptype, **values}


def _rule_from_row(row) -> PolicyRule | RoleRule:
    if row.ptype == "p":
        return PolicyRule(row.v0, row.v1, row.v2, row.v3, row.v4, row.v5)
    return RoleRule(row.v0, row.v1, row.v2)


class PolicyStore:
    """Reads and changes the stored policy; hands out a decider for the current version."""

    def __init__(self, engine: Engine, ledger: Ledger, model_text: str, vault: Vault):
        self.engine = engine
        self.ledger = ledger
        self.vault = vault
        self.model_text = model_text
        self._compiled = is_bundled_model(model_text)
        self._snapshot: Snapshot | None = None
        self._rebuild_lock = threading.Lock()

    def read(self, conn: Connection) -> tuple[Policy, int]:
        """Return the stored policy and its version as seen by `conn`."""
        version = self.version(conn)
        rules, roles = set(), set()
        for row in conn.execute(select(_rows)):
            rule = _rule_from_row(row)
            (rules if isinstance(rule, PolicyRule) else roles).add(rule)
        return Policy(frozenset(rules), frozenset(roles)), version

    @staticmethod
    def version(conn: Connection) -> int:
        """Return the policy version `conn` sees (read once per decision batch, so plain SQL)."""
        return conn.exec_driver_sql("SELECT version FROM policy_state WHERE id = 1").scalar_one()

    def snapshot(self, conn: Connection) -> Snapshot:
        """Return the decider for the version `conn` sees, rebuilding it when the version moved."""
        version = self.version(conn)
        current = self._snapshot
        if current is not None and current.version == version:
            return current
        with self._rebuild_lock:
            current = self._snapshot
            if current is None or current.version != version:
                policy, version = self.read(conn)
                decider = CompiledDecider(policy) if self._compiled else CasbinDecider(policy, self.model_text)
                current = self._snapshot = Snapshot(version, decider)
        return current

    def apply(self, policy: Policy, *, replace: bool, actor: str) -> PolicyChange:
        """Add `policy`'s rows (or make it the whole policy with `replace`), audited, in one transaction."""
        def plan(current: Policy):
            wanted, existing = _rows_of(policy), _rows_of(current)
            return wanted - existing, (existing - wanted) if replace else set()
        return self._change(plan, policy, actor, replace)

    def remove(self, rows: Policy, *, actor: str) -> PolicyChange:
        """Remove exactly these rows (those not present are ignored), audited, in one transaction."""
        return self._change(lambda current: (set(), _rows_of(current) & _rows_of(rows)), rows, actor, False)

    def erase_person(self, identifier: str, actor: str) -> PolicyChange:
        """Remove every row that names the person `identifier` as a subject or member (an erasure).

        A role is not a person: erasing a role's name leaves the policy alone, or a
        request naming `role:contractor` could lift that role's deny rules.
        """
        def plan(current: Policy):
            if identifier.startswith("role:") or any(r.role == identifier for r in current.roles):
                return set(), set()
            return set(), ({r for r in current.rules if r.subject == identifier}
                           | {r for r in current.roles if r.member == identifier})
        return self._change(plan, Policy(), actor, False)

    def _change(self, plan, policy: Policy, actor: str, replace: bool) -> PolicyChange:
        """Lock the policy, let `plan(current)` say (added, removed), write both and the ledger record."""
        with self.engine.begin() as conn:
            conn.execute(select(_state.c.version).where(_state.c.id == 1).with_for_update()).scalar_one()
            current, version = self.read(conn)
            to_add, to_remove = plan(current)
            added, removed = sorted(to_add, key=_sort_key), sorted(to_remove, key=_sort_key)
            if not added and not removed:
                return PolicyChange(0, 0, version)
            for rule in removed:
                values = _row_values(rule)
                conn.execute(delete(_rows).where(*(_rows.c[k] == v for k, v in values.items())))
            if added:
                conn.execute(insert(_rows), [_row_values(rule) for rule in added])
            version += 1
            conn.execute(update(_state).where(_state.c.id == 1).values(version=version))
            shown = self._pseudonymizer(conn, current, policy, added + removed)
            self.ledger.append(conn, [Entry("policy.change", {
                "actor": actor, "version": version, "replace": replace,
                "added": [shown(r) for r in added], "removed": [shown(r) for r in removed],
            })], bump_epoch=True)
        return PolicyChange(len(added), len(removed), version)

    def _pseudonymizer(self, conn, current: Policy, wanted: Policy, rows):
        """Return a function showing a row with people's names replaced by their pseudonyms.

        A name is a role when some `g` row grants it or it starts with `role:`;
        any other subject of a `p` row or member of a `g` row is a person.
        """
        roles = {r.role for r in current.roles | wanted.roles}
        people = {r.member if isinstance(r, RoleRule) else r.subject for r in rows}
        people = sorted(n for n in people if n not in roles and not n.startswith("role:"))
        pseudonyms = {n: s.pseudonym for n, s in self.vault.subjects(conn, people).items()}

        def show(rule) -> list[str]:
            fields = rule.fields()
            return [rule.ptype, pseudonyms.get(fields[0], fields[0]), *fields[1:]]
        return show

    def rows_naming(self, identifier: str) -> list[list[str]]:
        """The policy rows that name `identifier` as a subject or member (for an access export)."""
        current = self.export()
        return ([["p", *r.fields()] for r in sorted(current.rules) if r.subject == identifier]
                + [["g", *r.fields()] for r in sorted(current.roles) if r.member == identifier])

    def export(self) -> Policy:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return self.read(conn)[0]


def _rows_of(policy: Policy) -> set:
    return set(policy.rules) | set(policy.roles)


def _sort_key(rule: PolicyRule | RoleRule) -> tuple:
    return (rule.ptype, *rule.fields())
