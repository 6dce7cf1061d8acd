r"""Measures the speed of each algorithm's train step and of its input pipeline.

  python scripts/benchmark_step.py --output=benchmarks/step_<cpu>_64+448.json

For each algorithm and architecture: seconds per train step (its forward and backward
passes, optimizer, EMA and alignment updates) on the batch its views ask for, images/s
(input images: batch labeled + batch * uratio per unlabeled view, e.g. 64 + 2 x 448 for
FixMatch's weak and strong views and for MixMatch's K = 2 weak views), and FLOP
utilization: the float operations of the step's graph (TensorFlow's count, forward and
backward, all ops) per second over the float32 matmul peak measured here. Then the
images/s of each algorithm's input pipeline (uint8 -> its views).

About 8 minutes on 2 CPU cores with the defaults (WRN-28-2 steps take 5-10 s each here).
"""

import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from libml import data, models, train  # noqa: E402
from libml.algorithms import ALGORITHMS  # noqa: E402

flags.DEFINE_list('algorithms', list(ALGORITHMS), 'Algorithms to time.')
flags.DEFINE_list(
    'archs',
    ['wrn28_2:32x32x3', 'cnn_small:28x28x1', 'cnn_small:32x32x3'],
    'arch:HxWxC pairs to time.',
)
flags.DEFINE_integer('batch_size', 64, 'Labeled images per step.')
flags.DEFINE_integer('uratio', 7, 'Unlabeled images per labeled image.')
flags.DEFINE_integer('steps', 3, 'Timed steps per architecture (after 2 warm-up steps).')
flags.DEFINE_integer('pipeline_batches', 20, 'Batches timed for the input pipeline; 0: none.')
flags.DEFINE_string('output', None, 'Optional JSON file for the figures.')
flags.DEFINE_bool('deterministic', True, 'Op determinism on, as scripts/crest.py runs by default.')

FLAGS = flags.FLAGS


