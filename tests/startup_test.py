"""TensorFlow's start-up lines held back, every other line of its import passed on."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from libml import startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# As TF 2.21 wrote them on a CPU machine (times and thread ids vary).
REAL = [
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
    'I0000 00:00:1796306941.937959    3816 port.cc:153] oneDNN custom operations are on. You '
    'may see slightly different numerical results due to floating-point round-off errors',
    'I0000 00:00:1796306941.938306    3816 cudart_stub.cc:31] Could not find cuda drivers on '
    'your machine, GPU will not be used.',
    'E0000 00:00:1796306946.712496    3816 cuda_platform.cc:52] failed call to cuInit: '
    'INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)',
]


# The CPU-instructions notice, two lines (TF_CPP_MIN_LOG_LEVEL=0 on an AVX-512 machine).
CPU_NOTICE = [
    'I0000 00:00:1796306941.9 cpu_feature_guard.cc:210] This TensorFlow binary is optimized '
    'to use available CPU instructions in performance-critical operations.',
    'To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild '
    'TensorFlow with the appropriate compiler flags.',
]


def test_the_known_start_up_lines_and_no_others_are_chatter():
    assert all(startup.chatter(line) for line in REAL + CPU_NOTICE)
    assert not startup.chatter('E0000 gpu_device.cc:2342] Cannot dlopen some GPU libraries.')
    assert not startup.chatter('DeprecationWarning: a module of yours')


def _with_fake_tensorflow(tmp_path, body):
    """Runs import_tensorflow in a fresh process whose `tensorflow` is a module writing
    to file descriptor 2 as TF's C++ code does, then running `body`."""
    fake = tmp_path / 'tensorflow'
    fake.mkdir()
    lines = ''.join(f'os.write(2, {line!r}.encode() + b"\\n")\n' for line in REAL[:2])
    (fake / '__init__.py').write_text(
        f'import os, sys, types\nDEVICE_LINE = {REAL[3]!r}\n'
        + lines
        + 'os.write(2, b"a real problem\\n")\n'
        + 'print("python warning", file=sys.stderr)\n'
        + textwrap.dedent(body)
    )
    code = (
        'from libml import startup\n'
        'tf = startup.import_tensorflow()\n'
        'print("imported", tf.config.list_physical_devices())\n'
    )
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), ROOT])}
    return subprocess.run(
        [sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60
    )


def test_other_lines_written_during_the_import_are_passed_on(tmp_path):
    proc = _with_fake_tensorflow(
        tmp_path,
        """
        def _devices(written=[]):  # Like TF: the device set-up writes once.
            if not written:
                os.write(2, DEVICE_LINE.encode() + b"\\n")
                written.append(1)
            return ['CPU']
        config = types.SimpleNamespace(list_physical_devices=_devices)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "imported ['CPU']\n"
    assert proc.stderr.splitlines() == ['a real problem', 'python warning']


def test_an_import_that_fails_still_shows_what_it_wrote(tmp_path):
    proc = _with_fake_tensorflow(tmp_path, 'raise ImportError("libcudart.so.12: no such file")\n')
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[:2] == ['a real problem', 'python warning']
    assert lines[-1] == 'ImportError: libcudart.so.12: no such file'
    assert not any(startup.chatter(line) for line in lines)


def test_without_a_stderr_it_imports_all_the_same(tmp_path):
    """No sys.stderr (pythonw, a daemon) or no file descriptor 2: a plain import."""
    fake = tmp_path / 'tensorflow'
    fake.mkdir()
    (fake / '__init__.py').write_text('VERSION = "fake"\n')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), ROOT])}
    for prelude in ('import sys; sys.stderr = None', 'import os; os.close(2)'):
        code = f'{prelude}\nfrom libml import startup\nprint(startup.import_tensorflow().VERSION)\n'
        proc = subprocess.run(
            [sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60
        )
        assert (proc.returncode, proc.stdout) == (0, 'fake\n'), (prelude, proc.stderr)


def test_a_fatal_line_before_an_abort_is_still_shown(tmp_path):
    """TF aborts in its import (e.g. a CPU without the instructions it was built for):
    the program dies there, and its last words must reach the user."""
    fatal = (
        'F0000 00:00:1796306941.9 cpu_feature_guard.cc:1] The TensorFlow library was '
        'compiled to use AVX instructions, but these are not available on your machine.'
    )
    proc = _with_fake_tensorflow(
        tmp_path, f'os.write(2, {fatal!r}.encode() + b"\\n")\nos.abort()\n'
    )
    assert proc.returncode == -6  # SIGABRT
    assert proc.stderr.splitlines() == ['a real problem', 'python warning', fatal]


def test_ctrl_c_in_the_import_is_the_programs_alone(tmp_path):
    """Ctrl-C reaches the whole process group, the filter too: it must go on passing
    lines, and only the program reports the interrupt."""
    ready = tmp_path / 'ready'
    body = f'open({str(ready)!r}, "w").close()\nimport time\ntime.sleep(30)\n'
    fake = tmp_path / 'tensorflow'
    fake.mkdir()
    (fake / '__init__.py').write_text('import os\n' + body)
    code = 'from libml import startup\nstartup.import_tensorflow()\n'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), ROOT])}
    proc = subprocess.Popen(
        [sys.executable, '-c', code],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Its own process group, as a terminal's job.
    )
    deadline = time.time() + 30
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGINT  # How Python ends on an uncaught Ctrl-C.
    assert stderr.count('KeyboardInterrupt') == 1, stderr


def test_ctrl_c_while_the_filter_starts_is_the_programs_alone(tmp_path):
    """Ctrl-C a few milliseconds into the import, while the filter's interpreter may
    still be starting: the filter must neither die of it nor report it, and must pass on
    what the program writes after."""
    fake = tmp_path / 'tensorflow'
    fake.mkdir()
    code = 'from libml import startup\nstartup.import_tensorflow()\n'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), ROOT])}
    for millis in range(0, 100, 4):  # Sweeps the filter's start-up, however long.
        (fake / '__init__.py').write_text(
            'import os, signal, time\n'
            f'time.sleep({millis / 1000})\n'
            'try:\n'
            '    os.killpg(0, signal.SIGINT)\n'
            '    time.sleep(30)\n'
            'except KeyboardInterrupt:\n'
            '    os.write(2, b"written after the interrupt\\n")\n'
            '    raise\n'
        )
        proc = subprocess.run(
            [sys.executable, '-c', code],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,  # Its own process group, as a terminal's job.
        )
        lines = proc.stderr.splitlines()
        assert proc.returncode == -signal.SIGINT, (millis, proc.stderr)
        assert lines[0] == 'written after the interrupt', (millis, proc.stderr)
        assert proc.stderr.count('KeyboardInterrupt') == 1, (millis, proc.stderr)
