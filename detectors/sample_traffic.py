"""Labelled sample traffic for `warden detect evaluate` without `--traffic`, written for the demo policy.

Five working days of the demo's people doing their usual work, and three things a
security team wants found: a break-glass read, someone probing payment tables
they are denied, and a night-time export with no declared workflow. The lines
are the evaluate format (an /v1/authorize body plus time, rows and label), made
from a fixed seed so every run sees the same traffic.
"""

import json
import random
from datetime import datetime, timedelta, timezone

START = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)  # a Monday, 08:00 UTC

# (subject, domain, object, action, workflow): what authz/demo_policy.csv lets each of them do.
_USUAL = (("alice", "prod", "db/customers", "read", "maintenance"),
          ("alice", "prod", "db/orders", "read", "maintenance"),
          ("bob", "prod", "db/customers", "read", "support-ticket"),
          ("carol", "eu", "warehouse/sales", "read", "reporting"),
          ("carol", "us", "warehouse/sales", "read", "reporting"))


def _line(at: datetime, subject: str, domain: str, obj: str, action: str, workflow: str | None,
          rows: int, label: str = "normal") -> str:
    body = {"subject": subject, "domain": domain, "object": obj, "action": action}
    if workflow:
        body["context"] = {"workflow": workflow}
    return json.dumps({**body, "time": at.isoformat().replace("+00:00", "Z"), "rows": rows, "label": label})


def sample_traffic(usual_lines: int = 300) -> list[str]:
    """The sample's JSON lines: `usual_lines` of everyday work, then the labelled scenarios."""
    rnd = random.Random(11)
    lines = [_line(START + timedelta(days=rnd.randrange(5), minutes=rnd.randrange(9 * 60)),
                   *rnd.choice(_USUAL), rows=rnd.randrange(1, 40)) for _ in range(usual_lines)]
    lines.append(_line(START + timedelta(days=1, hours=3), "frank", "prod", "db/payments", "read",
                       "break-glass", 12, label="break_glass"))
    lines += [_line(START + timedelta(days=2, hours=2, minutes=i), "dave", "prod", f"db/payments_{i}", "write",
                    "maintenance", 0, label="probing") for i in range(6)]
    lines += [_line(START + timedelta(days=3, hours=-6, minutes=i), "alice", "staging", f"db/customers_{i}",
                    "export", None, 500_000, label="night_export") for i in range(3)]
    return lines
