r"""Peak memory and time of pseudo-labeling a large unlabeled pool, streamed and in memory.

  python scripts/benchmark_pseudo_label.py --images=1000000 --classes=127 \
      --output=benchmarks/pseudo_label_memory_<cpu>.json

Writes a synthetic unlabeled TFRecord file (random 16x16 gray images, ~330 MB for 1M;
kept in --data_dir and reused), then, in a fresh process per mode, does what a
generation does after training: predict the pool with the small CNN (untrained, with
`--classes` outputs), select the pseudo-labels per class and export the labeled set
plus the picks. Modes:
  streamed   the images stay in the file (`--stream`): predicted class and confidence
             per image, per-class top-k, export file to file;
  in_memory  the images decoded into memory, the N x L probabilities, then the export
             from arrays (the path of small data sets).
Reports each mode's peak resident memory (ru_maxrss of its process, TensorFlow and the
compiled network included; also what that was before reading any data), its wall time
and the picks, with the CPU's name. 1M images: about 15 minutes on 2 cores, most of it predicting.
"""

import json
import os
import resource
import subprocess
import sys
import time

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from libml.startup import import_tensorflow  # noqa: E402

tf = import_tensorflow()  # First, so that TF's start-up lines are held back.

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from crest import rebalance  # noqa: E402
from libml import machine, models, pipeline, records, train  # noqa: E402

flags.DEFINE_integer('images', 1_000_000, 'Unlabeled images.')
flags.DEFINE_integer('classes', 127, 'Classes (outputs of the network).')
flags.DEFINE_string('data_dir', '/tmp/crest_pseudo_label_benchmark', 'Synthetic data.')
flags.DEFINE_string('output', '', 'JSON file for the results; empty: print only.')
flags.DEFINE_enum('measure', '', ['', 'streamed', 'in_memory'], 'Internal: one mode.')
FLAGS = flags.FLAGS

SIZE = 16
CHUNK = 50_000


def _write_pool(folder: str, n: int, classes: int) -> None:
    """unlabeled.tfrecord (n random images, written in chunks) and labeled.tfrecord."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    path = os.path.join(folder, 'unlabeled.tfrecord')
    if not os.path.exists(path):
        parts = []
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            images = rng.integers(0, 256, (count, SIZE, SIZE, 1), np.uint8)
            labels = rng.integers(0, classes, count)
            part = f'{path}.part{len(parts)}'
            records.write_records(
                part, records.Records(images, labels, np.arange(start, start + count))
            )
            parts.append(part)
            print(f'wrote {start + count}/{n} images', flush=True)
        with open(path, 'wb') as out:  # TFRecord files concatenate.
            for part in parts:
                with open(part, 'rb') as f:
                    out.write(f.read())
                os.remove(part)
    labeled = os.path.join(folder, 'labeled.tfrecord')
    if not os.path.exists(labeled):
        count = 10 * classes
        images = rng.integers(0, 256, (count, SIZE, SIZE, 1), np.uint8)
        records.write_records(
            labeled, records.Records(images, np.arange(count) % classes, np.arange(count))
        )


def _measure(folder: str, mode: str, classes: int) -> dict:
    """One generation's pseudo-labeling and export in this process; its peak memory."""
    keras.utils.set_random_seed(0)
    net = models.build_model('cnn_small', classes, (SIZE, SIZE, 1))
    train.predict(net, np.zeros((2, SIZE, SIZE, 1), np.uint8))  # Compiled before measuring.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # A long-tailed prior over the classes (imbalance 100), rates with alpha = 1/3.
    rates = rebalance.sampling_rates(rebalance.analytic_prior(classes, 100), 1 / 3)
    start = time.time()
    streamed = mode == 'streamed'
    unlabeled = records.read_records(
        os.path.join(folder, 'unlabeled.tfrecord'), images=not streamed
    )
    original = records.read_records(os.path.join(folder, 'labeled.tfrecord'), images=not streamed)
    out = os.path.join(folder, f'export_{mode}.tfrecord')
    if streamed:
        predicted, confidence = train.predict_classes(net, pipeline.image_batches(unlabeled))
        picks = rebalance.select_by_confidence(predicted, confidence, rates)
        records.export_streamed(
            out, original, unlabeled, picks, predicted[picks], confidence[picks], seed=0
        )
    else:
        probs = train.predict(net, unlabeled.images)
        picks = rebalance.select_pseudo_labels(probs, rates)
        picked = unlabeled.take(picks)
        picked.labels = probs.argmax(1)[picks]
        picked.pseudo = np.ones(len(picks), np.int64)
        picked.confidence = probs.max(1)[picks].astype(np.float32)
        records.write_records(out, records.Records.concat([original, picked]))
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    os.remove(out)
    return {
        'mode': mode,
        'peak_rss_gb': round(peak / 1e9, 3),
        'rss_before_data_gb': round(before / 1e9, 3),
        'seconds': round(seconds, 1),
        'images': len(unlabeled),
        'picks': len(picks),
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    folder = os.path.join(FLAGS.data_dir, f'{FLAGS.images}x{FLAGS.classes}')
    if FLAGS.measure:
        print(json.dumps(_measure(folder, FLAGS.measure, FLAGS.classes)))
        return
    _write_pool(folder, FLAGS.images, FLAGS.classes)
    results = []
    for mode in ('streamed', 'in_memory'):
        command = [sys.executable, __file__, f'--measure={mode}', f'--images={FLAGS.images}']
        command += [f'--classes={FLAGS.classes}', f'--data_dir={FLAGS.data_dir}']
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    report = {
        'command': ' '.join(['python scripts/benchmark_pseudo_label.py', *sys.argv[1:]]),
        'cpu': machine.cpu_model(),
        'cores': os.cpu_count(),
        'tensorflow': tf.__version__,
        'image_shape': [SIZE, SIZE, 1],
        'classes': FLAGS.classes,
        'unlabeled_file_mb': round(
            os.path.getsize(os.path.join(folder, 'unlabeled.tfrecord')) / 1e6, 1
        ),
        'results': results,
    }
    if FLAGS.output:
        records.write_json(FLAGS.output, report)
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    app.run(main)
