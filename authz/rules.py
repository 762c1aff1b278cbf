"""Policy rows as values: validation of every field and the Casbin CSV format."""

import csv
import re
import io
from dataclasses import dataclass

MAX_NAME = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A name no rule of name_problem objects to: 1 to MAX_NAME characters, none of them a control character,
# a comma, a double quote or a star (spaces at either end are checked apart).
_PLAIN_NAME = re.compile(r'[^\x00-\x1f\x7f,"*]{1,%d}' % MAX_NAME)
EFFECTS = ("allow", "deny")


@dataclass(frozen=True, order=True)
class PolicyRule:
    """A `p` row: who may (or may not) do what, where and for which workflow."""

    subject: str
    domain: str
    object: str
    action: str
    workflow: str
    effect: str

    ptype = "p"

    def fields(self) -> list[str]:
        return [self.subject, self.domain, self.object, self.action, self.workflow, self.effect]


@dataclass(frozen=True, order=True)
class RoleRule:
    """A `g` row: `member` holds `role` in the domains `domain` matches."""

    member: str
    role: str
    domain: str

    ptype = "g"

    def fields(self) -> list[str]:
        return [self.member, self.role, self.domain]


@dataclass(frozen=True)
class Policy:
    """A whole policy: its `p` rows and its `g` rows."""

    rules: frozenset[PolicyRule] = frozenset()
    roles: frozenset[RoleRule] = frozenset()

    def __len__(self) -> int:
        return len(self.rules) + len(self.roles)


class PolicyFileError(ValueError):
    """A policy file with bad rows; `errors` lists (line number, message), nothing was loaded."""

    def __init__(self, errors: list[tuple[int, str]]):
        self.errors = errors
        super().__init__("; ".join(f"line {n}: {m}" for n, m in errors))


def name_problem(value, what: str, star: str = "none") -> str | None:
    """Return why `value` cannot be the field `what`, or None when it can.

    `star` says where `*` may stand: "none", "alone" (the whole field means any)
    or "suffix" (a prefix pattern: `*` only as the last character).
    """
    if isinstance(value, str) and _PLAIN_NAME.fullmatch(value) and value == value.strip():
        return None  # the common case, judged at once: every rule of _problem holds for it
    return _problem(value, what, star)


def _problem(value, what: str, star: str) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not value:
        return f"{what} is empty"
    if len(value) > MAX_NAME:
        return f"{what} is longer than {MAX_NAME} characters"
    if value != value.strip():
        return f"{what} {value!r} has leading or trailing spaces"
    if _CONTROL.search(value):
        return f"{what} {value!r} contains a control character (a newline?)"
    for bad in ',"':
        if bad in value:
            return f"{what} {value!r} contains {bad!r}"
    if "*" in value:
        if star == "none":
            return f"{what} {value!r} may not contain '*'"
        if star == "alone" and value != "*":
            return f"{what} {value!r}: '*' must stand alone (it means any)"
        if star == "suffix" and value.index("*") != len(value) - 1:
            return f"{what} {value!r}: text after '*' is not allowed (patterns are prefixes ending in '*')"
    return None


_P_FIELDS = (("subject", "none"), ("domain", "alone"), ("object", "suffix"),
             ("action", "alone"), ("workflow", "alone"))
_G_FIELDS = (("member", "none"), ("role", "none"), ("domain", "suffix"))


def make_rule(ptype: str, fields: list[str]) -> PolicyRule | RoleRule:
    """Return the row `ptype, *fields` as a rule, or raise ValueError saying what is wrong."""
    if ptype == "p":
        if len(fields) != 6:
            raise ValueError(f"a p row has 6 fields (subject, domain, object, action, workflow, effect), "
                             f"got {len(fields)}")
        for value, (what, star) in zip(fields, _P_FIELDS):
            if problem := name_problem(value, what, star):
                raise ValueError(problem)
        if fields[5] not in EFFECTS:
            raise ValueError(f"effect must be allow or deny, got {fields[5]!r}")
        return PolicyRule(*fields)
    if ptype == "g":
        if len(fields) != 3:
            raise ValueError(f"a g row has 3 fields (member, role, domain), got {len(fields)}")
        for value, (what, star) in zip(fields, _G_FIELDS):
            if problem := name_problem(value, what, star):
                raise ValueError(problem)
        return RoleRule(*fields)
    raise ValueError(f"unknown row type {ptype!r} (expected p or g)")


def parse_policy_csv(text: str) -> Policy:
    """Parse Casbin CSV (`p, ...` and `g, ...` lines; `#` comments); raise PolicyFileError on any bad row."""
    rules, roles, errors = set(), set(), []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            cells = next(csv.reader([line], skipinitialspace=True, strict=True))
            cells = [cell.strip() for cell in cells]
            rule = make_rule(cells[0], cells[1:])
        except csv.Error as exc:
            errors.append((number, f"malformed CSV ({exc}): an unclosed quote or a newline inside a field?"))
            continue
        except ValueError as exc:
            errors.append((number, str(exc)))
            continue
        (rules if isinstance(rule, PolicyRule) else roles).add(rule)
    if errors:
        raise PolicyFileError(errors)
    return Policy(frozenset(rules), frozenset(roles))


def policy_to_csv(policy: Policy) -> str:
    """Return `policy` as Casbin CSV, `p` rows then `g` rows, each sorted."""
    out = io.StringIO()
    for rule in sorted(policy.rules):
        out.write(", ".join(["p", *rule.fields()]) + "\n")
    for role in sorted(policy.roles):
        out.write(", ".join(["g", *role.fields()]) + "\n")
    return out.getvalue()
