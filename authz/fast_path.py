"""`POST /v1/authorize` answered below the framework: the call every service makes before every query.

Flask and Werkzeug spend more CPU on a request (environ wrapping, routing,
request and response objects) than Warden spends deciding and recording it.
This WSGI middleware answers a well-formed, authorized single decision itself,
with the same services, checks and response bytes as the Flask view. Anything
else — another path or method, no or a wrong token, a body that is not a JSON
object, a field the parser refuses, a body without a length or over the limit —
is handed to Flask untouched, so every error keeps its one implementation.

Under `warden serve`, authz/worker.py calls `answer_later` instead: the same
checks, but the answer is made once the record is committed (by whoever appended
it: the worker's poller or the ledger writer) and written by the worker's poller
thread, and no thread waits for it.
"""

import io
import json
from collections.abc import Callable, Iterable

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from audit.memory import NotInMemory
from audit.web import bearer_token, decode_json_object
from authz.api import UNAUDITED_MESSAGE, request_id
from authz.decisions import AuditUnavailable
from authz.requests import parse_authorize

_PATH = "/v1/authorize"


class AuthorizeFastPath:
    """Wraps `app.wsgi_app`; answers `POST /v1/authorize` directly when nothing about it is unusual."""

    def __init__(self, app: Flask, wsgi_app: Callable):
        self.app = app
        self.wsgi_app = wsgi_app
        self.max_body = app.config["MAX_CONTENT_LENGTH"]
        self._encoder: tuple | None = None  # (the provider's options, the encoder they make); see _json

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == _PATH and environ.get("REQUEST_METHOD") == "POST":
            answer = self._answer(environ)
            if answer is not None:
                status, body = answer
                start_response(status, [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(body)))])
                return [body]
        return self.wsgi_app(environ, start_response)

    def answer_later(self, environ: dict, then: Callable[[str, bytes], None],
                     offload: Callable[[Callable[[], None]], object], memory_only: bool = False) -> bool:
        """Take the request as `__call__` would, but answer without waiting for the commit: queue the
        record and return True; `then(status line, body)` is called once it is committed (in the
        thread that appended it, or through `offload`; see DecisionService.authorize_later). False: not
        taken, and nothing was answered (Flask must answer, on this `environ`). `memory_only`: raise
        NotInMemory, having answered and queued nothing, where deciding would wait on the database
        (an uncached token, person or policy); the same `environ` can then be taken again without it."""
        admitted = self._admit(environ, memory_only)
        if admitted is None:
            return False
        caller, item = admitted
        try:
            self.app.extensions["warden"].decisions.authorize_later(
                item, service=caller.name, request_id=_request_id(environ),
                then=lambda answer: then(*self._response_or_deny(answer)), offload=offload,
                memory_only=memory_only)
        except AuditUnavailable:
            then(*self._response(None))
        return True

    def _answer(self, environ: dict) -> tuple[str, bytes] | None:
        """(status line, body) of the decision, or None to let Flask answer."""
        admitted = self._admit(environ)
        if admitted is None:
            return None
        caller, item = admitted
        try:
            answer = self.app.extensions["warden"].decisions.authorize(
                [item], service=caller.name, request_id=_request_id(environ))[0]
        except AuditUnavailable:
            answer = None
        return self._response(answer)

    def _admit(self, environ: dict, memory_only: bool = False) -> tuple | None:
        """(caller, parsed request) when this path answers the request; None to let Flask answer. Reads
        the body, and leaves it in `environ` for Flask (or a second try). `memory_only`: an uncached
        token raises NotInMemory."""
        length = environ.get("CONTENT_LENGTH", "")
        if (self.app.debug or self.app.json.compact is False  # Flask would indent its JSON
                or environ.get("QUERY_STRING")  # authorize takes none: Flask's gate judges the URL
                or not _is_json(environ.get("CONTENT_TYPE", ""))
                or environ.get("HTTP_TRANSFER_ENCODING")  # chunked: Flask reads to the end
                or environ.get("HTTP_CONTENT_ENCODING")  # Flask's gate refuses any but identity
                or not (length.isascii() and length.isdigit()) or int(length) > self.max_body):
            return None
        raw = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(raw)  # for Flask, should it answer after all
        warden = self.app.extensions["warden"]
        try:
            caller = warden.authenticate(bearer_token(environ.get("HTTP_AUTHORIZATION", "")), memory_only)
            if caller is None or "authorize" not in caller.scopes:
                return None
            return caller, parse_authorize(decode_json_object(raw))
        except NotInMemory:
            raise
        except Exception:  # noqa: BLE001 - Flask answers (and logs) anything unexpected, once
            return None

    def _response_or_deny(self, answer: dict | None) -> tuple[str, bytes]:
        try:
            return self._response(answer)
        except Exception:  # noqa: BLE001 - an answer that cannot be encoded is a deny, not a silence
            return self._response(None)

    def _response(self, answer: dict | None) -> tuple[str, bytes]:
        """The status line and body of an answer; None: the record was not committed."""
        if answer is None:
            return "503 SERVICE UNAVAILABLE", self._json({
                "allowed": False, "error": {"code": "audit_unavailable", "message": UNAUDITED_MESSAGE}})
        return "200 OK", self._json(answer)

    def _json(self, value: dict) -> bytes:
        """The bytes Flask's jsonify makes outside debug mode."""
        provider = self.app.json
        if type(provider) is not DefaultJSONProvider:  # its dumps may do anything: ask it
            return (provider.dumps(value, separators=(",", ":")) + "\n").encode("utf-8")
        # Its dumps, with the encoder made once rather than per call (json.dumps makes one per call
        # when given options); made again should the provider's options change.
        options = (provider.default, provider.ensure_ascii, provider.sort_keys)
        encoder = self._encoder
        if encoder is None or encoder[0] != options:
            encoder = self._encoder = (options, json.JSONEncoder(
                default=options[0], ensure_ascii=options[1], sort_keys=options[2], separators=(",", ":")))
        return (encoder[1].encode(value) + "\n").encode("utf-8")


def _request_id(environ: dict) -> str:
    return request_id(environ.get("HTTP_X_REQUEST_ID", ""))


def _is_json(content_type: str) -> bool:
    """Werkzeug's `is_json`: application/json or application/*+json, parameters ignored."""
    mimetype = content_type.partition(";")[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))
