"""Ledger upkeep while serving: checkpoints every N records or M seconds, and the retention purge."""

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from audit.checkpoints import Checkpoints, export_checkpoint

log = logging.getLogger(__name__)


def every(seconds: float, action: Callable[[], object], name: str,
          cleanup: Callable[[], object] | None = None) -> threading.Event:
    """Run `action` every `seconds` on a daemon thread until the returned event is set (then `cleanup`);
    a failure is logged and the next round runs as usual."""
    stop = threading.Event()

    def loop():
        while not stop.wait(seconds):
            try:
                action()
            except Exception:
                log.exception("%s failed", name)
        if cleanup:
            cleanup()
    threading.Thread(target=loop, name=name, daemon=True).start()
    return stop


class LedgerJobs:
    """Runs `tick` every `interval` seconds on a daemon thread; each job's failure is logged, not fatal."""

    def __init__(self, checkpoints: Checkpoints, purge: Callable[[], object], *, every_records: int,
                 every_seconds: float, purge_hours: float, export_dir: str | None, interval: float = 5.0):
        self.checkpoints = checkpoints
        self.purge = purge
        self.every_records = every_records
        self.every_seconds = every_seconds
        self.purge_seconds = purge_hours * 3600
        self.export_dir = Path(export_dir) if export_dir else None
        self.interval = interval
        self._last_checkpoint_at = time.monotonic()
        self._last_purge_at = None
        self._stop: threading.Event | None = None

    def start(self) -> None:
        self._stop = every(self.interval, self.tick, "warden-ledger-jobs")

    def stop(self) -> None:
        if self._stop:
            self._stop.set()

    def tick(self, now: float | None = None) -> None:
        """Checkpoint if due, purge if due."""
        now = time.monotonic() if now is None else now
        try:
            self._maybe_checkpoint(now)
        except Exception:
            log.exception("scheduled checkpoint failed")
        if self.purge_seconds and (self._last_purge_at is None or now - self._last_purge_at >= self.purge_seconds):
            self._last_purge_at = now
            try:
                self.purge()
            except Exception:
                log.exception("scheduled retention purge failed")

    def _maybe_checkpoint(self, now: float) -> None:
        head_seq = self.checkpoints.ledger.head()[0]
        latest = self.checkpoints.latest()
        behind = head_seq - (latest.seq if latest else 0)
        if behind <= 0:
            return
        if behind >= self.every_records or now - self._last_checkpoint_at >= self.every_seconds:
            checkpoint = self.checkpoints.create()
            self._last_checkpoint_at = now
            if checkpoint and self.export_dir:
                self.export_dir.mkdir(parents=True, exist_ok=True)
                export_checkpoint(checkpoint, self.export_dir)
