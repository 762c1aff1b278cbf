"""A whole `POST /v1/authorize` read into a kept-alive connection's buffer, parsed by a narrow parser
that takes only the plain shape most clients send, and gives up on anything else.

gunicorn's request parser and WSGI environ cost more CPU per authorize than the
decision step did (about 100 µs of the 300 µs a poller spent on one before this). This parser
accepts a strict subset of what gunicorn accepts — header names of letters,
digits and ``!#$%&'*+-.^`|~`` (a name with "_" is declined); values of visible
ASCII, spaces and tabs (stripped at the ends, as gunicorn does); one
Content-Length of at most 9 digits; no Transfer-Encoding, Upgrade, Expect, scheme
header or repeated Host or Content-Type; gunicorn's limits on the number and size
of fields — and for those gives what gunicorn gives: the same header list and the
same environ values. On anything outside it, `parse` returns None and gunicorn
parses the same bytes (and refuses them where they are malformed).
tests/authz/test_inline_http.py holds it to gunicorn's parser on generated requests.
"""

import io
import re
from dataclasses import dataclass

REQUEST_LINE = b"POST /v1/authorize HTTP/1.1\r\n"
_PATH = "/v1/authorize"
# Name and value; one way to match any line (no backtracking), and gunicorn strips the value.
_FIELD = re.compile(r"([!#$%&'*+.^`|~0-9A-Za-z-]+):([\t\x20-\x7e]*)")
# Fields whose meaning gunicorn acts on: left to gunicorn's parser, as is any name with "_".
_NOT_HERE = frozenset(("TRANSFER-ENCODING", "UPGRADE", "EXPECT"))
_SINGLETONS = frozenset(("HOST", "CONTENT-TYPE", "CONTENT-LENGTH"))


@dataclass(slots=True, eq=False)
class InlineRequest:
    """What gunicorn's Request gives for a plain authorize (method, path, headers with upper-cased
    names, in order), its body, and the WSGI environ entries gunicorn would make of them."""

    headers: list[tuple[str, str]]
    fields: dict[str, str]  # CONTENT_TYPE, CONTENT_LENGTH and HTTP_* as in gunicorn's environ
    body: bytes
    length: int  # bytes of the buffer this request takes, head and body
    method: str = "POST"
    uri: str = _PATH
    path: str = _PATH
    query: str = ""
    fragment: str = ""
    version: tuple[int, int] = (1, 1)

    def should_close(self) -> bool:
        """gunicorn's Request.should_close: the first Connection field decides; HTTP/1.1 keeps alive."""
        for name, value in self.headers:
            if name == "CONNECTION":
                return value.lower().strip(" \t") == "close"
        return False

    def environ(self, client) -> dict:
        """The WSGI environ entries gunicorn's `wsgi.create` makes for this request from peer `client`
        (an (address, port) pair): those the authorize fast path and the access log read."""
        environ = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": _PATH, "RAW_URI": _PATH,
                   "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(self.body), "REMOTE_ADDR": client[0], "REMOTE_PORT": str(client[1])}
        environ.update(self.fields)
        return environ


class InlineParser:
    """Parses buffered authorize requests under one gunicorn configuration's limits."""

    def __init__(self, limit_request_fields: int, limit_request_field_size: int, secure_scheme_headers):
        # gunicorn's reading of its settings: 0 or less means its own maximum (32768 fields, 8190 bytes).
        self.max_fields = limit_request_fields if 0 < limit_request_fields <= 32768 else 32768
        self.max_field_size = limit_request_field_size if limit_request_field_size > 0 else 8190
        self.not_here = _NOT_HERE | {name.upper() for name in secure_scheme_headers}

    def parse(self, buffered: bytes) -> InlineRequest | None:
        """The request at the start of `buffered`, or None when this parser does not take it."""
        if not buffered.startswith(REQUEST_LINE):
            return None
        head_end = buffered.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        lines = buffered[len(REQUEST_LINE):head_end].decode("latin-1").split("\r\n")
        if len(lines) > self.max_fields:
            return None
        headers, fields, seen, length = [], {}, set(), None
        for line in lines:
            match = _FIELD.fullmatch(line) if len(line) + 2 <= self.max_field_size else None
            if match is None:
                return None
            name, value = match.group(1).upper(), match.group(2).strip(" \t")
            if name in self.not_here:
                return None
            if name in _SINGLETONS:
                if name in seen:
                    return None
                seen.add(name)
            headers.append((name, value))
            if name == "CONTENT-LENGTH":
                if not (value.isascii() and value.isdigit()) or len(value) > 9:  # no body is 1 GB
                    return None
                length = int(value)
                fields["CONTENT_LENGTH"] = value
            elif name == "CONTENT-TYPE":
                fields["CONTENT_TYPE"] = value
            else:
                key = "HTTP_" + name.replace("-", "_")
                fields[key] = f"{fields[key]},{value}" if key in fields else value
        body_start = head_end + 4
        if length is None or len(buffered) < body_start + length:
            return None
        return InlineRequest(headers, fields, buffered[body_start:body_start + length], body_start + length)
