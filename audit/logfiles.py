"""Temporary logs: application and access logs in daily files, purged after the retention period.

Logs may hold personal data (addresses, identifiers in errors), so they live in
`WARDEN_LOG_DIR` as one file per day, `warden-YYYY-MM-DD.log`, written in append
mode by every worker (no renaming, so no races between processes), and files
older than `WARDEN_RETENTION_DAYS` are deleted by the purge job. This is apart
from the ledger, whose purge leaves a signed seal.
"""

import logging
import os
import re
import threading
import time
import weakref
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from audit.process import current_pid

_NAME = re.compile(r"^warden-(\d{4}-\d{2}-\d{2})\.log$")


class DailyFileHandler(logging.Handler):
    """Appends records to LOG_DIR/warden-<UTC date>.log, switching files at midnight UTC.

    With `flush_seconds` (the access log), lines below WARNING are held in memory
    and written together at most that many seconds later, or at 64 KiB, as nginx's
    `access_log ... buffer= flush=` does: a write per request hands the worker's
    GIL to another thread each time. A crash loses at most that much of the access
    log; decisions are in the ledger. Each write holds whole lines only, so the
    workers' lines never interleave mid-line.
    """

    def __init__(self, log_dir: str | Path, flush_seconds: float = 0):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.flush_seconds = flush_seconds
        self._day: date | None = None
        self._fd: int | None = None
        self._held: list[str] = []
        self._held_size = 0
        self._flusher_pid: int | None = None
        self._closed = False
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (handler := me()) and handler._forget_held())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            day = datetime.fromtimestamp(record.created, timezone.utc).date()
            if day != self._day:
                self._write_held()  # yesterday's lines into yesterday's file
                if self._fd is not None:
                    # Forgotten before the next open: if that fails, a later line must not close
                    # this number again, by then perhaps another file's or a socket's.
                    fd, self._fd, self._day = self._fd, None, None
                    os.close(fd)
                self._fd = os.open(self.log_dir / f"warden-{day.isoformat()}.log",
                                   os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._day = day
            self._held.append(line)
            self._held_size += len(line)
            if not self.flush_seconds or record.levelno >= logging.WARNING or self._held_size >= _HOLD_BYTES:
                self._write_held()
            else:
                self._ensure_flusher()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:
            self._write_held()

    def close(self) -> None:
        with self.lock:
            self._closed = True
            self._write_held()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        super().close()

    def _write_held(self) -> None:
        if self._held and self._fd is not None:
            data = "".join(self._held).encode("utf-8")
            self._held.clear()
            self._held_size = 0
            while data:  # one O_APPEND write of whole lines, unless the kernel takes it in parts
                data = data[os.write(self._fd, data):]

    def _ensure_flusher(self) -> None:
        if self._flusher_pid != current_pid():  # first held line in this process (threads do not survive fork)
            self._flusher_pid = current_pid()
            threading.Thread(target=self._flush_every, name="warden-log-flush", daemon=True).start()

    def _flush_every(self) -> None:
        while not self._closed:
            time.sleep(self.flush_seconds)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - logging must never take the worker down
                pass

    def _forget_held(self) -> None:
        # A forked child must not write its parent's held lines a second time.
        self._held, self._held_size = [], 0


_HOLD_BYTES = 64 * 1024


def purge_logs(log_dir: str | Path, older_than_days: int, today: date | None = None) -> list[str]:
    """Delete daily log files older than `older_than_days`; return their names."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return []
    cutoff = (today or datetime.now(timezone.utc).date()) - timedelta(days=older_than_days)
    removed = []
    for path in sorted(log_dir.iterdir()):
        match = _NAME.match(path.name)
        if match and date.fromisoformat(match.group(1)) < cutoff:
            path.unlink()
            removed.append(path.name)
    return removed
