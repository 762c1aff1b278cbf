"""Policy semantics: every decider answers as pycasbin's enforce on the bundled model."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.decider import MAX_ROLE_HOPS, CasbinDecider, CompiledDecider, Request, casbin_enforcer
from authz.model_file import bundled_model_text
from authz.rules import Policy, PolicyRule, RoleRule, parse_policy_csv

MODEL = bundled_model_text()

POLICY = """
p, role:engineer, prod, db/*, read, maintenance, allow
p, role:engineer, staging, db/*, *, *, allow
p, role:analyst, *, warehouse/*, read, reporting, allow
p, role:contractor, *, db/payments*, *, *, deny
p, erin, prod, db/audit, read, *, allow
p, role:all, *, *, read, investigation, allow
g, alice, role:engineer, *
g, bob, role:oncall, prod
g, role:oncall, role:engineer, prod
g, dave, role:engineer, staging
g, dave, role:contractor, *
g, carol, role:analyst, eu-*
g, sam, role:all, *
"""

CASES = [
    # (subject, domain, object, action, workflow, allowed, why)
    ("alice", "prod", "db/customers", "read", "maintenance", True, "role row with * domain applies in prod"),
    ("alice", "prod", "db/customers", "read", "reporting", False, "workflow must match"),
    ("alice", "prod", "db/customers", "read", "", False, "no workflow matches only *"),
    ("alice", "prod", "db/customers", "write", "maintenance", False, "action must match"),
    ("alice", "prod", "db/a/b/c", "read", "maintenance", True, "prefix pattern matches at any depth"),
    ("alice", "prod", "db/", "read", "maintenance", True, "prefix pattern matches the bare prefix"),
    ("alice", "prod", "db", "read", "maintenance", False, "db is not under db/"),
    ("alice", "staging", "db/x", "delete", "", True, "* action and * workflow mean any"),
    ("bob", "prod", "db/customers", "read", "maintenance", True, "roles nest"),
    ("bob", "staging", "db/customers", "read", "maintenance", False, "nested role bound to prod only"),
    ("dave", "staging", "db/orders", "write", "", True, "role bound to staging"),
    ("dave", "staging", "db/payments", "read", "", False, "deny overrides allow"),
    ("dave", "staging", "db/payments-eu", "read", "", False, "deny pattern is a prefix"),
    ("dave", "prod", "db/orders", "read", "maintenance", False, "engineer role only in staging"),
    ("carol", "eu-west", "warehouse/sales", "read", "reporting", True, "role domain pattern eu-*"),
    ("carol", "us-east", "warehouse/sales", "read", "reporting", False, "role domain pattern does not match"),
    ("erin", "prod", "db/audit", "read", "anything", True, "a user can be named directly"),
    ("erin", "dev", "db/audit", "read", "anything", False, "policy domain must match"),
    ("sam", "any", "anything/at/all", "read", "investigation", True, "object * matches everything"),
    ("mallory", "prod", "db/customers", "read", "maintenance", False, "nothing matching means deny"),
]


def _deciders(policy: Policy):
    yield CompiledDecider(policy)
    yield CasbinDecider(policy, MODEL)


@pytest.mark.parametrize("subject,domain,obj,action,workflow,allowed,why", CASES, ids=[c[-1] for c in CASES])
def test_semantics(subject, domain, obj, action, workflow, allowed, why):
    policy = parse_policy_csv(POLICY)
    reference = casbin_enforcer(MODEL, policy).enforce(subject, domain, obj, action, workflow)
    assert reference is allowed, f"the case itself is wrong about pycasbin: {why}"
    for decider in _deciders(policy):
        decision = decider.decide(Request(subject, domain, obj, action, workflow))
        assert decision.allowed is allowed, f"{type(decider).__name__}: {why}"


def test_reasons_and_matched_rules():
    decider = CompiledDecider(parse_policy_csv(POLICY))
    allowed = decider.decide(Request("alice", "prod", "db/customers", "read", "maintenance"))
    assert allowed.reason == "allowed by role:engineer for workflow maintenance"
    assert allowed.matched == [["role:engineer", "prod", "db/*", "read", "maintenance", "allow"]]
    denied = decider.decide(Request("dave", "staging", "db/payments", "read", ""))
    assert denied.reason == "denied by rule role:contractor, *, db/payments*, *, *, deny"
    assert denied.matched == [["role:contractor", "*", "db/payments*", "*", "*", "deny"]]
    nothing = decider.decide(Request("alice", "prod", "db/customers", "read", "reporting"))
    assert nothing.reason == "denied: no policy grants read on db/customers in prod for workflow reporting"
    assert nothing.matched == []
    no_workflow = decider.decide(Request("alice", "prod", "db/customers", "read", ""))
    assert no_workflow.reason.endswith("in prod without a workflow")


@pytest.mark.parametrize("depth", [MAX_ROLE_HOPS, MAX_ROLE_HOPS + 1])
def test_role_nesting_stops_where_pycasbin_stops(depth):
    roles = [RoleRule("u", "r1", "*")] + [RoleRule(f"r{i}", f"r{i + 1}", "*") for i in range(1, depth)]
    policy = Policy(frozenset({PolicyRule(f"r{depth}", "*", "x", "read", "*", "allow")}), frozenset(roles))
    expected = casbin_enforcer(MODEL, policy).enforce("u", "d", "x", "read", "")
    assert expected is (depth <= MAX_ROLE_HOPS)
    assert CompiledDecider(policy).decide(Request("u", "d", "x", "read")).allowed is expected


def test_role_cycles_terminate():
    policy = Policy(frozenset({PolicyRule("b", "*", "x", "read", "*", "allow")}),
                    frozenset({RoleRule("a", "b", "*"), RoleRule("b", "a", "*")}))
    assert CompiledDecider(policy).decide(Request("a", "d", "x", "read")).allowed


# --- property: the compiled decider, pycasbin and a plain reading of the rules agree ----------

USERS = ["alice", "bob"]
ROLES = ["r:a", "r:b", "r:c"]
DOMAINS = ["prod", "dev", "prod-eu"]
OBJECTS = ["db/a", "db/b", "db/a/x", "files/z", "db"]
ACTIONS = ["read", "write"]
WORKFLOWS = ["maint", "report"]

policy_rules = st.builds(
    PolicyRule,
    subject=st.sampled_from(USERS + ROLES), domain=st.sampled_from(DOMAINS + ["*"]),
    object=st.sampled_from(OBJECTS + ["db/*", "*", "db/a*", "files/*"]),
    action=st.sampled_from(ACTIONS + ["*"]), workflow=st.sampled_from(WORKFLOWS + ["*"]),
    effect=st.sampled_from(["allow", "allow", "deny"]))
role_rules = st.builds(RoleRule, member=st.sampled_from(USERS + ROLES), role=st.sampled_from(ROLES),
                       domain=st.sampled_from(DOMAINS + ["*", "prod*"]))
policies = st.builds(Policy, st.frozensets(policy_rules, max_size=12), st.frozensets(role_rules, max_size=8))
requests = st.builds(Request, st.sampled_from(USERS + ROLES), st.sampled_from(DOMAINS),
                     st.sampled_from(OBJECTS), st.sampled_from(ACTIONS), st.sampled_from(WORKFLOWS + [""]))


def plain_reading(policy: Policy, r: Request) -> bool:
    """DESIGN.md's words, read literally."""
    def pattern_matches(name, pattern):
        return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern

    held, changed = {r.subject: 0}, True
    while changed:
        changed = False
        for g in policy.roles:
            if g.member in held and held[g.member] < 9 and pattern_matches(r.domain, g.domain):
                if g.role not in held or held[g.role] > held[g.member] + 1:
                    held[g.role] = held[g.member] + 1
                    changed = True
    effects = {p.effect for p in policy.rules
               if p.subject in held and p.domain in ("*", r.domain) and pattern_matches(r.object, p.object)
               and p.action in ("*", r.action) and p.workflow in ("*", r.workflow)}
    return "allow" in effects and "deny" not in effects


@settings(max_examples=300, deadline=None)
@given(policies, st.lists(requests, min_size=1, max_size=8))
def test_compiled_decider_equals_pycasbin_and_the_plain_reading(policy, reqs):
    enforcer = casbin_enforcer(MODEL, policy)
    compiled = CompiledDecider(policy)
    for r in reqs:
        expected = enforcer.enforce(r.subject, r.domain, r.object, r.action, r.workflow)
        assert plain_reading(policy, r) is expected
        assert compiled.decide(r).allowed is expected
