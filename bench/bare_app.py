"""The baseline for bench/authorize.py: same server settings, parses the same JSON, writes nothing."""

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/v1/authorize")
    def authorize():
        body = request.get_json()
        return jsonify({"allowed": False, "subject": body.get("subject")})

    return app
