"""The baselines for bench/authorize.py: same server settings, parse the same JSON, write nothing.

`create_app()` answers in Flask, as a service's plain endpoint would; `plain_wsgi` is the same
endpoint as a bare WSGI callable, no framework at all. `create_app(inline=True)` also
gives Warden's worker (authz/worker.py) a fast path, so a plain kept-alive request is parsed by the
worker's narrow parser and handled on its poller thread, as Warden's authorize is, and answered there
at once (authorize's answer waits for its commit and is written by the ledger writer). It has no
token, decision or record: the HTTP cost Warden's authorize cannot go below.
"""

import json
from collections.abc import Callable

from flask import Flask, jsonify, request


def create_app(inline: bool = False) -> Flask:
    app = Flask(__name__)

    @app.post("/v1/authorize")
    def authorize():
        body = request.get_json()
        return jsonify({"allowed": False, "subject": body.get("subject")})

    if inline:
        app.extensions["authorize_fast_path"] = BareFastPath()
    return app


def plain_wsgi(environ: dict, start_response) -> list[bytes]:
    """The endpoint without a framework: any request is read as the authorize body and answered."""
    body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
    answer = (json.dumps({"allowed": False, "subject": body.get("subject")}, separators=(",", ":")) + "\n").encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


class BareFastPath:
    """Warden's AuthorizeFastPath.answer_later, minus everything but reading and parsing the body."""

    def answer_later(self, environ: dict, then: Callable[[str, bytes], None], offload, memory_only: bool = False):
        if environ.get("CONTENT_TYPE") != "application/json":
            return False  # Flask answers
        body = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        then("200 OK", (json.dumps({"allowed": False, "subject": body.get("subject")}, separators=(",", ":"))
                        + "\n").encode())
        return True
