"""Nonces and ids drawn in blocks: each byte handed out once, never shared with a forked child."""

import os
import threading

import uuid

from audit.randomness import random_bytes, uuid4_hex, uuid7_text


def test_ids_are_version_4_uuids_and_never_repeat():
    texts = [uuid4_hex() for _ in range(5000)]  # crosses several blocks
    ids = [uuid.UUID(text) for text in texts]
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    assert all(i.hex == text for i, text in zip(ids, texts))
    assert len(set(ids)) == len(ids)


def test_threads_never_get_the_same_bytes():
    taken: list[bytes] = []

    def take():
        mine = [random_bytes(12) for _ in range(2000)]
        taken.extend(mine)  # list.extend is atomic under the GIL

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 16_000 and len(set(taken)) == len(taken)


def test_a_forked_child_does_not_reuse_its_parents_block():
    random_bytes(12)  # the parent holds a partly used block now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next nonce and leave at once
        os.write(write, random_bytes(12))
        os._exit(0)
    os.close(write)
    child = os.read(read, 12)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 12 and child != random_bytes(12)


def test_large_requests_go_straight_to_the_os():
    assert len(random_bytes(5000)) == 5000


def test_a_child_forked_while_another_thread_draws_does_not_hang():
    import time
    stop = threading.Event()

    def draw():
        while not stop.is_set():
            random_bytes(1000)  # a new block every few calls: the lock is often held across os.urandom
    drawer = threading.Thread(target=draw)
    drawer.start()
    try:
        for _ in range(50):
            pid = os.fork()
            if pid == 0:
                random_bytes(12)
                os._exit(0)
            deadline = time.monotonic() + 5
            while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            if done[0] == 0:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise AssertionError("a forked child hung on the pool's lock")
    finally:
        stop.set()
        drawer.join()


def test_decision_ids_are_version_7_uuids_in_time_order():
    """Time-ordered ids: the unique decision_id index takes each new one at its end (RFC 9562 layout)."""
    import time

    before = time.time_ns() // 1_000_000
    texts = [uuid7_text() for _ in range(5000)]
    time.sleep(0.002)
    later_text = uuid7_text()
    after = time.time_ns() // 1_000_000
    first, later = [uuid.UUID(text) for text in texts], uuid.UUID(later_text)
    assert [str(i) for i in first] == texts and str(later) == later_text  # the usual text form
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in first + [later])
    assert all(before <= i.int >> 80 <= after for i in first + [later])  # the 48-bit millisecond stamp
    assert len(set(first)) == len(first) and max(first) < later and max(texts) < later_text
    # Every one of the 74 random bits varies: none is stuck at 0 or 1.
    random_bits = (1 << 74) - 1
    spread = [(i.int >> 64 & 0xFFF) << 62 | i.int & (1 << 62) - 1 for i in first]
    ored, anded = 0, random_bits
    for bits in spread:
        ored, anded = ored | bits, anded & bits
    assert ored == random_bits and anded == 0
