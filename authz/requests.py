"""Turning request bodies (Warden's and OpenID AuthZEN's) into validated decision requests."""

import json
from dataclasses import dataclass, field

from audit.web import ApiError
from authz.decider import Request
from authz.rules import name_problem

MAX_BATCH = 1000
MAX_CONTEXT_BYTES = 4096
_AUTHORIZE_FIELDS = {"subject", "domain", "object", "action", "context"}


@dataclass(frozen=True)
class AuthorizeRequest:
    """A validated question plus the context that goes into the ledger with it."""

    request: Request
    context: dict = field(default_factory=dict)


def bad(message: str, where: str = "") -> ApiError:
    return ApiError(400, "invalid_request", f"{where}{message}")


def _name(body: dict, key: str, what: str, where: str) -> str:
    if key not in body:
        raise bad(f"{what} is required", where)
    if problem := name_problem(body[key], what):
        raise bad(problem, where)
    return body[key]


def _context(value, where: str) -> tuple[dict, str]:
    if value is None:
        return {}, ""
    if not isinstance(value, dict):
        raise bad("context must be an object", where)
    if len(json.dumps(value)) > MAX_CONTEXT_BYTES:
        raise bad(f"context is larger than {MAX_CONTEXT_BYTES} bytes", where)
    workflow = value.get("workflow", "")
    if workflow not in ("", None) and (problem := name_problem(workflow, "context.workflow")):
        raise bad(problem, where)
    return value, workflow or ""


def parse_authorize(body, where: str = "") -> AuthorizeRequest:
    """Validate one `/v1/authorize` body; raise ApiError 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise bad("a request must be a JSON object", where)
    if not _AUTHORIZE_FIELDS.issuperset(body):
        unknown = sorted(set(body) - _AUTHORIZE_FIELDS)
        raise bad(f"unknown field {', '.join(unknown)} (expected {', '.join(sorted(_AUTHORIZE_FIELDS))})", where)
    context, workflow = _context(body.get("context"), where)
    request = Request(_name(body, "subject", "subject", where), _name(body, "domain", "domain", where),
                      _name(body, "object", "object", where), _name(body, "action", "action", where), workflow)
    return AuthorizeRequest(request, context)


def parse_batch(body: dict) -> list[AuthorizeRequest]:
    """Validate a `/v1/authorize/batch` body: every request, or a 400 naming the first bad one."""
    if set(body) - {"requests"}:
        raise bad(f"unknown field {', '.join(sorted(set(body) - {'requests'}))} (expected requests)")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise bad("requests must be a non-empty list")
    if len(requests) > MAX_BATCH:
        raise bad(f"a batch holds at most {MAX_BATCH} requests, got {len(requests)}")
    return [parse_authorize(item, where=f"requests[{i}]: ") for i, item in enumerate(requests)]


# --- OpenID AuthZEN 1.0 -----------------------------------------------------------------

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


def _entity(value, what: str, id_key: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise bad(f"{what} must be an object", where)
    if id_key not in value:
        raise bad(f"{what}.{id_key} is required", where)
    props = value.get("properties", {})
    if not isinstance(props, dict):
        raise bad(f"{what}.properties must be an object", where)
    return value


def parse_evaluation(body: dict, where: str = "") -> AuthorizeRequest:
    """Map an AuthZEN evaluation (subject/resource/action/context) onto a Warden request.

    subject.id is the subject, resource.id the object, action.name the action; the
    domain is resource.properties.domain, else context.domain; the workflow is
    context.workflow. Whatever else the context holds is recorded as context.
    """
    if not isinstance(body, dict):
        raise bad("an evaluation must be a JSON object", where)
    subject = _entity(body.get("subject"), "subject", "id", where)
    resource = _entity(body.get("resource"), "resource", "id", where)
    action = _entity(body.get("action"), "action", "name", where)
    context = body.get("context") or {}
    if not isinstance(context, dict):
        raise bad("context must be an object", where)
    domain = resource.get("properties", {}).get("domain", context.get("domain"))
    if domain is None:
        raise bad("the domain is required: resource.properties.domain or context.domain", where)
    recorded = {k: v for k, v in context.items() if k != "domain"}
    return parse_authorize({"subject": subject["id"], "domain": domain, "object": resource["id"],
                            "action": action["name"], "context": recorded}, where)


def parse_evaluations(body: dict) -> tuple[list[AuthorizeRequest], str] | None:
    """Return the evaluations and their semantic, or None when the body is a single evaluation.

    Each entry of `evaluations` takes subject, resource, action and context from
    the top level unless it sets its own.
    """
    items = body.get("evaluations")
    if items is None or items == []:
        return None
    if not isinstance(items, list):
        raise bad("evaluations must be a list")
    if len(items) > MAX_BATCH:
        raise bad(f"at most {MAX_BATCH} evaluations, got {len(items)}")
    options = body.get("options") or {}
    semantic = options.get("evaluations_semantic", "execute_all") if isinstance(options, dict) else None
    if semantic not in SEMANTICS:
        raise bad(f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}")
    defaults = {k: body[k] for k in ("subject", "resource", "action", "context") if k in body}
    parsed = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad("an evaluation must be a JSON object", f"evaluations[{i}]: ")
        parsed.append(parse_evaluation({**defaults, **item}, where=f"evaluations[{i}]: "))
    return parsed, semantic
