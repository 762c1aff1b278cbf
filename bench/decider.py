"""Decision speed: Warden's compiled decider against pycasbin's enforce, same policy, same requests.

    python bench/decider.py [--rules 100 1000 10000] [--requests 2000]

Prints, per policy size, microseconds per decision for both and the speed-up
(pycasbin time / compiled time). Both are measured in this run, on this machine.
"""

import argparse
import random
import time

from authz.decider import CompiledDecider, Request, casbin_enforcer
from authz.model_file import bundled_model_text
from authz.rules import Policy, PolicyRule, RoleRule


def make_policy(rules: int, rng: random.Random) -> tuple[Policy, list[Request]]:
    roles = [f"role:{i}" for i in range(max(1, rules // 10))]
    domains = ["prod", "staging", "dev", "eu-prod"]
    p = {PolicyRule(rng.choice(roles), rng.choice(domains + ["*"]), f"db/t{rng.randrange(rules)}*",
                    rng.choice(["read", "write", "*"]), rng.choice(["maint", "report", "*"]),
                    "deny" if rng.random() < 0.1 else "allow") for _ in range(rules)}
    users = [f"user{i}" for i in range(max(1, rules // 5))]
    g = {RoleRule(rng.choice(users), rng.choice(roles), rng.choice(domains + ["*"])) for _ in range(rules // 2)}
    requests = [Request(rng.choice(users), rng.choice(domains), f"db/t{rng.randrange(rules)}",
                        rng.choice(["read", "write"]), rng.choice(["maint", "report", ""])) for _ in range(5000)]
    return Policy(frozenset(p), frozenset(g)), requests


def per_decision(fn, requests) -> float:
    start = time.perf_counter()
    for r in requests:
        fn(r)
    return (time.perf_counter() - start) / len(requests) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(7)
    model = bundled_model_text()
    print(f"{'rules':>7} {'pycasbin µs':>12} {'compiled µs':>12} {'speed-up':>9}  agree")
    for size in args.rules:
        policy, requests = make_policy(size, rng)
        requests = requests[:args.requests]
        enforcer = casbin_enforcer(model, policy)
        compiled = CompiledDecider(policy)
        sample = requests[: max(20, min(len(requests), 200_000 // size))]  # pycasbin is slow on big policies
        agree = all(enforcer.enforce(r.subject, r.domain, r.object, r.action, r.workflow)
                    is compiled.decide(r).allowed for r in sample[:200])
        slow = per_decision(lambda r: enforcer.enforce(r.subject, r.domain, r.object, r.action, r.workflow), sample)
        fast = per_decision(compiled.decide, requests)
        print(f"{size:>7} {slow:>12.1f} {fast:>12.1f} {slow / fast:>8.1f}x  {agree}")


if __name__ == "__main__":
    main()
