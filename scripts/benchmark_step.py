r"""Measures the speed of a FixMatch train step and of the input pipeline.

  python scripts/benchmark_step.py --output=benchmarks/step_cpu.json

For each architecture: seconds per train step (one forward and backward pass over
batch + 2 * uratio * batch images, optimizer, EMA and alignment updates), images/s,
and FLOP utilization: achieved FLOP/s (3 x forward FLOPs per image, the usual estimate
for forward + backward) over the float32 matmul peak measured here. Then the images/s
of the training input pipeline (decode-free uint8 -> weak / strong augmentation).

About 3 minutes on 2 CPU cores with the defaults (WRN-28-2 steps take ~7 s each here).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from libml import data, models, train  # noqa: E402
from libml.algorithms import FixMatch  # noqa: E402

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


def time_step(arch: str, shape: tuple, batch: int, uratio: int, steps: int) -> dict:
    model = FixMatch(lambda: models.build_model(arch, 10, shape), 10, p_target=np.full(10, 0.1))
    model.compile(optimizer=train.make_optimizer(0.03, 1000))
    model.optimizer.build(model.net.trainable_variables)
    rng = np.random.default_rng(0)
    batch_data = {
        'x_l': tf.constant(rng.uniform(-1, 1, (batch, *shape)), tf.float32),
        'y_l': tf.constant(rng.integers(0, 10, batch)),
        'x_w': tf.constant(rng.uniform(-1, 1, (batch * uratio, *shape)), tf.float32),
        'x_s': tf.constant(rng.uniform(-1, 1, (batch * uratio, *shape)), tf.float32),
    }
    step = tf.function(model.train_step)
    for _ in range(2):
        step(batch_data)['loss/total'].numpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(batch_data)['loss/total'].numpy()
        times.append(time.perf_counter() - start)
    images = batch * (1 + 2 * uratio)
    seconds = float(np.median(times))
    flops = 3 * models.flops_per_image(model.net) * images
    return {
        'arch': arch,
        'input': 'x'.join(map(str, shape)),
        'images_per_step': images,
        'seconds_per_step': round(seconds, 4),
        'images_per_second': round(images / seconds, 1),
        'gflop_per_step': round(flops / 1e9, 2),
        'gflop_per_second': round(flops / seconds / 1e9, 2),
        'params': model.net.count_params(),
    }


def time_pipeline(shape: tuple, batch: int, uratio: int, batches: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4096, *shape), dtype=np.uint8)
    labeled = data.Records(images[:512], rng.integers(0, 10, 512), np.arange(512))
    it = iter(data.train_dataset(labeled, images, batch, uratio))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    # One strong and one weak view per unlabeled image, one weak view per labeled one.
    return {
        'input': 'x'.join(map(str, shape)),
        'unlabeled_images_per_second': round(batches * batch * uratio / seconds, 1),
        'seconds_per_batch': round(seconds / batches, 4),
    }


def main(argv):
    del argv
    peak = matmul_peak()
    print(f'float32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({os.cpu_count()} CPUs)', flush=True)
    results = {'matmul_gflop_per_second': round(peak / 1e9, 1), 'steps': [], 'pipeline': []}
    for spec in FLAGS.archs:
        arch, dims = spec.split(':')
        shape = tuple(int(d) for d in dims.split('x'))
        r = time_step(arch, shape, FLAGS.batch_size, FLAGS.uratio, FLAGS.steps)
        r['utilization'] = round(r['gflop_per_second'] * 1e9 / peak, 3)
        results['steps'].append(r)
        print(
            f'{arch:10s} {r["input"]:8s} {r["images_per_step"]} images/step  '
            f'{r["seconds_per_step"]:.3f} s/step  {r["images_per_second"]:.0f} images/s  '
            f'{r["gflop_per_second"]:.1f} GFLOP/s = {r["utilization"]:.0%} of matmul peak',
            flush=True,
        )
    shapes = sorted({tuple(int(d) for d in s.split(':')[1].split('x')) for s in FLAGS.archs})
    for shape in shapes if FLAGS.pipeline_batches > 0 else []:
        r = time_pipeline(shape, FLAGS.batch_size, FLAGS.uratio, FLAGS.pipeline_batches)
        results['pipeline'].append(r)
        print(
            f'pipeline   {r["input"]:8s} {r["unlabeled_images_per_second"]:.0f} unlabeled '
            f'images/s (weak + strong views), {r["seconds_per_batch"]:.3f} s/batch',
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
    print(
        'utilization: '
        + ', '.join(f'{r["arch"]} {r["input"]} {r["utilization"]:.0%}' for r in results['steps'])
    )
    if FLAGS.output:
        os.makedirs(os.path.dirname(FLAGS.output) or '.', exist_ok=True)
        with open(FLAGS.output, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    app.run(main)
