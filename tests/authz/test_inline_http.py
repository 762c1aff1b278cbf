"""The poller's narrow authorize parser against gunicorn's: whatever it takes, it reads as gunicorn does."""

import time

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.inline_http import InlineParser

PEER, SERVER = ("127.0.0.1", 40000), ("127.0.0.1", 8000)  # a peer gunicorn trusts for scheme headers
BODY = b'{"subject":"alice","domain":"prod","object":"db/x","action":"read"}'


def config(**settings) -> Config:
    cfg = Config()
    for name, value in settings.items():
        cfg.set(name, value)
    return cfg


def narrow(cfg: Config) -> InlineParser:
    return InlineParser(cfg.limit_request_fields, cfg.limit_request_field_size, cfg.secure_scheme_headers)


def request(*fields: str, body: bytes = BODY, length: bool = True) -> bytes:
    head = ["POST /v1/authorize HTTP/1.1", *fields] + ([f"Content-Length: {len(body)}"] if length else [])
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def gunicorn_reads(cfg: Config, raw: bytes):
    """gunicorn's request, its body, the bytes left after it, and its WSGI environ."""
    parser = RequestParser(cfg, iter([raw]), PEER)
    req = next(parser)
    _, environ = wsgi.create(req, None, PEER, SERVER, cfg)
    body = req.body.read()
    rest = b""
    while chunk := parser.unreader.read():
        rest += chunk
    return req, body, rest, environ


def assert_read_as_gunicorn_reads(cfg: Config, raw: bytes) -> None:
    taken = narrow(cfg).parse(raw)
    if taken is None:
        return
    req, body, rest, environ = gunicorn_reads(cfg, raw)  # must not raise: gunicorn accepts it too
    assert (req.method, req.path, req.query, req.version) == ("POST", "/v1/authorize", "", (1, 1))
    assert taken.headers == req.headers
    assert taken.body == body and raw[taken.length:] == rest
    assert taken.should_close() == req.should_close()
    ours = taken.environ(PEER)
    assert ours.pop("wsgi.input").read() == body
    assert ours == {key: environ[key] for key in ours}
    assert {key for key in environ if key.startswith(("HTTP_", "CONTENT_"))} <= set(ours)


def test_a_plain_request_is_taken_as_gunicorn_reads_it():
    raw = request("Host: warden", "Content-Type: application/json", "Authorization: Bearer wdn_x",
                  "X-Request-Id:  abc def\t ", "Accept: */*", "accept: text/plain", "Connection: keep-alive")
    taken = narrow(config()).parse(raw + b"POST /next")
    assert taken is not None and taken.body == BODY and taken.length == len(raw)
    assert taken.environ(PEER)["HTTP_ACCEPT"] == "*/*,text/plain"  # repeated fields joined, as gunicorn does
    assert_read_as_gunicorn_reads(config(), raw + b"POST /next")


@pytest.mark.parametrize("fields", [
    ("Transfer-Encoding: chunked",), ("Expect: 100-continue",), ("Upgrade: h2c",),
    ("X-Forwarded-Proto: https",),  # a scheme header: gunicorn's to judge
    ("X_Custom: 1",),  # gunicorn drops or refuses names with "_"
    ("Host: a", "Host: b"), ("Content-Type: application/json", "content-type: text/plain"),
    ("Content-Length: 5",),  # a second length
    ("X-Folded: a", " b"),  # obsolete line folding
    ("X-Latin: caf\xe9",), ("X-Control: a\x7fb",), ("Bad Header: x",), (": no name",), ("NoColon",),
])
def test_anything_unusual_is_left_to_gunicorn(fields):
    assert narrow(config()).parse(request(*fields)) is None


def test_only_a_whole_authorize_with_a_length_is_taken():
    parser = narrow(config())
    whole = request("Host: w")
    assert parser.parse(whole) is not None
    assert parser.parse(whole[:-1]) is None  # the body still arriving
    assert parser.parse(whole[:whole.index(b"\r\n\r\n") + 2]) is None  # the head still arriving
    assert parser.parse(request("Host: w", length=False)) is None
    assert parser.parse(request("Content-Length: x1", length=False)) is None
    for line in (b"POST /v1/authorize?x=1 HTTP/1.1", b"POST /v1/authorize HTTP/1.0", b"GET /v1/authorize HTTP/1.1",
                 b"POST /v1/authorized HTTP/1.1"):
        assert parser.parse(whole.replace(b"POST /v1/authorize HTTP/1.1", line, 1)) is None


