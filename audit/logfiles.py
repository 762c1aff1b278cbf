"""Temporary logs: application and access logs in daily files, purged after the retention period.

Logs may hold personal data (addresses, identifiers in errors), so they live in
`WARDEN_LOG_DIR` as one file per day, `warden-YYYY-MM-DD.log`, written in append
mode by every worker (no renaming, so no races between processes), and files
older than `WARDEN_RETENTION_DAYS` are deleted by the purge job. This is apart
from the ledger, whose purge leaves a signed seal.
"""

import logging
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

_NAME = re.compile(r"^warden-(\d{4}-\d{2}-\d{2})\.log$")


class DailyFileHandler(logging.Handler):
    """Appends records to LOG_DIR/warden-<UTC date>.log, switching files at midnight UTC."""

    def __init__(self, log_dir: str | Path):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._day: date | None = None
        self._stream = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            day = datetime.fromtimestamp(record.created, timezone.utc).date()
            if day != self._day:
                if self._stream:
                    self._stream.close()
                self._stream = open(self.log_dir / f"warden-{day.isoformat()}.log", "a", encoding="utf-8")
                self._day = day
            self._stream.write(self.format(record) + "\n")
            self._stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._stream:
            self._stream.close()
            self._stream = None
        super().close()


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
