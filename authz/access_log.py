"""gunicorn's access-log line, written for a third of its CPU: each atom is computed when the format
asks for it.

gunicorn's `Logger.access` builds its whole atom table for every request — every
request and response header and every environ entry, each escaped — then has
`logging` look up its caller's file and line, which only ever name glogging.py. That is
about 44 µs a line here; this is about 14 µs, for the same line. Warden's
format (app.ACCESS_LOG_FORMAT) reads h, r, s, b and M, which are computed
directly; any other atom comes from gunicorn's own table, built once for the line.
"""

import logging
from collections.abc import Iterator, Mapping
from datetime import timedelta

from gunicorn.glogging import SafeAtoms


def log_access(log, access_format: str, resp, req, environ: dict, request_time: timedelta) -> None:
    """What gunicorn's `log.access(resp, req, environ, request_time)` logs, in `access_format`."""
    if not log.access_log_enabled:
        return
    logger = log.access_log
    if logger.isEnabledFor(logging.INFO):
        # Logger._log without findCaller: the caller it would find is this module, which says nothing.
        logger.handle(logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, access_format,
                                        (_Atoms(log, resp, req, environ, request_time),), None))


class _Atoms(Mapping):
    """gunicorn's atoms as SafeAtoms gives them ('"' escaped in text, '-' for what is missing)."""

    __slots__ = ("_log", "_resp", "_req", "_environ", "_time", "_table")

    def __init__(self, log, resp, req, environ: dict, request_time: timedelta):
        self._log, self._resp, self._req, self._environ, self._time = log, resp, req, environ, request_time
        self._table = None

    def __getitem__(self, key: str):
        environ = self._environ
        if key == "h":
            value = environ.get("REMOTE_ADDR", "-")
        elif key == "r":
            value = f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
        elif key == "s":
            value = self._resp.status
            if isinstance(value, str):
                value = value.split(None, 1)[0]
        elif key == "b":
            sent = getattr(self._resp, "sent", None)
            value = sent is not None and str(sent) or "-"
        elif key == "M":
            return self._time.seconds * 1000 + int(self._time.microseconds / 1000)
        else:
            return self._all()[key]
        return value.replace('"', '\\"') if isinstance(value, str) else value

    def _all(self) -> SafeAtoms:
        if self._table is None:
            self._table = SafeAtoms(self._log.atoms(self._resp, self._req, self._environ, self._time))
        return self._table

    def __bool__(self) -> bool:
        return True  # what logging asks of a mapping argument; len() would build the whole table

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())
