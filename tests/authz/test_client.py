"""The Python client against a real `warden serve`: decisions, batches, outcomes, failing closed."""

import os
import subprocess
import sys

import pytest

from app import upgrade_database
from authz.client import WardenClient, WardenError
from tests.conftest import free_port, wait_for_port

POLICY = "p, role:eng, prod, db/*, read, maintenance, allow\ng, alice, role:eng, *\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    url = f"sqlite:///{tmp / 'client.db'}"
    upgrade_database(url)
    env = {**os.environ, "WARDEN_DATABASE_URL": url, "WARDEN_KEY_DIR": str(tmp / "keys"),
           "WARDEN_LOG_DIR": str(tmp / "logs")}
    warden = [sys.executable, "-c", "import app; app.main()"]
    (tmp / "policy.csv").write_text(POLICY)
    subprocess.run([*warden, "policy", "load", str(tmp / "policy.csv")], env=env, check=True, capture_output=True)
    token = subprocess.run([*warden, "token", "create", "svc", "--scope", "authorize"], env=env, check=True,
                           capture_output=True, text=True).stdout.split()[0]
    port = free_port()
    server = subprocess.Popen([*warden, "serve", "--port", str(port), "--workers", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}", token
    server.terminate()
    server.wait(timeout=30)


def test_authorize_and_report(served):
    client = WardenClient(*served)
    decision = client.authorize(subject="alice", domain="prod", object="db/customers", action="read",
                                workflow="maintenance", context={"ticket": "OPS-12"})
    assert decision["allowed"] is True and decision["reason"] == "allowed by role:eng for workflow maintenance"
    outcome = client.report_outcome(decision["decision_id"], rows=3, bytes=120, duration_ms=4, status="ok")
    assert outcome["decision_seq"] == decision["audit_seq"]
    with pytest.raises(WardenError) as again:
        client.report_outcome(decision["decision_id"], rows=3)
    assert again.value.status == 409


def test_batch_keeps_order(served):
    client = WardenClient(*served)
    requests = [{"subject": "alice", "domain": "prod", "object": "db/x", "action": action,
                 "context": {"workflow": "maintenance"}} for action in ("read", "write", "read")]
    assert [d["allowed"] for d in client.authorize_batch(requests)] == [True, False, True]


def test_malformed_requests_raise(served):
    with pytest.raises(WardenError) as bad:
        WardenClient(*served).authorize(subject="", domain="prod", object="db/x", action="read")
    assert bad.value.status == 400 and bad.value.code == "invalid_request"
    with pytest.raises(WardenError) as unauthorized:
        WardenClient(served[0], "wdn_wrong").authorize(subject="a", domain="prod", object="db/x", action="read")
    assert unauthorized.value.status == 401


def test_an_unreachable_warden_is_a_deny():
    client = WardenClient(f"http://127.0.0.1:{free_port()}", "wdn_x", timeout=1)
    decision = client.authorize(subject="alice", domain="prod", object="db/x", action="read")
    assert decision["allowed"] is False and "unreachable" in decision["error"]
    assert [d["allowed"] for d in client.authorize_batch([{}, {}])] == [False, False]
