"""The framework-free /v1/authorize answers exactly as the Flask view would, and declines the rest."""

import json

import pytest

from authz.decisions import AuditUnavailable
from tests.conftest import ledger_rows

POLICY = "p, role:engineer, prod, db/*, read, maintenance, allow\ng, alice, role:engineer, *\n"
ALLOWED = {"subject": "alice", "domain": "prod", "object": "db/customers", "action": "read",
           "context": {"workflow": "maintenance", "ticket": "OPS-12"}}


@pytest.fixture(autouse=True)
def _policy(load_policy):
    load_policy(POLICY)


@pytest.fixture
def both(app):
    """Post the same request through the fast path and through Flask alone."""
    fast, flask_only = app.test_client(), app.test_client()
    inner = app.wsgi_app.wsgi_app

    def post(**kwargs):
        first = fast.post("/v1/authorize", **kwargs)
        app.wsgi_app, saved = inner, app.wsgi_app
        try:
            second = flask_only.post("/v1/authorize", **kwargs)
        finally:
            app.wsgi_app = saved
        return first, second
    return post


def _same(first, second, *, varying=("decision_id", "audit_seq")):
    assert first.status_code == second.status_code
    assert first.headers["Content-Type"] == second.headers["Content-Type"]
    assert sorted(first.headers.keys()) == sorted(second.headers.keys())
    one, two = first.get_json(), second.get_json()
    for key in varying:
        if key in one:
            one[key] = two[key] = None
    assert json.dumps(one) == json.dumps(two)  # same fields, same order, same values


def test_a_decision_is_the_same_either_way(both, auth):
    _same(*both(json=ALLOWED, headers=auth))
    _same(*both(json={**ALLOWED, "action": "delete"}, headers=auth))
    _same(*both(json={**ALLOWED, "subject": "eve", "context": {}}, headers=auth))


def test_the_fast_path_answers_well_formed_requests_itself(app, client, auth, warden):
    def no_flask(environ, start_response):
        raise AssertionError("Flask was asked")
    app.wsgi_app.wsgi_app = no_flask
    response = client.post("/v1/authorize", json=ALLOWED, headers={**auth, "X-Request-Id": "req-42"})
    assert response.status_code == 200 and response.get_json()["allowed"] is True
    record = json.loads(ledger_rows(warden.engine)[-1].body)["data"]
    assert (record["request_id"], record["service"]) == ("req-42", "svc-0")
    assert response.data == (json.dumps(response.get_json(), separators=(",", ":")) + "\n").encode()


@pytest.mark.parametrize("token, kwargs", [
    ("none", {"json": ALLOWED}),
    ("bad", {"json": ALLOWED}),
    ("good", {"data": "{not json", "content_type": "application/json"}),
    ("good", {"data": '{"subject": NaN}', "content_type": "application/json"}),
    ("good", {"data": "[1, 2]", "content_type": "application/json"}),
    ("good", {"data": json.dumps(ALLOWED), "content_type": "text/plain"}),
    ("good", {"json": {**ALLOWED, "subject": "a*"}}),
    ("good", {"json": {**ALLOWED, "extra": 1}}),
    ("good", {"json": {"subject": "alice"}}),
    ("good", {"data": "x" * (2 * 1024 * 1024 + 1), "content_type": "application/json"}),
    ("good", {"data": json.dumps(ALLOWED)[:-1] + ', "subject": "bob"}', "content_type": "application/json"}),
], ids=["no-token", "bad-token", "bad-json", "nan", "not-object", "not-json-type", "star", "extra-field",
        "missing-fields", "too-large", "repeated-key"])
def test_anything_unusual_gets_flasks_answer(both, auth, token, kwargs):
    headers = {"none": {}, "bad": {"Authorization": "Bearer not-a-token"}, "good": auth}[token]
    first, second = both(headers=headers, **kwargs)
    assert first.status_code >= 400
    assert (first.status_code, first.data) == (second.status_code, second.data)


def test_a_token_without_the_scope_gets_flasks_403(both, make_token):
    first, second = both(json=ALLOWED, headers={"Authorization": f"Bearer {make_token('audit:read')}"})
    assert first.status_code == 403 and (first.data, first.headers) == (second.data, second.headers)


