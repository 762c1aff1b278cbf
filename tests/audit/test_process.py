import os

from audit.process import current_pid


def test_the_pid_is_this_process_s_and_a_forked_child_s_is_its_own():
    assert current_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report what it sees, then leave without running pytest's teardown
        os.write(write, f"{current_pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    seen, real = map(int, os.read(read, 100).split())
    os.close(read)
    os.waitpid(child, 0)
    assert seen == real == child != current_pid()
