"""Ends the pytest process as soon as the session is over.

Once every test has run and the summary is printed, the interpreter's finalization can
wait forever on one of TensorFlow's thread pools (seen on this project's CI: "N passed"
printed, then the process blocked on a futex with a hundred idle tf_Compute threads, in
about one full run out of three). Nothing is left to do at that point, so the process
exits there with pytest's own exit status, its output flushed.
"""

import os
import sys

import pytest

_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    status = config.stash.get(_STATUS, None)
    if status is None:  # No session ran (--help, a usage error): the normal exit.
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
