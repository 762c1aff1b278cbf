"""`warden policy ...`, `warden token ...` and `warden demo` through Click's test runner."""

import json
import re
from datetime import datetime, timezone

import pyotp
import pytest

from audit.db import READ_ONLY
from tests.conftest import ledger_rows

POLICY = """# engineers read prod for maintenance
p, role:engineer, prod, db/*, read, maintenance, allow
p, role:contractor, *, db/payments*, *, *, deny
g, alice, role:engineer, *
"""


@pytest.fixture
def policy_file(tmp_path):
    def write(text: str, name: str = "policy.csv"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)
    return write


def test_load_export_and_check(runner, policy_file):
    result = runner.invoke(args=["policy", "load", policy_file(POLICY)])
    assert result.exit_code == 0, result.output
    assert "added 3, removed 0 row(s); policy version 1" in result.output
    export = runner.invoke(args=["policy", "export"]).output
    assert export == ("p, role:contractor, *, db/payments*, *, *, deny\n"
                      "p, role:engineer, prod, db/*, read, maintenance, allow\n"
                      "g, alice, role:engineer, *\n")
    allowed = runner.invoke(args=["policy", "check", "alice", "prod", "db/customers", "read",
                                  "--workflow", "maintenance"])
    assert allowed.exit_code == 0
    assert "ALLOWED: allowed by role:engineer for workflow maintenance" in allowed.output
    denied = runner.invoke(args=["policy", "check", "alice", "prod", "db/customers", "read"])
    assert denied.exit_code == 1 and "DENIED" in denied.output


def test_load_adds_and_replace_replaces(runner, policy_file, warden):
    runner.invoke(args=["policy", "load", policy_file(POLICY)])
    result = runner.invoke(args=["policy", "load", policy_file("g, bob, role:engineer, prod\n", "more.csv")])
    assert "added 1, removed 0" in result.output
    result = runner.invoke(args=["policy", "load", "--replace", policy_file("g, bob, role:engineer, prod\n",
                                                                           "only.csv")])
    assert "added 0, removed 3 row(s); policy version 3" in result.output
    assert runner.invoke(args=["policy", "export"]).output == "g, bob, role:engineer, prod\n"
    unchanged = runner.invoke(args=["policy", "load", policy_file("g, bob, role:engineer, prod\n", "same.csv")])
    assert "policy unchanged (version 3)" in unchanged.output


def test_every_policy_change_is_audited(runner, policy_file, warden):
    runner.invoke(args=["policy", "load", policy_file(POLICY)])
    runner.invoke(args=["policy", "load", "--replace", policy_file("g, bob, role:engineer, prod\n", "b.csv")])
    changes = [json.loads(r.body)["data"] for r in ledger_rows(warden.engine) if r.kind == "policy.change"]
    assert [c["version"] for c in changes] == [1, 2]
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        bob = warden.vault.find(conn, "bob").pseudonym
    assert changes[1]["added"] == [["g", bob, "role:engineer", "prod"]]  # people only by pseudonym
    assert ["p", "role:contractor", "*", "db/payments*", "*", "*", "deny"] in changes[0]["added"]  # roles by name
    assert not any("alice" in row for row in changes[0]["added"])
    assert len(changes[1]["removed"]) == 3 and changes[1]["actor"].startswith("cli:")


def test_bad_file_names_lines_and_loads_nothing(runner, policy_file, warden):
    runner.invoke(args=["policy", "load", policy_file(POLICY)])
    before = ledger_rows(warden.engine)
    bad = POLICY + "p, alice, prod, db/*x, read, *, allow\np, alice, prod, db, read, *, perhaps\n"
    result = runner.invoke(args=["policy", "load", "--replace", policy_file(bad, "bad.csv")])
    assert result.exit_code == 1
    assert "bad.csv:5: object 'db/*x': text after '*'" in result.output
    assert "bad.csv:6: effect must be allow or deny" in result.output
    assert "nothing was loaded" in result.output
    assert ledger_rows(warden.engine) == before
    assert "role:engineer" in runner.invoke(args=["policy", "export"]).output


def test_replacing_with_an_empty_file_needs_allow_empty(runner, policy_file):
    runner.invoke(args=["policy", "load", policy_file(POLICY)])
    refused = runner.invoke(args=["policy", "load", "--replace", policy_file("# nothing\n", "empty.csv")])
    assert refused.exit_code == 1 and "--allow-empty" in refused.output
    assert "role:engineer" in runner.invoke(args=["policy", "export"]).output
    emptied = runner.invoke(args=["policy", "load", "--replace", "--allow-empty", policy_file("", "e.csv")])
    assert emptied.exit_code == 0 and runner.invoke(args=["policy", "export"]).output == ""