def test_gunicorns_limits_hold():
    cfg = config(limit_request_fields=3, limit_request_field_size=40)
    assert narrow(cfg).parse(request("Host: w", "A: 1")) is not None
    assert narrow(cfg).parse(request("Host: w", "A: 1", "B: 2")) is None  # four fields
    assert narrow(cfg).parse(request("X-Long: " + "v" * 30)) is not None  # 38 bytes and CRLF: 40, the limit
    assert narrow(cfg).parse(request("X-Long: " + "v" * 31)) is None
    assert narrow(config(secure_scheme_headers={"X-Scheme": "on"})).parse(request("X-Scheme: on")) is None


_NAMES = st.sampled_from(["Host", "Content-Type", "Content-Length", "Authorization", "X-Request-Id",
                          "Connection", "Accept", "Transfer-Encoding", "Expect", "X-Forwarded-Proto",
                          "X_Under", "Bad Name", "", "Ünï"]) | st.text("abcXYZ-_!#.~019", min_size=1, max_size=8)
_VALUES = st.sampled_from(["close", "keep-alive", " Keep-Alive ", "application/json", "12", "", "chunked"]) | st.text(
    st.sampled_from("ab Z9\t:;,=\"/\x7f\x00\r\n\xe9"), max_size=12)


@settings(max_examples=500, deadline=None)
@given(fields=st.lists(st.tuples(_NAMES, _VALUES, st.sampled_from([": ", ":", " : ", ":\t"])), max_size=6),
       length=st.none() | st.sampled_from([len(BODY), 0, 5]), extra=st.binary(max_size=8),
       small_limits=st.booleans())
def test_whatever_it_takes_it_reads_as_gunicorn_does(fields, length, extra, small_limits):
    lines = [f"{name}{colon}{value}" for name, value, colon in fields]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    cfg = config(limit_request_fields=4, limit_request_field_size=24) if small_limits else config()
    assert_read_as_gunicorn_reads(cfg, request(*lines, length=False) + extra)


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(st.tuples(st.text("abcXYZ-019!#.~", min_size=1, max_size=10).filter(
           lambda name: name.upper() not in {"CONTENT-LENGTH", "HOST", "CONTENT-TYPE"}),
       st.text(st.sampled_from("ab Z9\t:;,=\"/"), max_size=20)), max_size=8))
def test_plain_requests_are_all_taken(fields):
    """The common shape is taken, not left to gunicorn: the narrow parser is no mere refusal."""
    raw = request("Host: warden", *(f"{name}: {value}" for name, value in fields))
    assert narrow(config()).parse(raw) is not None
    assert_read_as_gunicorn_reads(config(), raw)


@pytest.mark.parametrize("fields", [(), ("Connection: close",), ("connection:  Close ",), ("Connection: keep-alive",),
                                    ("Connection: keep-alive", "Connection: close"),
                                    ("Connection: upgrade", "Connection: close"), ("Connection: close, te",)])
def test_the_first_connection_field_decides_whether_it_closes_as_in_gunicorn(fields):
    raw = request("Host: w", *fields)
    assert narrow(config()).parse(raw).should_close() == gunicorn_reads(config(), raw)[0].should_close()


def test_hostile_heads_are_declined_quickly_and_never_raise():
    parser = narrow(config())
    assert parser.parse(request("Content-Length: " + "0" * 5000, length=False)) is None  # int() refuses 4301 digits
    assert parser.parse(request("Content-Length: 1000000000", length=False)) is None  # ten digits: no 1 GB body
    started = time.perf_counter()
    for line in ("X:" + " " * 8100 + "\x01", "X:" + " " * 60000 + "\x01", "X:" + "\t" * 60000 + "a"):
        assert parser.parse(request(line)) is None  # a control byte; over the field size
    assert time.perf_counter() - started < 0.5  # linear: a poller stalled on a regex stalls its worker


@settings(max_examples=300, deadline=None)
@given(head=st.binary(max_size=200))
def test_any_bytes_after_the_request_line_are_taken_as_gunicorn_reads_them_or_declined(head):
    assert_read_as_gunicorn_reads(config(), b"POST /v1/authorize HTTP/1.1\r\n" + head)
