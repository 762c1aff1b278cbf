"""The hash chain itself: canonical bytes of a record and the hash that links it."""

import hashlib
import json
from datetime import datetime, timezone

GENESIS_HASH = "0" * 64
# json.dumps with these options builds this encoder on every call; it holds no state between calls.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value) -> str:
    """Return `value` as canonical JSON: sorted keys, no spaces, UTF-8 text as is."""
    return _CANONICAL.encode(value)


def record_body(seq: int, kind: str, time: datetime, data: dict, data_json: str | None = None) -> str:
    """Return the canonical body of record `seq`; these exact bytes are hashed and stored.

    Equal to canonical_json({"seq", "kind", "time", "data"}); pass `data_json`
    (canonical_json(data)) when it was computed before the chain head was locked.
    """
    if data_json is None:
        data_json = canonical_json(data)
    # Sorted keys: data, kind, seq, time.
    return (f'{{"data":{data_json},"kind":{canonical_json(kind)},"seq":{int(seq)},'
            f'"time":{canonical_json(format_time(time))}}}')


def chain_hash(prev_hash: str, body: str) -> str:
    """Return SHA-256(prev_hash || body) as hex, prev_hash taken as its 32 raw bytes."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode("utf-8")).hexdigest()


def format_time(time: datetime) -> str:
    """Return `time` as ISO 8601 in UTC with microseconds and a `Z` (naive times are taken as UTC)."""
    if time.tzinfo is None:
        time = time.replace(tzinfo=timezone.utc)
    return time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)