def test_missing_file_is_a_usage_error(runner):
    result = runner.invoke(args=["policy", "load", "/nonexistent/policy.csv"])
    assert result.exit_code == 2 and "No such file" in result.output


@pytest.mark.parametrize("args", [["a*", "prod", "db", "read"], ["alice", "prod", "db", "read", "--workflow", "*"],
                                  ["alice", "", "db", "read"]])
def test_check_refuses_bad_names(runner, args):
    result = runner.invoke(args=["policy", "check", *args])
    assert result.exit_code == 2


def test_token_create_prints_once_and_stores_only_a_hash(runner, warden, client):
    result = runner.invoke(args=["token", "create", "billing", "--scope", "authorize", "--scope", "audit:read"])
    assert result.exit_code == 0
    token = result.output.splitlines()[0]
    assert token.startswith("wdn_") and len(token) > 40
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        dump = "\n".join(str(row) for row in conn.exec_driver_sql("SELECT * FROM service_tokens"))
        dump += "\n".join(r.body for r in ledger_rows(warden.engine))
    assert token not in dump
    assert warden.tokens.check(token).scopes == {"authorize", "audit:read"}
    again = runner.invoke(args=["token", "create", "billing", "--scope", "authorize"])
    assert again.exit_code == 1 and "exists already" in again.output
    rotated = runner.invoke(args=["token", "create", "billing", "--scope", "authorize", "--rotate"])
    assert rotated.exit_code == 0
    assert warden.tokens.check(token) is None


@pytest.mark.parametrize("args,message", [
    (["token", "create", "x", "--scope", "root"], "'root' is not one of"),
    (["token", "create", "x"], "Missing option '--scope'"),
    (["token", "create", "a,b", "--scope", "authorize"], "contains ','"),
])
def test_token_create_refuses_bad_input(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code != 0 and message in result.output


def test_demo_seeds_once_and_prints_working_curl(runner, client, warden):
    result = runner.invoke(args=["demo", "--no-serve"])
    assert result.exit_code == 0, result.output
    token = next(line.split()[-1] for line in result.output.splitlines() if line.strip().startswith("token:"))
    assert "curl -s http://127.0.0.1:8000/v1/authorize" in result.output
    bodies = [line.split("-d '")[1].rstrip("'") for line in result.output.splitlines() if "-d '" in line]
    answers = [client.post("/v1/authorize", data=b, headers={"Authorization": f"Bearer {token}",
                                                              "Content-Type": "application/json"}).get_json()
               for b in bodies]
    assert [a["allowed"] for a in answers] == [True, False, True]
    assert "Recorded the demo's history and trained the detector" in result.output
    assert answers[2]["review"]["detector"] == "break_glass"
    assert runner.invoke(args=["detect", "run"]).exit_code == 0
    items = client.get("/v1/review/items", headers={"Authorization": f"Bearer {token}"}).get_json()["items"]
    assert ("break_glass", [answers[2]["audit_seq"]]) in [(i["detector"], i["seqs"]) for i in items]
    assert {i["seqs"][0] for i in items} <= {a["audit_seq"] for a in answers}  # the history opened nothing
    password = re.search(r"sign in as admin / (\S+)", result.output).group(1)
    assert warden.accounts.authenticate("admin", password) is not None
    assert warden.accounts.get_by_name("reviewer").role == "security-reviewer"
    assert "scan the QR code" in result.output
    admin = warden.accounts.get_by_name("admin")  # the admin enrolls, as the printed steps say
    enrollment = warden.mfa.begin(admin.id)
    now = datetime.now(timezone.utc)
    warden.mfa.confirm(admin.id, pyotp.TOTP(enrollment.secret).at(now), now)
    again = runner.invoke(args=["demo", "--no-serve"])
    assert again.exit_code == 0 and "Recorded the demo's history" not in again.output
    assert "scan the QR code" not in again.output  # enrolled already: the code, not a new QR code
    assert "enter the code from the authenticator app you enrolled on an earlier run" in again.output
    assert warden.accounts.authenticate("admin", password) is None  # new passwords on every run
    assert warden.tokens.check(token) is None  # each run issues a new demo token
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        assert warden.policies.version(conn) == 1  # and seeds the policy only once


def test_a_file_with_a_byte_order_mark_loads(runner, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeff".encode() + POLICY.encode())  # as Excel and Notepad save "UTF-8"
    result = runner.invoke(args=["policy", "load", str(path)])
    assert result.exit_code == 0, result.output
    assert "added 3" in result.output
