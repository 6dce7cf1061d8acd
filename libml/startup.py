"""TensorFlow imported without its start-up chatter, for the command-line programs.

TF 2.21 logs through absl's C++ logging, which writes everything to stderr until the
program calls absl::InitializeLog(), so TF_CPP_MIN_LOG_LEVEL does not hold back the
lines of its import and device set-up: on a CPU machine an "E0000 ... failed call to
cuInit" reads like a failure where nothing failed. `import_tensorflow` points file
descriptor 2 (the C++ code writes there, not to sys.stderr) at a small filter process
while TF loads and looks for its devices; the filter passes every other line on at once,
so that a fatal message of an import that aborts the program is still read.
"""

import os
import subprocess
import sys

# Lines TF writes at start-up, none of them a problem: absl's notice that it logs before
# being set up, oneDNN being on, no CUDA driver or device on this machine, and CPU
# instructions the binary was not built for (a notice of two lines).
START_UP_LINES = (
    'All log messages before absl::InitializeLog() is called are written to STDERR',
    'oneDNN custom operations are on',
    'Could not find cuda drivers on your machine',
    'failed call to cuInit',
    'This TensorFlow binary is optimized to use available CPU instructions',
    'To enable the following instructions:',
)

# The filter: each line of its stdin, unless it holds one of its arguments, to its
# stdout at once; it ends when the last writer closes the pipe (or dies).
_FILTER = """
import sys
known = [a.encode() for a in sys.argv[1:]]
for line in sys.stdin.buffer:
    if not any(k in line for k in known):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


def chatter(line: str) -> bool:
    """Whether `line` is one of TF's known start-up lines."""
    return any(known in line for known in START_UP_LINES)


def _plain_import():
    import tensorflow as tf

    return tf


def import_tensorflow():
    """Imports TensorFlow and lists its devices with file descriptor 2 going through the
    filter of its known start-up lines; returns the module. Without a stderr, or where
    the filter cannot start, a plain import."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF's own INFO and WARNING lines.
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # No stderr (None, closed).
        return _plain_import()
    try:
        # Its own session: Ctrl-C, sent to the program's process group, is the program's
        # to report, and must not reach the filter, even while its interpreter starts.
        sieve = subprocess.Popen(
            [sys.executable, '-c', _FILTER, *START_UP_LINES],
            stdin=subprocess.PIPE,
            stdout=saved,
            start_new_session=True,
        )
    except (OSError, TypeError, ValueError):  # No interpreter to start (sys.executable).
        os.close(saved)
        return _plain_import()
    os.dup2(sieve.stdin.fileno(), 2)
    try:
        tf = _plain_import()
        tf.config.list_physical_devices()  # The device set-up's lines, here.
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sieve.stdin.close()
        sieve.wait()  # All passed on before the program writes more.
    return tf
