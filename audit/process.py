"""This process's id, without a system call per look.

Objects that own a thread (the ledger writer, the answer-deadline watch, the
access-log flusher) check on every use whether they run in the process that
started it, since threads do not survive a fork. `os.getpid()` is a system call,
and those checks made several per decision; an at-fork hook keeps the id instead.
"""

import os

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """`os.getpid()`, as of the last fork through Python (os.fork, multiprocessing, gunicorn)."""
    return _pid
