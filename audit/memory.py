"""The signal of a caller that may not wait on the database (the worker's poller thread)."""


class NotInMemory(Exception):
    """Answering needs a database read or write; the caller asked for what memory holds only. Raised
    before anything is recorded or queued, so the caller can try again where waiting is fine."""
