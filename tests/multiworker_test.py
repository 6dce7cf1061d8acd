"""Training across machines: two worker processes on 127.0.0.1, told their cluster by
TF_CONFIG, run the driver (scripts/crest.py) under MultiWorkerMirroredStrategy. Both end
with identical weights, the chief's run folder is complete, and a re-run resumes from
the workers' copies exactly; copies that stopped at different points are refused."""

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from crest.results import Results
from tests import fakes

# One worker: registers the tiny 10-class data set under the name 'tiny' and runs the
# driver's main() with the flags given after the worker's index.
_WORKER = textwrap.dedent(
    """
    import json, os, sys
    index, ports, *argv = sys.argv[1:]
    os.environ['TF_CONFIG'] = json.dumps({
        'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports.split(',')]},
        'task': {'type': 'worker', 'index': int(index)},
    })
    from absl import flags
    from libml import datasets
    from tests import fakes
    datasets.DATASETS['tiny'] = fakes.tiny()
    cli = fakes.load_script('scripts/crest.py', 'crest_cli')
    flags.FLAGS(['crest.py', *argv])
    cli.main(['crest.py'])
    """
)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_cluster(workdir, workers=2, timeout=400):
    """Starts `workers` processes of one cluster; returns [(returncode, stdout, stderr)]."""
    ports = ','.join(str(p) for p in _free_ports(workers))
    argv = [
        f'--workdir={workdir}',
        '--dataset=tiny',
        '--imbalance=8',
        '--label_fraction=0.3',
        '--arch=cnn_small',
        '--generations=2',
        '--steps_per_generation=4',
        '--eval_every=2',
        '--batch_size=8',
        '--uratio=2',
        '--ema_warmup',
        '--seed=3',
        '--cpu_threads=1',
    ]
    env = {**os.environ, 'PYTHONPATH': fakes.REPO, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    env.pop('TF_CONFIG', None)
    procs = [
        subprocess.Popen(
            [sys.executable, '-c', _WORKER, str(i), ports, *argv],
            cwd=fakes.REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


def _variables(ckpt_dir):
    """{name: value} of the model's variables in the latest checkpoint of `ckpt_dir`."""
    reader = tf.train.load_checkpoint(ckpt_dir)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith('model/') and 'OPTIMIZER_SLOT' not in name
    }


def _assert_ok(runs):
    for i, (code, out, err) in enumerate(runs):
        assert code == 0, f'worker {i}:\n{out[-2000:]}\n{err[-3000:]}'


@pytest.mark.slow
def test_two_workers_train_in_lockstep_and_resume(tmp_path):
    workdir = str(tmp_path / 'run')
    runs = _run_cluster(workdir)
    _assert_ok(runs)
    chief_out, worker_out = runs[0][1], runs[1][1]
    assert '8 labeled + 16 unlabeled images per step, split over 2 replicas' in chief_out
    assert 'worker_1: training in lockstep with the chief' in worker_out
    assert '[gen 1/1] balanced acc' not in worker_out  # progress is the chief's

    # The chief's run folder is complete; the worker keeps its own copy beside it.
    copy = os.path.join(workdir, '.worker_1')
    for folder in (workdir, copy):
        for name in ('args.json', 'results.json', 'data/counts.json'):
            assert os.path.exists(os.path.join(folder, name)), name
        for g in (0, 1):
            for name in ('metrics.json', 'picks.json', 'evals.json', 'labeled.tfrecord'):
                assert os.path.exists(os.path.join(folder, f'gen_{g:02d}', name))
            assert tf.train.latest_checkpoint(os.path.join(folder, f'gen_{g:02d}', 'ckpt'))
    hidden = sorted(n for n in os.listdir(workdir) if n.startswith('.'))
    assert hidden == ['.lock', '.worker_1']  # The run's lock, the worker's copy.

    # Identical weights on both workers: trained ones, EMA ones and the batch norm
    # moving statistics (averaged over the replicas before every checkpoint).
    for g in (0, 1):
        ours = _variables(os.path.join(workdir, f'gen_{g:02d}', 'ckpt'))
        theirs = _variables(os.path.join(copy, f'gen_{g:02d}', 'ckpt'))
        assert sorted(ours) == sorted(theirs)
        assert any('moving_mean' in name for name in ours)
        for name, value in ours.items():
            np.testing.assert_array_equal(value, theirs[name], err_msg=name)
    chief, worker = (Results.read(os.path.join(f, 'results.json')) for f in (workdir, copy))
    assert [g.balanced_accuracy for g in chief.generations] == [
        g.balanced_accuracy for g in worker.generations
    ]
    assert [g.picks for g in chief.generations] == [g.picks for g in worker.generations]
    assert chief.generations[0].picks.total_picked > 0
    final = _variables(os.path.join(workdir, 'gen_01', 'ckpt'))

    # Exact resume: both copies lose generation 1 after its step-2 checkpoint; the
    # re-run trains steps 3-4 again and ends with the same weights.
    for folder in (workdir, copy):
        gen = os.path.join(folder, 'gen_01')
        os.remove(os.path.join(gen, 'metrics.json'))
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(), os.path.join(gen, 'ckpt'), 2)
        assert [int(p.rsplit('-', 1)[1]) for p in manager.checkpoints] == [2, 4]
        for suffix in ('.index', '.data-00000-of-00001'):
            os.remove(manager.checkpoints[-1] + suffix)
        # The state file as the crash would have left it (the manager needs timestamps).
        tf.compat.v1.train.update_checkpoint_state(
            os.path.join(gen, 'ckpt'),
            manager.checkpoints[0],
            [manager.checkpoints[0]],
            all_model_checkpoint_timestamps=[time.time()],
        )
    runs = _run_cluster(workdir)
    _assert_ok(runs)
    assert 'resumed from' in runs[0][1] and 'at step 2' in runs[0][1]
    resumed = _variables(os.path.join(workdir, 'gen_01', 'ckpt'))
    for name, value in final.items():
        np.testing.assert_array_equal(value, resumed[name], err_msg=name)

    # A worker whose copy is behind the chief's (it lost its last generation) is refused
    # on every worker, before any training.
    os.remove(os.path.join(copy, 'gen_01', 'metrics.json'))
    shutil.rmtree(os.path.join(copy, 'gen_01', 'ckpt'))
    runs = _run_cluster(workdir)
    for code, _, err in runs:
        assert code != 0
        assert "error: the workers' copies of the run stopped at different points (4 and 8" in err
