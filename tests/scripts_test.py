"""The command-line scripts, run as a user runs them: bad flags, and a fold on disk."""

import os
import subprocess
import sys

import pytest

from libml import data
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
    'flag,allowed',
    [
        ('--imbalance=0.5', '>= 1'),
        ('--label_fraction=1.5', 'in (0, 1]'),
        ('--label_fraction=0', 'in (0, 1]'),
        ('--alpha=-1', '>= 0'),
        ('--t_min=1.5', 'in [0, 1]'),
        ('--fold=0', '>= 1'),
        ('--generations=0', '>= 1'),
        ('--batch_size=0', '>= 1'),
        ('--uratio=0', '>= 1'),
        ('--dataset=mnist', 'one of'),
        ('--arch=resnet', 'one of'),
    ],
)
def test_bad_flag_is_one_line_error(flag, allowed, tmp_path):
    result = _run('crest.py', flag, f'--workdir={tmp_path / "run"}')
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    name = flag.split('=')[0]
    assert last.startswith(f'error: {name} must be {allowed}'), result.stderr[-2000:]
    assert not (tmp_path / 'run').exists()  # Nothing was done.


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
    counts = data.read_json(str(out / 'counts.json'))
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


@pytest.mark.parametrize(
    'flags,message',
    [
        (['--algorithm=mixmatch', '--mixmatch.T=0'], 'error: --mixmatch.T must be > 0, got 0.0'),
        (['--fixmatch.wu=-1'], 'error: --fixmatch.wu must be >= 0, got -1.0'),
        (
            ['--algorithm=mixmatch', '--fixmatch.threshold=0.9'],
            'error: --fixmatch.threshold applies to --algorithm=fixmatch only',
        ),
        # A preset's algorithm decides which algorithm's flags apply...
        (['--method=mixmatch', '--mixmatch.T=0'], 'error: --mixmatch.T must be > 0, got 0.0'),
        # ...and a flag given explicitly wins over the preset's value (t_min=0.5 here).
        (['--method=fixmatch_da05', '--t_min=2'], 'error: --t_min must be in [0, 1], got 2.0'),
        (['--total_steps=100'], 'error: --total_steps applies with --method only'),
    ],
)
def test_bad_algorithm_setting_is_one_line_error(flags, message, tmp_path):
    result = _run('crest.py', *flags, f'--workdir={tmp_path / "run"}')
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
    assert not (tmp_path / 'run').exists()
