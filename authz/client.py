"""A small Python client for services that ask Warden before they query data.

    from authz.client import WardenClient
    warden = WardenClient("http://127.0.0.1:8000", token)
    decision = warden.authorize(subject="alice", domain="prod", object="db/customers", action="read",
                                workflow="maintenance", context={"ticket": "OPS-12"})
    if decision["allowed"]:
        rows = run_query()
        warden.report_outcome(decision["decision_id"], rows=len(rows), status="ok")

It fails closed: when Warden cannot record the decision (503) or cannot be
reached, `authorize` returns a deny (`allowed` false, with an `error`) instead of
raising, so a caller that only checks `allowed` stays safe. Requests Warden
refuses as malformed (4xx) raise WardenError: that is a bug in the caller.
Standard library only.
"""

import json
import urllib.error
import urllib.request


class WardenError(Exception):
    """Warden refused the request: `status`, `code` and `message` say why."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class WardenClient:
    """Talks to one Warden over HTTP with one service token."""

    def __init__(self, base_url: str, token: str, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read())
            except ValueError:
                payload = {"error": {"code": "http_error", "message": exc.reason}}
            return exc.code, payload

    @staticmethod
    def _raise_for(status: int, payload: dict) -> None:
        error = payload.get("error", {})
        raise WardenError(status, error.get("code", "error"), error.get("message", ""))

    @staticmethod
    def _denied(error: str) -> dict:
        return {"allowed": False, "decision_id": None, "reason": f"denied: {error}", "matched": [],
                "review": None, "error": error}

    def authorize(self, *, subject: str, domain: str, object: str, action: str, workflow: str | None = None,
                  context: dict | None = None) -> dict:
        """Ask whether `subject` may `action` `object` in `domain` (for `workflow`); the decision as a dict."""
        body = {"subject": subject, "domain": domain, "object": object, "action": action}
        context = dict(context or {})
        if workflow is not None:
            context["workflow"] = workflow
        if context:
            body["context"] = context
        return self._authorize_one(body)

    def _authorize_one(self, body: dict) -> dict:
        try:
            status, payload = self._post("/v1/authorize", body)
        except (OSError, ValueError) as exc:
            return self._denied(f"Warden unreachable ({type(exc).__name__})")
        if status == 200:
            return payload
        if status >= 500:
            return self._denied(payload.get("error", {}).get("message", f"Warden answered {status}"))
        self._raise_for(status, payload)

    def authorize_batch(self, requests: list[dict]) -> list[dict]:
        """Decide up to 1,000 `/v1/authorize` bodies at once; the decisions in the same order."""
        try:
            status, payload = self._post("/v1/authorize/batch", {"requests": requests})
        except (OSError, ValueError) as exc:
            return [self._denied(f"Warden unreachable ({type(exc).__name__})") for _ in requests]
        if status == 200:
            return payload["decisions"]
        if status >= 500:
            message = payload.get("error", {}).get("message", f"Warden answered {status}")
            return [self._denied(message) for _ in requests]
        self._raise_for(status, payload)

    def report_outcome(self, decision_id: str, *, rows: int | None = None, bytes: int | None = None,
                       duration_ms: int | None = None, status: str = "ok") -> dict:
        """Tell Warden what the query of `decision_id` did; raises WardenError if refused (404, 409, ...)."""
        body = {"decision_id": decision_id, "status": status,
                **{k: v for k, v in (("rows", rows), ("bytes", bytes), ("duration_ms", duration_ms)) if v is not None}}
        code, payload = self._post("/v1/audit/events", body)
        if code != 201:
            self._raise_for(code, payload)
        return payload
