"""The baselines for bench/authorize.py: same server settings, parse the same JSON, write nothing.

`create_app()` answers in Flask, as a service's plain endpoint would. `create_app(inline=True)` also
gives Warden's worker (authz/worker.py) a fast path, so a plain kept-alive request is parsed by the
worker's narrow parser and answered on its poller thread, as Warden's authorize is, minus the token,
the decision and the record: the HTTP cost Warden's authorize cannot go below.
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


class BareFastPath:
    """Warden's AuthorizeFastPath.answer_later, minus everything but reading and parsing the body."""

    def answer_later(self, environ: dict, then: Callable[[str, bytes], None], offload, memory_only: bool = False):
        if environ.get("CONTENT_TYPE") != "application/json":
            return False  # Flask answers
        body = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        then("200 OK", (json.dumps({"allowed": False, "subject": body.get("subject")}, separators=(",", ":"))
                        + "\n").encode())
        return True