def test_the_unaudited_deny_is_the_same_either_way(both, auth, warden, monkeypatch):
    def refuse(*args, **kwargs):
        raise AuditUnavailable("the ledger is down")
    monkeypatch.setattr(warden.decisions, "authorize", refuse)
    first, second = both(json=ALLOWED, headers=auth)
    assert first.status_code == 503 and first.get_json()["allowed"] is False
    assert (first.data, first.status) == (second.data, second.status)


def test_odd_framing_and_failures_before_deciding_are_left_to_flask(app, both, auth, warden, monkeypatch):
    import io

    body = json.dumps(ALLOWED).encode()
    def environ(**odd):
        return {"PATH_INFO": "/v1/authorize", "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json",
                "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                "HTTP_AUTHORIZATION": auth["Authorization"], **odd}
    for odd in ({"CONTENT_LENGTH": "\u00b2"}, {"HTTP_TRANSFER_ENCODING": "chunked"}, {"CONTENT_LENGTH": ""},
                {"QUERY_STRING": "x=1"}, {"HTTP_CONTENT_ENCODING": "gzip"}):
        assert app.wsgi_app._answer(environ(**odd)) is None, odd
    # what gunicorn sends for every request: the fast path must take it
    assert app.wsgi_app._answer(environ(**{"wsgi.input_terminated": True}))[0] == "200 OK"

    def broken(token):
        raise RuntimeError("token store down")
    monkeypatch.setattr(warden, "authenticate", broken)
    first, second = both(json=ALLOWED, headers=auth)
    assert first.status_code == 500 and first.get_json()["error"]["code"] == "internal"
    assert (first.status_code, first.data) == (second.status_code, second.data)


@pytest.mark.parametrize("encoding", ["gzip", "br", "GZIP, identity"])
def test_a_compressed_body_is_refused_415_and_nothing_is_recorded(both, client, auth, warden, encoding):
    before = ledger_rows(warden.engine)
    first, second = both(json=ALLOWED, headers={**auth, "Content-Encoding": encoding})
    assert first.status_code == 415 and (first.data, first.headers) == (second.data, second.headers)
    assert first.headers["Accept-Encoding"] == "identity"  # what the server takes (RFC 9110, 15.5.16)
    assert first.get_json()["error"] == {"code": "unsupported_media_type", "message": f"Content-Encoding "
                                         f"{encoding!r} is not supported: send the body uncompressed"}
    assert client.post("/v1/policies", json={}, headers={**auth, "Content-Encoding": encoding}).status_code == 415
    assert ledger_rows(warden.engine) == before
    assert client.post("/v1/authorize", json=ALLOWED, headers={**auth, "Content-Encoding": "identity"}).status_code == 200


def test_a_nul_in_the_query_is_refused_as_on_every_other_route(client, auth, warden):
    before = ledger_rows(warden.engine)
    response = client.post("/v1/authorize?x=%00", json=ALLOWED, headers=auth)
    assert response.status_code == 400 and "NUL" in response.get_json()["error"]["message"]
    assert ledger_rows(warden.engine) == before


def test_debug_mode_gets_flasks_indented_answer(app, client, auth):
    app.debug = True
    try:
        text = client.post("/v1/authorize", json=ALLOWED, headers=auth).get_data(as_text=True)
    finally:
        app.debug = False
    assert text.startswith("{\n  ")


@pytest.mark.parametrize("ensure_ascii, sort_keys", [(True, False), (False, False), (True, True), (False, True)])
def test_answers_are_the_bytes_jsonify_makes_under_the_providers_options(app, ensure_ascii, sort_keys):
    fast = app.extensions["authorize_fast_path"]
    answer = {"allowed": True, "reason": "allowed by rôle:ingénieur ✓", "matched": [["a", "b"]], "review": None,
              "audit_seq": 7}
    fast._json(answer)  # an encoder made under the options before these
    app.json.ensure_ascii, app.json.sort_keys = ensure_ascii, sort_keys
    with app.app_context():
        assert fast._json(answer) == app.json.response(answer).get_data()
