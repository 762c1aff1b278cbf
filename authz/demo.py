"""The demo: roles, policies and a service token to try Warden with."""

import secrets
from importlib.resources import files

from audit.db import READ_ONLY
from authz.rules import parse_policy_csv

DEMO_TOKEN_NAME = "demo"


DEMO_ACCOUNTS = (("admin", "admin"), ("reviewer", "security-reviewer"))


def seed_accounts(warden) -> dict[str, str]:
    """Create the demo admin and reviewer, or give them new passwords; return name -> password."""
    passwords = {}
    for name, role in DEMO_ACCOUNTS:
        password = secrets.token_urlsafe(12)
        if warden.accounts.get_by_name(name) is None:
            warden.accounts.create(name, role, password, actor="demo")
        else:
            warden.accounts.set_password(name, password, actor="demo")
        passwords[name] = password
    return passwords


def admin_enrolled(warden) -> bool:
    """Whether the demo admin set up the second factor on an earlier run (the QR code is not shown again)."""
    admin = warden.accounts.get_by_name("admin")
    return bool(admin and admin.mfa_enabled)


def seed_demo(warden) -> str:
    """Load the demo policy if none is loaded yet and return a fresh demo service token."""
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        version = warden.policies.version(conn)
    if version == 0:
        policy = parse_policy_csv(files("authz").joinpath("demo_policy.csv").read_text(encoding="utf-8"))
        warden.policies.apply(policy, replace=False, actor="demo")
    return warden.tokens.create(DEMO_TOKEN_NAME, ["authorize", "audit:read", "review"], actor="demo", rotate=True)


# Everyday work for the demo's history: (subject, domain, object, action, workflow).
_USUAL = (("alice", "prod", "db/customers", "read", "maintenance"), ("alice", "prod", "db/orders", "read", "maintenance"),
          ("bob", "prod", "db/customers", "read", "support-ticket"), ("carol", "eu", "warehouse/sales", "read", "reporting"),
          ("carol", "us", "warehouse/sales", "read", "reporting"), ("dave", "staging", "db/orders", "write", "release"),
          ("erin", "prod", "db/customers", "read", "investigation"))


def seed_history(warden, decisions: int = 140) -> bool:
    """On a ledger without decisions, record everyday ones and train the detector on them; True if it did."""
    from authz.requests import parse_authorize

    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        if conn.exec_driver_sql("SELECT 1 FROM ledger_records WHERE kind = 'decision' LIMIT 1").first():
            return False
    for i in range(decisions):
        subject, domain, obj, action, workflow = _USUAL[i % len(_USUAL)]
        body = {"subject": subject, "domain": domain, "object": obj, "action": action}
        if workflow:
            body["context"] = {"workflow": workflow}
        warden.decisions.authorize([parse_authorize(body)], service="demo-history", request_id=f"demo-{i}")
    warden.scoring.train(actor="demo")
    warden.scoring.accept(actor="demo", reason="the demo's seeded history is the usual activity")
    return True


def demo_instructions(base_url: str, token: str, database_url: str, log_dir: str = "",
                      passwords: dict[str, str] | None = None, enrolled: bool = False) -> str:
    """Return the text `warden demo` prints: where Warden is and what to try first."""
    second_factor = (
        f"  2. enter the code from the authenticator app you enrolled on an earlier run (or a recovery code)\n"
        f"  3. you land on {base_url}/admin" if enrolled else
        f"  2. scan the QR code with an authenticator app (or type the key), enter the code\n"
        f"  3. save the 10 recovery codes; you land on {base_url}/admin")
    def curl(body: str) -> str:
        return (f"curl -s {base_url}/v1/authorize -H 'Authorization: Bearer {token}' \\\n"
                f"     -H 'Content-Type: application/json' \\\n     -d '{body}'")

    allowed = ('{"subject": "alice", "domain": "prod", "object": "db/customers", "action": "read", '
               '"context": {"workflow": "maintenance", "ticket": "OPS-12"}}')
    denied = ('{"subject": "alice", "domain": "prod", "object": "db/customers", "action": "delete", '
              '"context": {"workflow": "maintenance"}}')
    glass = ('{"subject": "frank", "domain": "prod", "object": "db/payments", "action": "read", '
             '"context": {"workflow": "break-glass", "ticket": "INC-9"}}')
    return f"""
Warden demo
  API:        {base_url}   (health: {base_url}/healthz)
  database:   {database_url}
  logs:       {log_dir}  (daily files, deleted after WARDEN_RETENTION_DAYS)
  token:      {token}
              (service token "{DEMO_TOKEN_NAME}", scopes authorize + audit:read + review; shown once, new on
              every run)

An allowed request (alice is an engineer; engineers read prod databases for maintenance):
{curl(allowed)}

A denied request (nothing grants delete):
{curl(denied)}

First sign-in (the passwords are new on every run):
  1. open {base_url}/login and sign in as admin / {(passwords or {}).get("admin", "?")}
{second_factor}
  The reviewer account (security-reviewer) signs in with: reviewer / {(passwords or {}).get("reviewer", "?")}

Then check the ledger from another terminal:
  warden audit verify
  warden policy export
  warden policy check dave prod db/payments read --workflow maintenance

The detectors learned from the demo's history. Frank (on call) breaks the glass; the answer's
"review" names the item it opened at once:
{curl(glass)}
  curl -s {base_url}/v1/review/items -H 'Authorization: Bearer {token}'
The reviewer sees it on {base_url}/review. Other findings open as new decisions are scored
(every WARDEN_DETECT_SECONDS while serving, or now: warden detect run).
"""
