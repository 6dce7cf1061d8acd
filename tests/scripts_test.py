"""The command-line scripts, run as a user runs them: bad flags, and a fold on disk."""

import json
import os
import signal
import subprocess
import sys

import pytest

from libml import records
from tests import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    'script,argv,message',
    [
        # The driver's checks are tabled in inputs_test.py; here the real command line.
        ('crest.py', ['--lr=nan'], 'error: --lr must be a finite number, got nan'),
        ('crest.py', ['--label_fraction=1'], 'error: --label_fraction must be in (0, 1)'),
        ('create_datasets.py', ['--label_fraction=1'], 'error: --label_fraction must be in (0, 1)'),
        ('create_datasets.py', ['--imbalance=6000'], 'error: --imbalance must be in [1, 5000]'),
        ('create_datasets.py', ['--class_order=1,0'], 'error: --class_order must be a permutation'),
        (
            'create_datasets.py',
            ['--dataset=cifar10_darp', '--unlabeled_distribution=uniform'],
            "error: --unlabeled_distribution must be 'same' for cifar10_darp",
        ),
    ],
)
def test_bad_flag_is_one_line_error(script, argv, message, tmp_path):
    where = '--workdir' if script == 'crest.py' else '--output_dir'
    result = _run(script, *argv, f'{where}={tmp_path / "run"}')
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
    assert not (tmp_path / 'run').exists()


def test_an_error_is_the_only_line_on_stderr(tmp_path):
    """TensorFlow's start-up lines (absl's notice, oneDNN, no CUDA driver: written before
    TF_CPP_MIN_LOG_LEVEL holds) are held back: the error is all a user reads."""
    result = _run('crest.py', '--cpu_threads=-1', f'--workdir={tmp_path / "run"}')
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'error: --cpu_threads must be in [0, 1024] (0: all cores), got -1'
    ], result.stderr


def test_create_datasets_writes_a_fold(tmp_path, monkeypatch):
    # Fashion-MNIST's real loader on IDX files with 5000 images in the head class.
    src = tmp_path / 'src'
    fakes.write_fashion_mnist(str(src), 5000, 2)
    out = tmp_path / 'fold'
    result = _run(
        'create_datasets.py',
        '--dataset=fashion_mnist_lt',
        '--imbalance=100',
        '--label_fraction=0.1',
        '--fold=2',
        f'--data_dir={src}',
        f'--output_dir={out}',
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'labeled      1244' in result.stdout
    counts = records.read_json(str(out / 'counts.json'))
    assert counts['labeled'] == [500, 300, 180, 108, 65, 39, 24, 14, 9, 5]
    assert sum(counts['unlabeled']) == 12406 - 1244
    assert counts['fold'] == 2


def test_missing_data_is_one_line_error(tmp_path):
    result = _run(
        'create_datasets.py',
        '--dataset=cifar10lt',
        f'--data_dir={tmp_path}',
        f'--output_dir={tmp_path / "out"}',
    )
    assert result.returncode != 0
    assert 'data_batch_1.bin' in result.stderr.strip().splitlines()[-1]


def test_create_datasets_refuses_an_output_under_a_file(tmp_path):
    (tmp_path / 'file').write_text('')
    result = _run(
        'create_datasets.py', '--dataset=fashion_mnist_lt', f'--output_dir={tmp_path}/file/fold'
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == f'error: {tmp_path}/file is not a directory', result.stderr[-2000:]


def test_step_benchmark_records_every_configuration(tmp_path):
    """A tiny run of every part of the step benchmark (figures are not checked here), one
    algorithm in both precisions: each configuration is a process of its own."""
    output = tmp_path / 'bench.json'
    result = _run(
        'benchmark_step.py',
        '--algorithms=mixmatch',
        '--shapes=cnn_small:28x28x1:4:1',
        '--precisions=float32,bf16',
        '--steps=1',
        '--end_to_end=supervised:cnn_small:28x28x1:4:1',
        '--end_to_end_steps=2',
        '--pipeline_batches=1',
        f'--output={output}',
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(output) as f:
        bench = json.load(f)
    assert set(bench['matmul_gflop_per_second']) == {'float32', 'bf16'}
    steps = {(r['algorithm'], r['precision']): r for r in bench['steps']}
    assert set(steps) == {('mixmatch', p) for p in ('float32', 'bf16')}
    for r in steps.values():
        assert r['seconds_per_step'] > 0 and r['peak_rss_mb'] > 0 and r['utilization'] > 0
        assert r['top_ops'] and all(op['seconds'] > 0 for op in r['top_ops'])
    assert steps['mixmatch', 'float32']['batch'] == '4+2x4'  # K = 2 weak views.
    assert [r['precision'] for r in bench['end_to_end']] == ['float32', 'bf16']
    assert all(r['steps_per_second'] > 0 for r in bench['end_to_end'])
    assert [r['algorithm'] for r in bench['pipeline']] == ['mixmatch']


def test_ctrl_c_stops_a_run_in_one_line_with_exit_130(tmp_path):
    """SIGINT once training has started: one line saying how to resume, exit status 130
    (128 + SIGINT, the shell's convention), no traceback."""
    command = [
        sys.executable,
        os.path.join(ROOT, 'scripts', 'crest.py'),
        '--dataset=synthetic_lt',
        '--imbalance=10',
        '--arch=cnn_small',
        '--generations=1',
        '--steps_per_generation=100000',
        '--eval_every=2',
        '--batch_size=4',
        '--uratio=1',
        '--cpu_threads=1',
        f'--workdir={tmp_path / "run"}',
    ]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in run.stdout:
            if ' step ' in line:  # An evaluation's line: training has started.
                break
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == 'stopped; resume with the same command'
    assert 'Traceback' not in stderr and 'KeyboardInterrupt' not in stderr, stderr[-2000:]


def test_cpu_threads_below_zero_is_refused(tmp_path):
    result = _run('crest.py', '--cpu_threads=-1', f'--workdir={tmp_path / "run"}')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'error: --cpu_threads must be in [0, 1024] (0: all cores), got -1'
    ), result.stderr[-2000:]
    assert not (tmp_path / 'run').exists()


def test_help_states_the_bounds_of_the_sizes():
    text = ' '.join(_run('crest.py', '--helpfull').stdout.split())
    assert 'Allowed: an integer in [1, 64]. Only with --algorithm=mixmatch.' in text
    for flag, bound in [('uratio', 'in [1, 64]'), ('image_size', 'in [0, 1024]')]:
        assert f'Allowed: {bound}.' in text.split(f'--{flag}:', 1)[1].split('(default:', 1)[0]
