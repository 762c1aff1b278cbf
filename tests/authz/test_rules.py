"""Policy files: every bad row is refused with its line number, and nothing is loaded."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.rules import (_PLAIN_NAME, PolicyFileError, PolicyRule, RoleRule, _problem, name_problem, parse_policy_csv,
                         policy_to_csv)

GOOD = "p, role:eng, prod, db/*, read, maintenance, allow\n"


def test_parses_p_and_g_rows_comments_and_blank_lines():
    policy = parse_policy_csv("# comment\n\n" + GOOD + "g, alice, role:eng, *\n")
    assert policy.rules == {PolicyRule("role:eng", "prod", "db/*", "read", "maintenance", "allow")}
    assert policy.roles == {RoleRule("alice", "role:eng", "*")}


def test_export_round_trips():
    policy = parse_policy_csv(GOOD + "p, x, *, *, *, *, deny\ng, alice, role:eng, eu-*\n")
    assert parse_policy_csv(policy_to_csv(policy)) == policy


@pytest.mark.parametrize("row,problem", [
    ('p, "a,b", prod, db, read, *, allow', "contains ','"),
    ('p, alice, prod, "db\n', "malformed CSV"),
    ("p, alice, , db, read, *, allow", "domain is empty"),
    ("p, alice, prod, db, read, *, maybe", "effect must be allow or deny"),
    ("p, alice, prod, db/*/x, read, *, allow", "text after '*'"),
    ("p, alice, prod, db/*x, read, *, allow", "text after '*'"),
    ("p, alice, pr*, db, read, *, allow", "'*' must stand alone"),
    ("p, alice, prod, db, re*, *, allow", "'*' must stand alone"),
    ("p, alice, prod, db, read, main*, allow", "'*' must stand alone"),
    ("p, ali*, prod, db, read, *, allow", "may not contain '*'"),
    ("p, alice, prod, db, read, allow", "a p row has 6 fields"),
    ("p, alice, prod, db, read, *, allow, extra", "a p row has 6 fields"),
    ("g, alice, role:eng", "a g row has 3 fields"),
    ("g, alice, role:*, prod", "may not contain '*'"),
    ("g, alice, role:eng, pr*d", "text after '*'"),
    ("x, alice, role:eng, prod", "unknown row type 'x'"),
    ("p, alice\x01, prod, db, read, *, allow", "control character"),
    ("p, " + "a" * 256 + ", prod, db, read, *, allow", "longer than 255"),
])
def test_bad_rows_name_their_line_and_load_nothing(row, problem):
    text = GOOD + "g, alice, role:eng, *\n" + row + "\n" + GOOD
    with pytest.raises(PolicyFileError) as caught:
        parse_policy_csv(text)
    assert [line for line, _ in caught.value.errors] == [3]
    assert problem in caught.value.errors[0][1]


def test_every_bad_row_is_reported():
    with pytest.raises(PolicyFileError) as caught:
        parse_policy_csv("p, a\n" + GOOD + "g, b\n")
    assert [line for line, _ in caught.value.errors] == [1, 3]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from('ab*,"\t\n\x7f \u00a0\u2003é'), max_size=12)
       | st.text(min_size=250, max_size=260, alphabet="ab "))
def test_the_quick_accept_of_a_plain_name_agrees_with_every_rule(value):
    if _PLAIN_NAME.fullmatch(value) and value == value.strip():
        assert all(_problem(value, "field", star) is None for star in ("none", "alone", "suffix"))
    for star in ("none", "alone", "suffix"):
        assert name_problem(value, "field", star) == _problem(value, "field", star)
