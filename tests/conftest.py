"""Shared fixtures (finished tiny runs), and ends the pytest process as soon as the
session is over.

Once every test has run and the summary is printed, the interpreter's finalization can
wait forever on one of TensorFlow's thread pools (seen on this project's CI: "N passed"
printed, then the process blocked on a futex with a hundred idle tf_Compute threads, in
about one full run out of three). So the process runs its exit handlers (pytest's
clean-up of old temporary folders among them) for at most EXIT_HANDLER_SECONDS, then
exits with pytest's own exit status, its output flushed, without finalizing.
"""

import atexit
import os
import sys
import threading

import pytest

from tests import fakes

EXIT_HANDLER_SECONDS = 60
_SESSION = pytest.StashKey[pytest.Session]()


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    """tiny_run(precision='float32') -> the folder of a finished `fakes.tiny_run`, made
    on first use and shared by the session's tests: they must not change it (copy it)."""
    runs = {}

    def get(precision='float32'):
        if precision not in runs:
            folder = tmp_path_factory.mktemp(f'tiny_run_{precision}') / 'run'
            runs[precision] = fakes.tiny_run(folder, precision=precision).workdir
        return runs[precision]

    return get


def pytest_sessionstart(session):
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    session = config.stash.get(_SESSION, None)
    if session is None or session.exitstatus is None:  # No session ran: the normal exit.
        return
    if hasattr(config, 'workerinput'):  # A pytest-xdist worker: the controller ends it.
        return
    handlers = threading.Thread(target=atexit._run_exitfuncs, daemon=True)
    handlers.start()
    handlers.join(EXIT_HANDLER_SECONDS)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))
