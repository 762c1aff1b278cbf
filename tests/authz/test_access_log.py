"""The access line written for the authorize fast path is the line gunicorn writes."""

import logging
from datetime import timedelta

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger, SafeAtoms
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from app import ACCESS_LOG_FORMAT
from authz.access_log import _Atoms, log_access
from authz.inline_http import InlineParser
from authz.worker import _InlineResponse

PEER = ("10.1.2.3", 40000)
RAW = (b'POST /v1/authorize HTTP/1.1\r\nHost: warden\r\nContent-Type: application/json\r\n'
       b'User-Agent: svc "quoted"\r\nX-Request-Id: r1\r\nContent-Length: 2\r\n\r\n{}')
ATOMS = ["h", "l", "u", "r", "s", "m", "U", "q", "H", "b", "B", "f", "a", "T", "D", "M", "L", "p",
         "{host}i", "{User-Agent}i", "{content-type}o", "{remote_addr}e", "{nothing}i", "x"]


def logger(**settings) -> Logger:
    cfg = Config()
    for name, value in {"accesslog": "-", **settings}.items():
        cfg.set(name, value)
    return Logger(cfg)


def answered(req, resp, sent):
    resp.start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "300")])
    resp.sent = sent
    return resp


def inline_case(sent):
    req = InlineParser(100, 8190, {}).parse(RAW)
    return answered(req, _InlineResponse(req), sent), req, req.environ(PEER)


def gunicorn_case(sent):
    cfg = Config()
    req = next(RequestParser(cfg, iter([RAW.replace(b"authorize", b'authorize?q="x"', 1)]), PEER))
    resp, environ = wsgi.create(req, None, PEER, ("127.0.0.1", 8000), cfg)
    return answered(req, resp, sent), req, environ


@pytest.mark.parametrize("case", [inline_case, gunicorn_case])
@pytest.mark.parametrize("sent", [300, 0, None])
def test_every_atom_is_gunicorns(case, sent):
    log = logger()
    resp, req, environ = case(sent)
    took = timedelta(seconds=1, microseconds=2500)
    theirs, ours = SafeAtoms(log.atoms(resp, req, environ, took)), _Atoms(log, resp, req, environ, took)
    for atom in ATOMS:
        assert ours[atom] == theirs[atom], atom
    assert ours["M"] == 1002 and ours["h"] == "10.1.2.3"
    assert ours["r"] in ("POST /v1/authorize HTTP/1.1", 'POST /v1/authorize?q=\\"x\\" HTTP/1.1')
    assert ours["{user-agent}i"] == 'svc \\"quoted\\"'


def test_the_line_is_gunicorns(caplog):
    resp, req, environ = inline_case(300)
    took = timedelta(microseconds=4200)
    for fmt in (ACCESS_LOG_FORMAT, '%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %({x-request-id}i)s'):
        log = logger(access_log_format=fmt)
        log.access_log.propagate = True
        with caplog.at_level(logging.INFO, logger="gunicorn.access"):
            caplog.clear()
            log.access(resp, req, environ, took)
            log_access(log, fmt, resp, req, environ, took)
        lines = {(record.pathname == "(unknown file)", record.getMessage()) for record in caplog.records}
        (ours,), (theirs,) = ({line for by_us, line in lines if by_us is side} for side in (True, False))
        assert ours == theirs
    assert ours.endswith(' "svc \\"quoted\\"" 4200 r1')


def test_nothing_is_logged_when_access_logging_is_off(caplog):
    resp, req, environ = inline_case(300)
    log = logger(accesslog=None)
    with caplog.at_level(logging.INFO):
        log_access(log, ACCESS_LOG_FORMAT, resp, req, environ, timedelta(0))
    assert not caplog.records
