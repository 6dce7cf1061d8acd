"""TensorFlow imported without its start-up chatter, for the command-line programs.

TF 2.21 logs through absl's C++ logging, which writes everything to stderr until the
program calls absl::InitializeLog(), so TF_CPP_MIN_LOG_LEVEL does not hold back the
lines of its import and device set-up: on a CPU machine an "E0000 ... failed call to
cuInit" reads like a failure where nothing failed. `import_tensorflow` catches stderr at
the file-descriptor level (the C++ code writes there, not to sys.stderr) while TF loads
and looks for its devices, and passes on every line but the known start-up ones.
"""

import os
import sys
import tempfile

# Lines TF writes at start-up, none of them a problem: absl's notice that it logs before
# being set up, oneDNN being on, no CUDA driver or device on this machine, and CPU
# instructions the binary was not built for.
START_UP_LINES = (
    'All log messages before absl::InitializeLog() is called are written to STDERR',
    'oneDNN custom operations are on',
    'Could not find cuda drivers on your machine',
    'failed call to cuInit',
    'This TensorFlow binary is optimized to use available CPU instructions',
)


def chatter(line: str) -> bool:
    """Whether `line` is one of TF's known start-up lines."""
    return any(known in line for known in START_UP_LINES)


def import_tensorflow():
    """Imports TensorFlow and lists its devices with stderr caught, then writes back
    what was caught but the known start-up lines; returns the module."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF's own INFO and WARNING lines.
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # No stderr (None, closed): nothing to catch.
        import tensorflow as tf

        return tf
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # The device set-up's lines, here.
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode(errors='replace')
            sys.stderr.write(''.join(line for line in text.splitlines(True) if not chatter(line)))
            sys.stderr.flush()
    return tf
