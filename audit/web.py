"""HTTP plumbing every blueprint shares: JSON errors, body parsing and the access gate.

Deny by default: a view answers only if it declares who may call it, with
`@requires_scope(...)` for service tokens or `@public` for the few open ones;
the gate refuses every other request before the view runs.
"""

import json

from flask import Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_response(status: int, code: str, message: str, **extra):
    return jsonify({**extra, "error": {"code": code, "message": message}}), status


def public(view):
    """Mark `view` as open to anyone (health, metrics, pages with their own sign-in)."""
    view.warden_public = True
    return view


def requires_scope(scope: str):
    """Let only callers whose bearer token carries `scope` reach the view; `g.caller` names them."""
    def decorate(view):
        view.warden_scope = scope
        return view
    return decorate


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer ...` header value, or None."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _gate():
    encoding = request.headers.get("Content-Encoding", "")
    if encoding.strip(" \t").lower() not in ("", "identity"):
        # Read as it is, a compressed body would be judged as the wrong bytes (RFC 9110, section 15.5.16).
        response, status = error_response(415, "unsupported_media_type",
                                          f"Content-Encoding {encoding!r} is not supported: send the body uncompressed")
        response.headers["Accept-Encoding"] = "identity"
        return response, status
    # A NUL is never part of a name, an id or a filter, and Postgres text cannot hold one: refused
    # here for every URL, rather than failing later as a database error.
    if "\x00" in request.path or any("\x00" in key or "\x00" in value
                                     for key, value in request.args.items(multi=True)):
        return error_response(400, "bad_request", "the URL must not contain NUL characters (%00)")
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if view is None or getattr(view, "warden_public", False) or request.endpoint.rsplit(".", 1)[-1] == "static":
        return None  # unknown URLs fall through to a JSON 404; static files and pages are open to the gate
    scope = getattr(view, "warden_scope", None)
    caller = current_app.extensions["warden"].authenticate(bearer_token(request.headers.get("Authorization", "")))
    if caller is None:
        return error_response(401, "unauthorized", "a valid service token is required (Authorization: Bearer ...)")
    if scope is None or scope not in caller.scopes:
        return error_response(403, "forbidden", f"this token lacks the {scope!r} scope" if scope
                              else "this endpoint admits no service token")
    g.caller = caller
    return None


def read_json(max_depth: int = 8) -> dict:
    """Return the request's JSON object, or raise ApiError 400 saying what is wrong with it."""
    if not request.is_json:
        raise ApiError(400, "bad_request", "send a JSON body with Content-Type: application/json")
    return decode_json_object(request.get_data(cache=True), max_depth)


def decode_json_object(raw: bytes, max_depth: int = 8) -> dict:
    """Return `raw` as a JSON object, or raise ApiError 400 saying what is wrong with it."""
    try:
        # json.loads, minus building a decoder per call: bytes in UTF-8, -16 or -32, as it accepts them.
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except _RepeatedKey as exc:
        raise ApiError(400, "bad_json", f"the body is ambiguous JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    if not _plainly_shaped(raw, max_depth) and (problem := _shape_problem(body, max_depth)):
        raise ApiError(400, *problem)
    return body


def _plainly_shaped(raw: bytes, max_depth: int) -> bool:
    """Whether `raw` cannot hold what _shape_problem looks for, judged from its bytes: ASCII without
    zero bytes is UTF-8 (UTF-16 and -32 text of JSON has them), so no NUL or surrogate can come but
    from a \\u escape, and fewer brackets than `max_depth` cannot nest values deeper than that."""
    return (raw.isascii() and b"\x00" not in raw and b"\\u" not in raw
            and raw.count(b"{") + raw.count(b"[") < max_depth)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for a JSON number")
    return value


class _RepeatedKey(ValueError):
    pass


def _object_of_unique_keys(pairs: list) -> dict:
    # JSON parsers disagree on a repeated key (first wins, last wins, error), so a proxy in front of
    # Warden and Warden itself could each read a different subject from one body: refused.
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _RepeatedKey(f"the key {repeated!r} appears more than once in one object")
    return body


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float,
                            object_pairs_hook=_object_of_unique_keys)


def _shape_problem(body: dict, max_depth: int) -> tuple[str, str] | None:
    """(code, message) of the first thing wrong with a parsed body, if anything: nesting deeper than
    `max_depth` levels (a scalar in the top object is at level 2), a NUL (which no name, id or note
    holds, and Postgres text cannot), or a lone surrogate (not text at all). A loop, not recursion:
    any depth json.loads accepts is refused with a 400, never a RecursionError."""
    stack = [(body, 1)]
    while stack:
        value, level = stack.pop()
        if level > max_depth:
            return "bad_request", f"the body nests deeper than {max_depth} levels"
        if isinstance(value, str):
            if problem := _text_problem(value):
                return "bad_json", problem
        elif isinstance(value, dict):
            for key, item in value.items():
                if problem := _text_problem(key):
                    return "bad_json", problem
                stack.append((item, level + 1))
        elif isinstance(value, list):
            stack.extend((item, level + 1) for item in value)
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "the body holds a NUL character (\\u0000): not allowed in any text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "the body holds a lone UTF-16 surrogate (\\ud800-\\udfff): not valid text"
    return None


def install(app: Flask) -> None:
    """Put the access gate and JSON error handlers on `app`."""
    app.before_request(_gate)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the body is larger than the {limit} bytes this endpoint accepts"
        return error_response(exc.code or 500, code, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "an internal error occurred; it was logged")
