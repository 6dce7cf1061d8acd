"""Exclusive locks on files, held by one process at a time (flock: the operating system
drops them when the process ends, however it ends)."""

import contextlib
import errno
import fcntl
import os
import time

RUN = '.lock'  # In a run folder: held by the run training in it.
# hold() tries this long before it calls the lock busy: `held` probes take it briefly.
PATIENCE_SECONDS = 1.0
# The file system cannot lock (some network file systems): run unlocked.
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class Busy(ValueError):
    """Another process holds the lock."""


@contextlib.contextmanager
def hold(path: str, busy: str):
    """Holds the lock file PATH for the block; Busy(busy) if another process holds it
    for PATIENCE_SECONDS. Where the file system cannot lock, the block runs unlocked."""
    with open(path, 'w') as handle:
        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Busy(busy) from None
                time.sleep(0.1)
            except OSError as e:
                if e.errno not in _UNSUPPORTED:
                    raise
                break
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
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
    return False
