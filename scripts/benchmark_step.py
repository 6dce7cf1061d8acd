r"""Measures the speed and memory of each algorithm's train step, of its input pipeline,
and of the whole training loop.

  python scripts/benchmark_step.py --output=benchmarks/step_<cpu>.json

Shapes are arch:HxWxC:batch:uratio. For each shape, algorithm and precision: seconds
per train step (its forward and backward passes, optimizer, EMA and alignment updates)
on the batch its views ask for; images/s (input images: batch labeled + batch * uratio
per unlabeled view, e.g. 64 + 2 x 448 for FixMatch's weak and strong views and for
MixMatch's K = 2 weak views); FLOP utilization, the float operations of the step's
graph (TensorFlow's count, forward and backward, all ops) per second over the matmul
peak of the same precision measured here; and the peak memory (RSS) of the process that
built the model and ran the steps, each configuration in a fresh process of its own.
Then the images/s of each algorithm's input pipeline (uint8 -> its views), and the
end-to-end steps/s of the training loop (`train.train`: pipeline, steps, evaluation
skipped) for the shapes listed in --end_to_end.

About 15 minutes on 2 CPU cores with the defaults (WRN-28-2 steps take 2-9 s each).
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from libml.startup import import_tensorflow  # noqa: E402

tf = import_tensorflow()  # First, so that TF's start-up lines are held back.

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from libml import machine, models, pipeline, records, train  # noqa: E402
from libml.algorithms import ALGORITHMS  # noqa: E402

flags.DEFINE_list('algorithms', list(ALGORITHMS), 'Algorithms to time.')
flags.DEFINE_list(
    'shapes',
    ['wrn28_2:32x32x3:64:7', 'cnn_small:28x28x1:32:1'],
    'arch:HxWxC:batch:uratio to time: the paper step (64 labeled + 7 x 64 per unlabeled '
    "view) and the CPU runs' step (32 + 32).",
)
flags.DEFINE_list('precisions', list(models.PRECISIONS), 'Precisions to time.')
flags.DEFINE_integer('steps', 3, 'Timed steps per configuration (after 2 warm-up steps).')
flags.DEFINE_integer('pipeline_batches', 20, 'Batches timed for the input pipeline; 0: none.')
flags.DEFINE_list(
    'end_to_end',
    ['fixmatch:cnn_small:28x28x1:32:1'],
    'algorithm:arch:HxWxC:batch:uratio run through the training loop with its pipeline.',
)
flags.DEFINE_integer('end_to_end_steps', 300, 'Steps timed in the training loop.')
flags.DEFINE_string('output', None, 'Optional JSON file for the figures.')
flags.DEFINE_bool('deterministic', True, 'Op determinism on, as scripts/crest.py runs by default.')
flags.DEFINE_bool('xla', False, 'Compile the train step with XLA, as scripts/crest.py --xla.')
flags.DEFINE_bool(
    'profile',
    True,
    "Trace one more step with TensorFlow's profiler and record the ops taking the most CPU time.",
)
flags.DEFINE_string('child', None, 'Internal: time one configuration and print its figures.')

FLAGS = flags.FLAGS


def matmul_peak(dtype: str, n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul in `dtype`, the best of `repeats` runs."""
    a = tf.cast(tf.random.normal([n, n], seed=1), dtype)
    b = tf.cast(tf.random.normal([n, n], seed=2), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    matmul()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


# Events of a trace that wrap ops rather than being ops.
_WRAPPERS = ('Process', 'Run', 'ExecutorDoneCallback')


def top_ops(step, batch, count: int = 8) -> list[dict]:
    """The op types taking the most CPU time in one traced call of `step`, from the
    TensorFlow profiler's trace, with their share of all ops' time."""
    # The trace's protocol buffer ships with TensorFlow (its profiler's own format).
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        step(batch)['loss/total'].numpy()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        paths = [
            os.path.join(root, name)
            for root, _, names in os.walk(logdir)
            for name in names
            if name.endswith('.xplane.pb')
        ]
        with open(paths[0], 'rb') as f:
            space.ParseFromString(f.read())
    seconds = {}
    for plane in space.planes:
        if not plane.name.startswith('/host:CPU'):
            continue
        for line in plane.lines:
            for event in line.events:
                # An op's event is named '<node name>:<op type>'; the calls around the
                # ops (Python, the executor, the function call) are left out.
                name = plane.event_metadata[event.metadata_id].name
                kind = name.rsplit(':', 1)[-1].strip()
                if ':' in name and kind not in _WRAPPERS and not kind.startswith('__'):
                    seconds[kind] = seconds.get(kind, 0.0) + event.duration_ps / 1e12
    total = sum(seconds.values())
    ranked = sorted(seconds.items(), key=lambda item: -item[1])[:count]
    return [{'op': op, 'seconds': round(t, 4), 'share': round(t / total, 3)} for op, t in ranked]


def _parse_shape(spec: str):
    """'arch:HxWxC:batch:uratio' -> (arch, (H, W, C), batch, uratio)."""
    arch, dims, batch, uratio = spec.split(':')
    return arch, tuple(int(d) for d in dims.split('x')), int(batch), int(uratio)


def _model(name, arch, shape, precision, total_steps=1000):
    model = ALGORITHMS[name](
        lambda: models.build_model(arch, 10, shape, precision),
        10,
        p_target=np.full(10, 0.1),
        total_steps=total_steps,
    )
    model.compile(optimizer=train.make_optimizer(0.03, total_steps))
    model.optimizer.build(model.net.trainable_variables)
    return model


def time_step(name, arch, shape, batch, uratio, precision, steps) -> dict:
    """One configuration, in this (fresh) process."""
    model = _model(name, arch, shape, precision)
    rng = np.random.default_rng(0)

    def images(n):
        return tf.constant(rng.uniform(-1, 1, (n, *shape)), tf.float32)

    views = len(model.views.unlabeled)
    batch_data = {'x_l': images(batch), 'y_l': tf.constant(rng.integers(0, 10, batch))}
    if views:
        batch_data['x_u'] = tuple(images(batch * uratio) for _ in range(views))
    step = tf.function(model.train_step, jit_compile=FLAGS.xla)
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
    peak_rss_mb = round(_peak_rss_mb())  # Before the profiler adds its own.
    return {
        'algorithm': name,
        'arch': arch,
        'input': 'x'.join(map(str, shape)),
        'batch': f'{batch}+{views}x{batch * uratio}' if views else str(batch),
        'precision': precision,
        'images_per_step': n_images,
        'seconds_per_step': round(seconds, 4),
        'images_per_second': round(n_images / seconds, 1),
        'gflop_per_step': round(gflop, 2),
        'gflop_per_second': round(gflop / seconds, 2),
        'peak_rss_mb': peak_rss_mb,
        'params': model.net.count_params(),
        'top_ops': top_ops(step, batch_data) if FLAGS.profile else [],
    }


def time_loop(name, arch, shape, batch, uratio, precision, steps) -> dict:
    """Steps/s of `train.train` with the input pipeline, on random uint8 images; the
    first of two equal stretches (tracing, warm-up) is left out."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4096, *shape), dtype=np.uint8)
    labeled = records.Records(images[:512], rng.integers(0, 10, 512), np.arange(512))
    model = _model(name, arch, shape, precision, total_steps=2 * steps)
    stream = pipeline.train_dataset(labeled, images, batch, uratio, model.views, seed=0)
    marks = []

    def evaluate():
        marks.append(time.perf_counter())
        return {'acc/balanced': 0.0}

    with tempfile.TemporaryDirectory() as workdir:
        train.train(
            model,
            stream,
            2 * steps,
            steps,
            workdir,
            evaluate,
            log=lambda _: None,
            jit_compile=FLAGS.xla,
        )
    return {
        'algorithm': name,
        'arch': arch,
        'input': 'x'.join(map(str, shape)),
        'batch': f'{batch}+{len(model.views.unlabeled)}x{batch * uratio}',
        'precision': precision,
        'steps': steps,
        'steps_per_second': round(steps / (marks[1] - marks[0]), 2),
        'peak_rss_mb': round(_peak_rss_mb()),
    }


def time_pipeline(name: str, shape: tuple, batch: int, uratio: int, batches: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4096, *shape), dtype=np.uint8)
    labeled = records.Records(images[:512], rng.integers(0, 10, 512), np.arange(512))
    # An instance: an algorithm's views may depend on its settings (MixMatch's K).
    views = ALGORITHMS[name](
        lambda: models.build_model('cnn_small', 10, shape), 10, total_steps=1000
    ).views
    it = iter(pipeline.train_dataset(labeled, images, batch, uratio, views))
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
        'batch': f'{batch}+{len(views.unlabeled)}x{batch * uratio}',
        'views': [views.labeled, *views.unlabeled],
        'augmented_images_per_second': round(batches * per_batch / seconds, 1),
        'seconds_per_batch': round(seconds / batches, 4),
    }


def _in_child(kind: str, *spec) -> dict:
    """Runs one configuration in a fresh process (so that its peak memory is its own)."""
    command = [sys.executable, os.path.abspath(__file__), f'--child={kind}:' + ':'.join(spec)]
    command += [f'--steps={FLAGS.steps}', f'--end_to_end_steps={FLAGS.end_to_end_steps}']
    command += ['--deterministic' if FLAGS.deterministic else '--nodeterministic']
    command += ['--xla' if FLAGS.xla else '--noxla']
    command += ['--profile' if FLAGS.profile else '--noprofile']
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
    if proc.returncode or not lines:
        raise RuntimeError(f'{" ".join(command)} failed:\n{proc.stderr[-3000:]}')
    return json.loads(lines[0][len('RESULT ') :])


def _child(spec: str) -> None:
    kind, name, arch, dims, batch, uratio, precision = spec.split(':')
    shape = tuple(int(d) for d in dims.split('x'))
    timer = time_step if kind == 'step' else time_loop
    steps = FLAGS.steps if kind == 'step' else FLAGS.end_to_end_steps
    result = timer(name, arch, shape, int(batch), int(uratio), precision, steps)
    print('RESULT ' + json.dumps(result), flush=True)


def main(argv):
    del argv
    tf.random.set_seed(0)  # Op determinism refuses unseeded random ops.
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    if FLAGS.child:
        _child(FLAGS.child)
        return
    cpu = machine.cpu_model()
    peaks = {p: matmul_peak(models.PRECISIONS[p].replace('mixed_', '')) for p in FLAGS.precisions}
    print(
        f'{cpu}, {os.cpu_count()} CPUs: matmul peak '
        + ', '.join(f'{p} {v / 1e9:.1f} GFLOP/s' for p, v in peaks.items()),
        flush=True,
    )
    results = {
        'cpu': cpu,
        'cpus': os.cpu_count(),
        'command': ' '.join(sys.argv),
        'tensorflow': tf.__version__,
        'deterministic': FLAGS.deterministic,
        'xla': FLAGS.xla,
        'matmul_gflop_per_second': {p: round(v / 1e9, 1) for p, v in peaks.items()},
        'steps': [],
        'end_to_end': [],
        'pipeline': [],
    }
    for spec in FLAGS.shapes:
        arch, shape, batch, uratio = _parse_shape(spec)
        dims = 'x'.join(map(str, shape))
        for name in FLAGS.algorithms:
            for precision in FLAGS.precisions:
                r = _in_child('step', name, arch, dims, str(batch), str(uratio), precision)
                r['utilization'] = round(r['gflop_per_second'] * 1e9 / peaks[precision], 3)
                results['steps'].append(r)
                print(
                    f'{name:12s} {arch:9s} {r["input"]:7s} {r["batch"]:10s} {precision:7s} '
                    f'{r["seconds_per_step"]:.3f} s/step  {r["images_per_second"]:.0f} images/s  '
                    f'{r["gflop_per_second"]:.1f} GFLOP/s = {r["utilization"]:.0%} of peak  '
                    f'peak RSS {r["peak_rss_mb"] / 1024:.2f} GB',
                    flush=True,
                )
    for spec in FLAGS.end_to_end:
        name, rest = spec.split(':', 1)
        arch, shape, batch, uratio = _parse_shape(rest)
        for precision in FLAGS.precisions:
            dims = 'x'.join(map(str, shape))
            r = _in_child('loop', name, arch, dims, str(batch), str(uratio), precision)
            results['end_to_end'].append(r)
            print(
                f'loop      {name:12s} {arch:9s} {r["input"]:7s} {r["batch"]:10s} {precision:7s} '
                f'{r["steps_per_second"]:.2f} steps/s (training loop with its input pipeline)',
                flush=True,
            )
    shapes = sorted({_parse_shape(s)[1:] for s in FLAGS.shapes})
    for shape, batch, uratio in shapes if FLAGS.pipeline_batches > 0 else []:
        for name in FLAGS.algorithms:
            r = time_pipeline(name, shape, batch, uratio, FLAGS.pipeline_batches)
            results['pipeline'].append(r)
            print(
                f'pipeline  {name:12s} {r["input"]:7s} {r["batch"]:10s} '
                f'{r["augmented_images_per_second"]:.0f} augmented images/s '
                f'(views {", ".join(r["views"])}), {r["seconds_per_batch"]:.3f} s/batch',
                flush=True,
            )
    # The peaks again, after the runs: the larger is kept, as one measurement taken at a
    # busy moment would understate it and inflate the utilizations.
    for precision, peak in peaks.items():
        again = matmul_peak(models.PRECISIONS[precision].replace('mixed_', ''))
        if again > peak:
            print(f'{precision} matmul peak, measured again: {again / 1e9:.1f} GFLOP/s')
            results['matmul_gflop_per_second'][precision] = round(again / 1e9, 1)
            for r in results['steps']:
                if r['precision'] == precision:
                    r['utilization'] = round(r['gflop_per_second'] * 1e9 / again, 3)
    if FLAGS.output:
        os.makedirs(os.path.dirname(FLAGS.output) or '.', exist_ok=True)
        with open(FLAGS.output, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    app.run(main)
