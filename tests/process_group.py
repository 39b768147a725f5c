"""A command started in its own process group (`start_new_session=True`), and whether all of it has ended."""

import os
import signal
import subprocess
import time
from contextlib import contextmanager


def ended_within(group: int, seconds: float) -> bool:
    """Whether every process of the group has ended within `seconds` (reap its leader first: a zombie counts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@contextmanager
def own_group(args: list[str], **options):
    """Popen in a new session; whatever of its group is left at the end is killed."""
    command = subprocess.Popen(args, start_new_session=True, **options)
    try:
        yield command
    finally:
        try:
            os.killpg(command.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        command.wait()
