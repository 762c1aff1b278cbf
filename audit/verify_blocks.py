"""Verifying the chain on Postgres a block of rows at a time, from the text of a COPY.

The row-by-row `Walk` in audit.walk is the reference for every rule. A block
is passed here only when each of its rows is plainly one the walk would pass; any
other block (an escape, a NULL where none belongs, a tampered row) goes to the
walk, which names its first failure as it always does. Checking whole columns with
C-level passes instead of one interpreted step per field is what lets a single
verifier keep up with what Postgres streams.
"""

import hashlib
import re
import select
from collections.abc import Iterator
from itertools import chain
from operator import add, contains
from typing import TYPE_CHECKING

import psycopg
from psycopg import pq

from audit.columns import CREATED_AT_TEXT_POSTGRES, FILLED_COLUMNS, REPEATED_COLUMNS

if TYPE_CHECKING:
    from audit.walk import Walk

# The columns a block holds, in the order of the COPY.
_COLUMNS = ("seq", "prev_hash", "hash", "kind", "body", *REPEATED_COLUMNS)
_KEYED = _COLUMNS[6:11]  # repeated text columns, checked as `"key":"value"` in the body
_NULL = "\\N"
_UNSAFE = re.compile(r'["\\\x00-\x1f]')  # what JSON would escape, or COPY would write as an escape
_PLAIN_ASCII = bytes(range(0x20, 0x80)).replace(b'"', b"").replace(b"\\", b"")
_ALLOWED = {"t": '"allowed":true,', "f": '"allowed":false,', _NULL: ""}
_MEMBER_GROUPS = (("action", "allowed"), ("decision_id", "domain"), ("object",), ("subject",))
_ESCAPES = {"\\": "\\", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE = re.compile(r"\\(.)")

BLOCK_ROWS = 200  # small enough that a block's bodies stay in the CPU's cache across the column passes


def copy_statement(after_seq: int, upto_seq: int | None = None) -> str:
    """The COPY that streams every column verification reads, for after_seq < seq (<= upto_seq)."""
    columns = ", ".join(CREATED_AT_TEXT_POSTGRES if c == "created_at" else c for c in _COLUMNS)
    upto = "" if upto_seq is None else f" AND seq <= {int(upto_seq)}"
    return f"COPY (SELECT {columns} FROM ledger_records WHERE seq > {int(after_seq)}{upto} ORDER BY seq) TO STDOUT"


def verifying_session(dbapi_connection) -> None:
    """Settle, for the rest of the connection's transaction, what a long verifying read needs:
    UTF-8 text, and no statement or idle timeout (one COPY spans the whole walk, and a parent
    waits idle for its helpers)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET LOCAL client_encoding = 'UTF8'; SET LOCAL statement_timeout = 0; "
                       "SET LOCAL idle_in_transaction_session_timeout = 0")


def copy_blocks(dbapi_connection, after_seq: int, upto_seq: int | None = None, *,
                block_rows: int = BLOCK_ROWS) -> Iterator[str]:
    """Yield the rows after `after_seq` (up to `upto_seq`) as blocks of COPY text (a line per row),
    inside the connection's transaction (see `verifying_session` for its settings).

    Drives libpq directly: psycopg's Copy costs a generator round per row, as much
    as the checks themselves. Waits for data with poll(), so other threads run
    meanwhile. Closing the generator early cancels the COPY.
    """
    pgconn = dbapi_connection.pgconn
    if pgconn.parameter_status(b"client_encoding") != b"UTF8":
        raise ValueError("block verification reads COPY text as UTF-8: run verifying_session first")
    pgconn.send_query(copy_statement(after_seq, upto_seq).encode())
    _wait_for_result(pgconn)
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        _drain_results(pgconn)
        raise _error(pgconn, result)
    copying = True
    try:
        get, pending = pgconn.get_copy_data, []
        while copying:
            size, data = get(1)
            if size > 0:
                pending.append(data)
                if len(pending) == block_rows:
                    yield _text(pending)
                    pending = []
            elif size == 0:
                _readable(pgconn)
            else:
                copying = False
        if pending:
            yield _text(pending)
    finally:
        if copying:  # closed early: stop the server, then read what it had already sent
            dbapi_connection.cancel_safe()
            while (size := pgconn.get_copy_data(1)[0]) >= 0:
                if size == 0:
                    _readable(pgconn)
        failure = _drain_results(pgconn)
    if failure is not None:
        raise _error(pgconn, failure)


def block_holds(text: str, walk: "Walk") -> bool:
    """Move `walk` past the rows of COPY `text` and return True when every one plainly holds; else
    return False with `walk` untouched (then hand the block to `walk.rows(parse_rows(text))`)."""
    if "\\" in text and text.count("\\") != text.count("\t" + _NULL):
        return False  # a value needs unescaping: only NULL markers are let through here
    # COPY escapes tabs and newlines inside values, so every row has exactly its fields. One split and a
    # slice per column keep the objects the garbage collector tracks to a few per block, not one per row.
    fields = text.replace("\n", "\t").split("\t")
    width = len(_COLUMNS)
    n = len(fields) // width
    if not n or len(fields) != n * width + 1:
        return not text
    seqs, prevs, hashes, kinds, bodies, created, *columns = (fields[i:-1:width] for i in range(width))
    first = walk.expected_seq
    last = first + n - 1
    if last > walk.report.head_seq or seqs != list(map(str, range(first, last + 1))):
        return False
    if prevs[0] != walk.prev_hash or prevs[1:] != hashes[:-1]:
        return False
    sha256, fromhex = hashlib.sha256, bytes.fromhex
    try:
        if [sha256(fromhex(p) + b.encode("utf-8")).hexdigest() for p, b in zip(prevs, bodies)] != hashes:
            return False
    except ValueError:
        return False
    plain = "\\" not in text  # no escapes and no NULLs: every column is checked for quotes at once
    if _unsafe("".join(chain(kinds, created, *(columns[:5] if plain else ())))) \
            or set(map(len, created)) != {27}:
        return False
    # With kind, seq and time free of quotes, this tail is exactly what the walk reads them from.
    tails = [',"kind":"' + k + '","seq":' + s + ',"time":"' + t + '"}' for k, s, t in zip(kinds, seqs, created)]
    if not all(map(str.endswith, bodies, tails)):
        return False
    if set(kinds) == {"decision"}:  # the common block: every column filled
        if any(_NULL in values for values in columns):
            return False
    elif any([v == _NULL for v in values] != [key not in FILLED_COLUMNS.get(k, ()) for k in kinds]
             for key, values in zip(_COLUMNS[6:], columns)):
        return False
    members = {}  # per column, each body's `"key":value,` ("" for NULL: nothing to hold)
    for key, values in zip(_KEYED, columns):
        if _NULL in values:
            if _unsafe("".join(v for v in values if v != _NULL)):
                return False
            members[key] = ["" if v == _NULL else f'"{key}":"{v}",' for v in values]
        else:
            if not plain and _unsafe("".join(values)):
                return False
            prefix = f'"{key}":"'
            members[key] = [prefix + v + '",' for v in values]
    members["allowed"] = list(map(_ALLOWED.get, columns[5]))
    if None in members["allowed"]:
        return False
    for group in _MEMBER_GROUPS:
        # Keys that sort next to each other in Warden's decisions are searched as one: where the pair
        # stands, each member stands followed by a comma.
        if len(group) > 1 and all(map(contains, bodies, map(add, *(members[key] for key in group)))):
            continue
        if not all(_members_hold(bodies, members[key]) for key in group):
            return False
    passed = _checkpoints_in(walk.checkpoints, first, last, hashes)
    if passed is None:
        return False
    walk.skip(n, hashes[-1], passed)
    return True


def parse_rows(text: str) -> list[tuple]:
    """The rows of COPY `text` as the walk takes them: seq an int, allowed a bool, NULL None."""
    return [_parse(line) for line in text.split("\n")[:-1]]


def _parse(line: str) -> tuple:
    fields = [None if f == _NULL else _ESCAPE.sub(_unescape, f) if "\\" in f else f for f in line.split("\t")]
    if len(fields) != len(_COLUMNS):
        raise ValueError(f"a COPY line has {len(fields)} fields, not {len(_COLUMNS)}")
    fields[0] = int(fields[0])
    fields[-1] = None if fields[-1] is None else fields[-1] == "t"
    return tuple(fields)


def _unescape(match: re.Match) -> str:
    # Postgres's COPY TO writes only these escapes (never octal or hex ones).
    return _ESCAPES[match.group(1)]


def _unsafe(text: str) -> bool:
    """True when `text` holds a quote, a backslash or a control character (ASCII text: a tenth of a regex)."""
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _PLAIN_ASCII))
    return _UNSAFE.search(text) is not None


def _members_hold(bodies: list[str], members: list[str]) -> bool:
    """True when each body holds its member (`"key":value,`), or else the same followed by `}`: the walk's rule."""
    if all(map(contains, bodies, members)):
        return True
    return all(members[i][:-1] + "}" in bodies[i] for i in range(len(bodies)) if members[i] not in bodies[i])


def _checkpoints_in(checkpoints: dict[int, str], first: int, last: int, hashes: list[str]) -> list[int] | None:
    """The checkpoint seqs in first..last, in order, or None when one names another hash."""
    seqs = [s for s in range(first, last + 1) if s in checkpoints] if checkpoints else []
    if any(checkpoints[s] != hashes[s - first] for s in seqs):
        return None
    return seqs


def _text(pending: list) -> str:
    return b"".join(pending).decode("utf-8")


def _readable(pgconn) -> None:
    poll = select.poll()  # not select(): a long-lived server may hold descriptors past 1024
    poll.register(pgconn.socket, select.POLLIN)
    poll.poll()
    pgconn.consume_input()


def _wait_for_result(pgconn) -> None:
    while pgconn.is_busy():
        _readable(pgconn)


def _drain_results(pgconn):
    """Read results until libpq has no more; return the first error result, if any."""
    failure = None
    while True:
        _wait_for_result(pgconn)
        result = pgconn.get_result()
        if result is None:
            return failure
        if failure is None and result.status == pq.ExecStatus.FATAL_ERROR:
            failure = result


def _error(pgconn, result) -> psycopg.Error:
    """The psycopg exception a cursor would have raised for `result` (QueryCanceled for a timeout...)."""
    if result is None:
        return psycopg.OperationalError(pgconn.error_message.decode("utf-8", "replace").strip())
    field = pq.DiagnosticField
    message = (result.error_field(field.MESSAGE_PRIMARY) or result.error_message).decode("utf-8", "replace")
    sqlstate = (result.error_field(field.SQLSTATE) or b"").decode("ascii", "replace")
    try:
        error_class = psycopg.errors.lookup(sqlstate)
    except KeyError:
        error_class = psycopg.DatabaseError
    return error_class(message.strip())
