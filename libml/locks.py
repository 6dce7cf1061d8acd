"""Exclusive locks on files, held by one process at a time (flock: the operating system
drops them when the process ends, however it ends)."""

import contextlib
import fcntl
import os

RUN = '.lock'  # In a run folder: held by the run training in it.


class Busy(ValueError):
    """Another process holds the lock."""


@contextlib.contextmanager
def hold(path: str, busy: str):
    """Holds the lock file PATH for the block; Busy(busy) at once if another process
    holds it."""
    with open(path, 'w') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(busy) from None
        yield


def held(path: str) -> bool:
    """Whether another process holds the lock file PATH now."""
    if not os.path.exists(path):
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False