def matmul_peak(n: int = 4096, repeats: int = 5) -> float:
    """float32 FLOP/s of an n x n matmul, the best of `repeats` runs."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _step_gflop(step, batch) -> float:
    """Float operations of one call of the tf.function `step`, counted on its graph."""
    graph = step.get_concrete_function(batch).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    level = tf.get_logger().level
    tf.get_logger().setLevel('ERROR')  # The v1 profiler warns that it is a v1 API.
    try:
        return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / 1e9
    finally:
        tf.get_logger().setLevel(level)


def time_step(name: str, arch: str, shape: tuple, batch: int, uratio: int, steps: int) -> dict:
    model = ALGORITHMS[name](
        lambda: models.build_model(arch, 10, shape), 10, p_target=np.full(10, 0.1), total_steps=1000
    )
    model.compile(optimizer=train.make_optimizer(0.03, 1000))
    model.optimizer.build(model.net.trainable_variables)
    rng = np.random.default_rng(0)

    def images(n):
        return tf.constant(rng.uniform(-1, 1, (n, *shape)), tf.float32)

    views = len(model.views.unlabeled)
    batch_data = {'x_l': images(batch), 'y_l': tf.constant(rng.integers(0, 10, batch))}
    if views:
        batch_data['x_u'] = tuple(images(batch * uratio) for _ in range(views))
    step = tf.function(model.train_step)
    gflop = _step_gflop(step, batch_data)
    for _ in range(2):
        step(batch_data)['loss/total'].numpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(batch_data)['loss/total'].numpy()
        times.append(time.perf_counter() - start)
    n_images = batch * (1 + views * uratio)
    seconds = float(np.median(times))
    return {
        'algorithm': name,
        'arch': arch,
        'input': 'x'.join(map(str, shape)),
        'images_per_step': n_images,
        'seconds_per_step': round(seconds, 4),
        'images_per_second': round(n_images / seconds, 1),
        'gflop_per_step': round(gflop, 2),
        'gflop_per_second': round(gflop / seconds, 2),
        'params': model.net.count_params(),
    }


def time_pipeline(name: str, shape: tuple, batch: int, uratio: int, batches: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4096, *shape), dtype=np.uint8)
    labeled = data.Records(images[:512], rng.integers(0, 10, 512), np.arange(512))
    views = ALGORITHMS[name](
        lambda: models.build_model('cnn_small', 10, shape), 10, total_steps=1000
    ).views
    it = iter(data.train_dataset(labeled, images, batch, uratio, views))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    # Every image the batch holds: the labeled ones and each view of the unlabeled ones.
    per_batch = batch * (1 + uratio * len(views.unlabeled))
    return {
        'algorithm': name,
        'input': 'x'.join(map(str, shape)),
        'views': [views.labeled, *views.unlabeled],
        'augmented_images_per_second': round(batches * per_batch / seconds, 1),
        'seconds_per_batch': round(seconds / batches, 4),
    }


def main(argv):
    del argv
    tf.random.set_seed(0)  # Op determinism refuses unseeded random ops.
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    cpu = _cpu_model()
    peak = matmul_peak()
    print(f'{cpu}, {os.cpu_count()} CPUs: float32 matmul peak {peak / 1e9:.1f} GFLOP/s', flush=True)
    results = {
        'cpu': cpu,
        'cpus': os.cpu_count(),
        'command': ' '.join(sys.argv),
        'deterministic': FLAGS.deterministic,
        'matmul_gflop_per_second': round(peak / 1e9, 1),
        'steps': [],
        'pipeline': [],
    }
    for spec in FLAGS.archs:
        arch, dims = spec.split(':')
        shape = tuple(int(d) for d in dims.split('x'))
        for name in FLAGS.algorithms:
            r = time_step(name, arch, shape, FLAGS.batch_size, FLAGS.uratio, FLAGS.steps)
            r['utilization'] = round(r['gflop_per_second'] * 1e9 / peak, 3)
            results['steps'].append(r)
            print(
                f'{name:12s} {arch:10s} {r["input"]:8s} {r["images_per_step"]} images/step  '
                f'{r["seconds_per_step"]:.3f} s/step  {r["images_per_second"]:.0f} images/s  '
                f'{r["gflop_per_step"]:.1f} GFLOP/step  {r["gflop_per_second"]:.1f} GFLOP/s = '
                f'{r["utilization"]:.0%} of matmul peak',
                flush=True,
            )
    shapes = sorted({tuple(int(d) for d in s.split(':')[1].split('x')) for s in FLAGS.archs})
    for shape in shapes if FLAGS.pipeline_batches > 0 else []:
        for name in FLAGS.algorithms:
            r = time_pipeline(name, shape, FLAGS.batch_size, FLAGS.uratio, FLAGS.pipeline_batches)
            results['pipeline'].append(r)
            print(
                f'pipeline  {name:12s} {r["input"]:8s} {r["augmented_images_per_second"]:.0f} '
                f'augmented images/s (views {", ".join(r["views"])}), '
                f'{r["seconds_per_batch"]:.3f} s/batch',
                flush=True,
            )
    # The peak again, after the runs: the larger of the two is kept, as one measurement
    # taken at a busy moment would understate it and inflate the utilizations.
    peak_after = matmul_peak()
    if peak_after > peak:
        print(f'float32 matmul peak, measured again: {peak_after / 1e9:.1f} GFLOP/s')
        results['matmul_gflop_per_second'] = round(peak_after / 1e9, 1)
        for r in results['steps']:
            r['utilization'] = round(r['gflop_per_second'] * 1e9 / peak_after, 3)
    if FLAGS.output:
        os.makedirs(os.path.dirname(FLAGS.output) or '.', exist_ok=True)
        with open(FLAGS.output, 'w') as f:
            json.dump(results, f, indent=1)


def _cpu_model() -> str:
    """The CPU's model name (speeds compare only on one machine)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


if __name__ == '__main__':
    app.run(main)
