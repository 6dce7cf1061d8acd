"""CReST under MirroredStrategy with two replicas (two logical CPUs), as on a multi-GPU
machine, for every algorithm: each replica gets half of the --batch_size labeled images,
the run finishes with picks in every generation and the replicas' weights stay identical."""

import textwrap

import pytest

from libml.algorithms import ALGORITHMS
from tests import fakes

# Every algorithm in one process (the logical CPUs are set before TensorFlow starts);
# prints {algorithm: what its run showed}.
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from crest import config as config_lib, loop
    from libml import datasets
    from tests import fakes

    tmp, algorithms = sys.argv[1], sys.argv[2].split(',')
    datasets.DATASETS['tiny'] = fakes.tiny()
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    models = []
    build = loop.models.build_model
    def spy(*args):
        models.append(build(*args))
        return models[-1]
    loop.models.build_model = spy

    found = {}
    for algorithm in algorithms:
        cfg = config_lib.Config(
            workdir=f'{tmp}/{algorithm}', dataset='tiny', imbalance=8,
            label_fraction=0.3, arch='cnn_small', generations=2, steps_per_generation=4,
            eval_every=2, batch_size=8, uratio=2, ema_warmup=True, seed=1, algorithm=algorithm)
        shapes = set()  # per-replica batch sizes seen while tracing the train step
        views = set()  # unlabeled views the algorithm reads
        train_step = loop.ALGORITHMS[algorithm].train_step
        def spy_step(self, data, train_step=train_step, shapes=shapes, views=views):
            shapes.add(tuple(x.shape[0] for x in tf.nest.flatten(data)))
            views.add(len(self.views.unlabeled))
            return train_step(self, data)
        loop.ALGORITHMS[algorithm].train_step = spy_step
        try:  # the global batch must split evenly over the replicas
            loop.run(config_lib.Config(**{**cfg.__dict__, 'batch_size': 5}), strategy=strategy)
            uneven = None
        except ValueError as e:
            uneven = str(e)
        results = loop.run(cfg, strategy=strategy, log=lambda m: None)

        net = models[-2]  # the last generation's trained (non-EMA) network
        spread = max(
            float(np.abs(strategy.experimental_local_results(v.value)[0]
                         - strategy.experimental_local_results(v.value)[1]).max())
            for v in net.trainable_variables)
        found[algorithm] = {
            'replicas': strategy.num_replicas_in_sync,
            'balanced': [g.balanced_accuracy for g in results.generations],
            'picked': [g.picks.total_picked for g in results.generations],
            'replica_spread': spread,
            'shapes': sorted(shapes),
            'views': sorted(views),
            'uneven': uneven,
        }
    print('RESULT ' + json.dumps(found))
    """
)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Every algorithm's two-replica run, in one process."""
    tmp = str(tmp_path_factory.mktemp('runs'))
    return fakes.run_python(_SCRIPT, tmp, ','.join(sorted(ALGORITHMS)), timeout=1200)


@pytest.mark.parametrize('algorithm', sorted(ALGORITHMS))
def test_two_replica_run_keeps_replicas_in_sync(algorithm, runs):
    result = runs[algorithm]
    assert result['replicas'] == 2
    assert len(result['balanced']) == 2
    assert all(0.0 <= b <= 1.0 for b in result['balanced'])
    assert all(p > 0 for p in result['picked'])
    # Mirrored training applies the same all-reduced update on both replicas.
    assert result['replica_spread'] < 1e-5
    # --batch_size is the global batch: 8 labeled images split into 4 (x_l, y_l) and
    # 2 * 4 unlabeled images in each of its views per replica (tf.nest order: x_l, x_u,
    # y_l).
    (views,) = result['views']
    assert result['shapes'] == [[4, *[8] * views, 4]]
    assert views == {'supervised': 0, 'pseudo_label': 1}.get(algorithm, 2)
    assert result['uneven'] == (
        '--batch_size 5 (the global batch) must be a multiple of the 2 replicas'
    )
