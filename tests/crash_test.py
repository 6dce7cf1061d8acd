"""Exact resume: a tiny 2-generation run, killed with SIGKILL at several moments and
resumed each time, ends identical to the same run uninterrupted; and two uninterrupted
runs are identical, in float32 and in bf16. Each run is a fresh process, with op
determinism on as the driver sets it."""

import textwrap

import pytest

from tests import fakes

# Runs the tiny CReST+ run in tmp/run; KILL names a moment at which the process kills
# itself with SIGKILL (after the given number of earlier passes there).
_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    from crest import config as config_lib, loop
    from libml import datasets, records
    from tests import fakes

    tmp, kill, precision = sys.argv[1], sys.argv[2], sys.argv[3]
    datasets.DATASETS['tiny'] = fakes.tiny()
    cfg = config_lib.Config(
        workdir=tmp + '/run', dataset='tiny', imbalance=8,
        label_fraction=0.3, arch='cnn_small', generations=2, steps_per_generation=6,
        eval_every=2, batch_size=8, uratio=2, ema_warmup=True, seed=3, precision=precision)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def wrap(owner, name, before=None, after=None):
        original = getattr(owner, name)
        def wrapped(*args, **kwargs):
            if before and before(*args, **kwargs): die()
            result = original(*args, **kwargs)
            if after and after(*args, **kwargs): die()
            return result
        setattr(owner, name, wrapped)

    saves = []
    def nth_save(n):
        def check(*args, **kwargs):
            saves.append(1)
            return len(saves) == n
        return check

    if kill == 'data':  # The fold half written: labeled.tfrecord done, the rest not.
        wrap(records, 'write_records', before=lambda path, *_: path.endswith('unlabeled.tfrecord'))
    elif kill == 'mid_generation':  # Between checkpoints (at step 2, not 4).
        wrap(tf.train.CheckpointManager, 'save', before=nth_save(2))
    elif kill == 'after_checkpoint':  # Right after a checkpoint (step 4).
        wrap(tf.train.CheckpointManager, 'save', after=nth_save(2))
    elif kill == 'export':  # Labeled set exported, picks.json not yet.
        wrap(records, 'write_json', before=lambda path, *_: path.endswith('picks.json'))
    elif kill == 'model_export':  # model.keras written, the SavedModel not yet.
        from libml import export
        wrap(export, 'save_serving', before=lambda *_: True)
    elif kill == 'next_generation':  # Generation 1, after its first checkpoint.
        def first_of_gen1(self, checkpoint_number=None):
            return 'gen_01' in self.directory and checkpoint_number == 2
        wrap(tf.train.CheckpointManager, 'save', after=first_of_gen1)
    loop.run(cfg, log=lambda _: None)
    print('RESULT ' + json.dumps({'finished': True}))
    """
)

KILLS = ['data', 'mid_generation', 'after_checkpoint', 'export', 'model_export', 'next_generation']


def _run(tmp, kill='', precision='float32'):
    return fakes.run_process(_SCRIPT, str(tmp), kill, precision)


@pytest.mark.slow
def test_killed_and_resumed_runs_end_identical_to_an_uninterrupted_one(tmp_path):
    assert _run(tmp_path / 'a').returncode == 0
    expected = fakes.run_outcome(tmp_path / 'a' / 'run')
    assert expected['results']['generations'][0]['picks']['total_picked'] > 0

    # A second uninterrupted run: the same, bit for bit.
    assert _run(tmp_path / 'b').returncode == 0
    assert fakes.run_outcome(tmp_path / 'b' / 'run') == expected

    # One run killed at each moment in turn, every re-run resuming the previous crash.
    for kill in KILLS:
        proc = _run(tmp_path / 'c', kill)
        assert proc.returncode == -9, (kill, proc.returncode, proc.stderr[-2000:])
    assert _run(tmp_path / 'c').returncode == 0
    assert fakes.run_outcome(tmp_path / 'c' / 'run') == expected
    for g in range(2):  # Each generation's model exported whole, nothing half-written.
        assert sorted(
            p.name for p in (tmp_path / 'c' / 'run' / f'gen_{g:02d}').iterdir()
        ) == sorted(p.name for p in (tmp_path / 'a' / 'run' / f'gen_{g:02d}').iterdir())


def test_two_bf16_runs_are_identical(tmp_path):
    for run in ('a', 'b'):
        proc = _run(tmp_path / run, precision='bf16')
        assert proc.returncode == 0, proc.stderr[-2000:]
    first = fakes.run_outcome(tmp_path / 'a' / 'run')
    assert first['results']['args']['precision'] == 'bf16'
    assert first == fakes.run_outcome(tmp_path / 'b' / 'run')
