"""Deciding one request against a policy: the compiled evaluator and the pycasbin one.

`CompiledDecider` answers exactly as pycasbin's `enforce` on the bundled model
(tests hold it to that) without re-parsing the matcher or scanning every row:
rules are indexed by subject and a subject's roles are found per domain by a
bounded walk of the role graph. `CasbinDecider` runs any other model through
pycasbin itself, one request at a time, since its enforcer is not thread-safe.
"""

import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field

import casbin
from casbin.model import Model

from authz.rules import Policy, PolicyRule

# pycasbin's role manager follows at most this many links (max_hierarchy_level 10
# counts the subject itself); deeper grants do not apply there, so not here either.
MAX_ROLE_HOPS = 9
_ROLE_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class Request:
    """One question: may `subject` do `action` on `object` in `domain` for `workflow`?"""

    subject: str
    domain: str
    object: str
    action: str
    workflow: str = ""


@dataclass(frozen=True)
class Decision:
    """The answer, the rules that made it and a sentence saying why."""

    allowed: bool
    reason: str
    matched: list[list[str]] = field(default_factory=list)


def key_match(name: str, pattern: str) -> bool:
    """Casbin's keyMatch: `pattern` is a name, or a prefix that ends in `*`."""
    star = pattern.find("*")
    if star == -1:
        return name == pattern
    return name[:star] == pattern[:star]


def explain(request: Request, allow: list[PolicyRule], deny: list[PolicyRule]) -> Decision:
    """Return the decision that deny-overrides-allow gives for the matching rules."""
    if deny:
        deny = sorted(deny)
        return Decision(False, f"denied by rule {', '.join(deny[0].fields())}", [r.fields() for r in deny])
    if allow:
        allow = sorted(allow)
        first = allow[0]
        scope = "any workflow" if first.workflow == "*" else f"workflow {first.workflow}"
        more = f" (and {len(allow) - 1} more rule{'s' if len(allow) > 2 else ''})" if len(allow) > 1 else ""
        return Decision(True, f"allowed by {first.subject} for {scope}{more}", [r.fields() for r in allow])
    workflow = f"for workflow {request.workflow}" if request.workflow else "without a workflow"
    return Decision(False, f"denied: no policy grants {request.action} on {request.object} "
                           f"in {request.domain} {workflow}")


class CompiledDecider:
    """Decides against one immutable policy snapshot; safe to share between threads."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self._rules = defaultdict(list)
        for rule in policy.rules:
            self._rules[rule.subject].append(rule)
        self._edges = defaultdict(list)
        for role in policy.roles:
            self._edges[role.member].append((role.role, role.domain))
        self._role_cache: dict[tuple[str, str], frozenset[str]] = {}

    def roles_of(self, subject: str, domain: str) -> frozenset[str]:
        """Return `subject` and every role it holds in `domain`, directly or through nesting."""
        key = (subject, domain)
        found = self._role_cache.get(key)
        if found is None:
            found = self._walk_roles(subject, domain)
            if len(self._role_cache) >= _ROLE_CACHE_SIZE:
                self._role_cache.clear()
            self._role_cache[key] = found
        return found

    def _walk_roles(self, subject: str, domain: str) -> frozenset[str]:
        hops = {subject: 0}
        queue = deque([subject])
        while queue:
            name = queue.popleft()
            if hops[name] == MAX_ROLE_HOPS:
                continue
            for role, pattern in self._edges.get(name, ()):
                if role not in hops and key_match(domain, pattern):
                    hops[role] = hops[name] + 1
                    queue.append(role)
        return frozenset(hops)

    def decide(self, request: Request) -> Decision:
        allow, deny = [], []
        for name in self.roles_of(request.subject, request.domain):
            for rule in self._rules.get(name, ()):
                if ((rule.domain == "*" or rule.domain == request.domain)
                        and key_match(request.object, rule.object)
                        and (rule.action == "*" or rule.action == request.action)
                        and (rule.workflow == "*" or rule.workflow == request.workflow)):
                    (allow if rule.effect == "allow" else deny).append(rule)
        return explain(request, allow, deny)


def casbin_enforcer(model_text: str, policy: Policy) -> casbin.Enforcer:
    """Return a pycasbin enforcer for `model_text` holding `policy`, keyMatch on g's domain."""
    model = Model()
    model.load_model_from_text(model_text)
    enforcer = casbin.Enforcer(model)
    enforcer.add_named_domain_matching_func("g", casbin.util.key_match)
    if policy.rules:
        enforcer.add_policies([rule.fields() for rule in policy.rules])
    if policy.roles:
        enforcer.add_named_grouping_policies("g", [role.fields() for role in policy.roles])
    return enforcer


class CasbinDecider:
    """Decides with pycasbin's `enforce` on any model that keeps Warden's request shape."""

    def __init__(self, policy: Policy, model_text: str):
        self.policy = policy
        self._enforcer = casbin_enforcer(model_text, policy)
        self._lock = threading.Lock()

    def decide(self, request: Request) -> Decision:
        fields = (request.subject, request.domain, request.object, request.action, request.workflow)
        with self._lock:
            try:
                allowed, explained = self._enforcer.enforce_ex(*fields)
            except Exception as exc:  # pycasbin raises plain exceptions; any of them is a deny
                return Decision(False, f"denied: the policy engine failed ({type(exc).__name__})")
        if not explained:
            return explain(request, [], [])
        rule = PolicyRule(*explained)
        return explain(request, [rule], []) if allowed else explain(request, [], [rule])
