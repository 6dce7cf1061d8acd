"""Small data sets in the official file formats, so tests exercise the real loaders;
a runner for tests that need a fresh TensorFlow process; and a run's results made from
a few numbers."""

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tarfile

import numpy as np


def cifar_pixel(index, channel, row, col):
    """A pixel value that encodes its own position, to check the CHW -> HWC layout."""
    return (index * 7 + channel * 50 + row * 3 + col) % 256


def cifar_images(n, offset=0):
    idx = np.arange(offset, offset + n)[:, None, None, None]
    ch = np.arange(3)[None, :, None, None]
    row = np.arange(32)[None, None, :, None]
    col = np.arange(32)[None, None, None, :]
    return cifar_pixel(idx, ch, row, col).astype(np.uint8)  # [N, 3, 32, 32], channel-major


def cifar_records(labels, offset=0, label_bytes=1):
    chw = cifar_images(len(labels), offset)
    rows = []
    for i, label in enumerate(labels):
        head = bytes([label // 5 % 20, label]) if label_bytes == 2 else bytes([label])
        rows.append(head + chw[i].tobytes())
    return b''.join(rows)


def write_cifar10_archive(folder, labels_per_batch, test_labels):
    """cifar-10-binary.tar.gz with five train batches, a test batch and class names."""
    files = {}
    offset = 0
    for b, labels in enumerate(labels_per_batch, start=1):
        files[f'data_batch_{b}.bin'] = cifar_records(labels, offset)
        offset += len(labels)
    files['test_batch.bin'] = cifar_records(test_labels, 10_000)
    files['batches.meta.txt'] = ''.join(f'name{i}\n' for i in range(10)).encode()
    path = os.path.join(folder, 'cifar-10-binary.tar.gz')
    with tarfile.open(path, 'w:gz') as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f'cifar-10-batches-bin/{name}')
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def write_idx(path, array):
    """Writes a uint8 array in IDX format, gzipped when the path ends in .gz."""
    array = np.asarray(array, np.uint8)
    header = b'\0\0\x08' + bytes([array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'wb') as f:
        f.write(header + array.tobytes())


def write_fashion_mnist(folder, per_class_train, per_class_test, seed=0):
    """Fashion-MNIST-like IDX files: class c images are noisy blobs at a class position.

    The classes are easy to tell apart, so a small model learns them in a few steps.
    """
    rng = np.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)

    def make(per_class):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.randint(0, 60, size=(len(labels), 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = 2 + (c // 5) * 13, 2 + (c % 5) * 5
            images[i, r : r + 11, col : col + 5] = 230
        return images, labels

    x_train, y_train = make(per_class_train)
    x_test, y_test = make(per_class_test)
    write_idx(os.path.join(folder, 'train-images-idx3-ubyte.gz'), x_train)
    write_idx(os.path.join(folder, 'train-labels-idx1-ubyte.gz'), y_train)
    write_idx(os.path.join(folder, 't10k-images-idx3-ubyte'), x_test)
    write_idx(os.path.join(folder, 't10k-labels-idx1-ubyte'), y_test)
    return (x_train, y_train), (x_test, y_test)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(path: str, name: str):
    """The script at PATH (relative to the repository) as module NAME, its main() not
    run; a script's absl flags can be defined once per process, so load each once."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_process(source: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs `source` in a fresh Python process with the repository importable."""
    env = {**os.environ, 'PYTHONPATH': REPO, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    return subprocess.run(
        [sys.executable, '-c', source, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(source: str, *args: str, timeout: int = 600) -> dict:
    """Runs `source` in a fresh Python process (`run_process`) and returns the JSON it
    printed on a line starting 'RESULT '.

    For what must happen before TensorFlow starts, e.g. splitting the CPU into logical
    devices.
    """
    proc = run_process(source, *args, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[0][len('RESULT ') :])


def tiny_fashion_mnist(folder, per_class_train, per_class_test, head_count):
    """Writes Fashion-MNIST IDX files to `folder` and returns a Fashion-MNIST-LT data set
    named 'tiny', with N_1 = `head_count`, that reads them with the real loader (pass
    `folder` as its data_dir); register it in `datasets.DATASETS` (e.g. with
    monkeypatch.setitem) to use it by name."""
    from libml.datasets import fashion_mnist

    write_fashion_mnist(str(folder), per_class_train, per_class_test)
    return fashion_mnist.FashionMnist('tiny', head_count)


def tiny(name='tiny', head_count=24, train_per_class=30, test_per_class=3, **options):
    """A synthetic 10-class data set of 28x28x1 images, N_1 = `head_count`: nothing to
    write or read. Register it in `datasets.DATASETS` to use it by name; `options` go to
    `synthetic.Synthetic` (e.g. darp_unlabeled_head)."""
    from libml.datasets import synthetic

    return synthetic.Synthetic(
        name, 10, (28, 28, 1), train_per_class, test_per_class, head_count, **options
    )


def streamed_records(folder, name, images, labels, ids):
    """`records.Records` written to `folder`/<name>.tfrecord and read back streamed: the
    columns in memory, the images left in the file."""
    from libml import records

    path = str(folder / f'{name}.tfrecord')
    expected = records.write_records(path, records.Records(images, labels, ids))
    return records.read_records(path, expected, images=False)


def tiny_net(num_classes=2, bn_momentum=0.5):
    """A net small enough to compute by hand: 1x1 conv (no bias) -> batch norm -> global
    average pool -> dense, on 2x2x1 images. Holds one weight of each kind that coupled L2
    weight decay must (conv kernel, dense kernel and bias) or must not (BN) cover."""
    import keras

    from libml import models

    inputs = keras.Input((2, 2, 1))
    x = keras.layers.Conv2D(1, 1, use_bias=False, name='conv')(inputs)
    x = models.BatchNorm(momentum=bn_momentum, name='bn')(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name='dense')(x))


def tiny_net_forward(net, x):
    """NumPy (float64) forward of `tiny_net` in training mode over the batch x [N, 2, 2, 1]:
    returns logits [N, C] and the batch mean and (biased) variance batch norm used."""
    w = float(net.get_layer('conv').kernel.numpy().ravel()[0])
    bn = net.get_layer('bn')
    y = np.asarray(x, np.float64) * w
    mean, var = y.mean(), y.var()
    y = (y - mean) / np.sqrt(var + bn.epsilon) * bn.gamma.numpy()[0] + bn.beta.numpy()[0]
    dense = net.get_layer('dense')
    return y.mean(axis=(1, 2)) @ dense.kernel.numpy() + dense.bias.numpy(), (mean, var)


def tiny_net_l2(net):
    """0.5 * (conv kernel^2 + dense kernel^2 + dense bias^2): coupled L2, BN excluded."""
    return 0.5 * sum(
        float(np.sum(np.square(v)))
        for v in (
            net.get_layer('conv').kernel.numpy(),
            net.get_layer('dense').kernel.numpy(),
            net.get_layer('dense').bias.numpy(),
        )
    )


def run_outcome(run_dir) -> dict:
    """Everything a finished run decided (results, picks, exports, test probabilities of
    each generation), without its timings and folders."""
    from libml import records

    with open(os.path.join(run_dir, 'results.json')) as f:
        results = json.load(f)
    for gen in results['generations']:
        del gen['seconds']
    for where in ('workdir', 'data_dir'):  # Each run is in a folder of its own.
        del results['args'][where]
    outcome = {'results': results}
    for g in range(len(results['generations'])):
        gen_dir = os.path.join(run_dir, f'gen_{g:02d}')
        with open(os.path.join(gen_dir, 'picks.json')) as f:
            outcome[f'picks_{g}'] = json.load(f)
        exported = records.read_records(os.path.join(gen_dir, 'labeled.tfrecord'))
        outcome[f'export_{g}'] = [exported.ids.tolist(), exported.labels.tolist()]
        outcome[f'confidence_{g}'] = exported.confidence.tolist()
        outcome[f'test_probs_{g}'] = np.load(os.path.join(gen_dir, 'test_probs.npy')).tolist()
    return outcome


def run_results(
    accuracy,
    recall,
    precision,
    predicted,
    labeled_counts,
    class_names,
    la=None,
    recall_la=None,
    picked=None,
    correct=None,
    seconds=60.0,
    args=None,
):
    """A complete `crest.results.Results` from a few numbers: one generation per entry of
    `accuracy` (a number: one generation), each its own objects with the same per-class
    test numbers (`recall`, `precision`, `predicted`), the same numbers on the unlabeled
    set, and the same picks (`picked`, `correct`: per class, by default (C, ..., 1) all
    correct). `la`: the logit-adjusted balanced accuracy, a number or one per generation
    (default: the plain one); `recall_la` (default: `recall`)."""
    from crest import results

    accuracies = [accuracy] if np.ndim(accuracy) == 0 else list(accuracy)
    las = accuracies if la is None else [la] * len(accuracies) if np.ndim(la) == 0 else list(la)
    counts = list(labeled_counts)
    num_classes = len(counts)
    picked = list(range(num_classes, 0, -1)) if picked is None else list(picked)
    correct = list(picked) if correct is None else list(correct)
    prior = (np.asarray(counts) / sum(counts)).round(6).tolist()
    steps = (args or {}).get('steps_per_generation', 100)

    def generation(g, acc, acc_la):
        test = results.TestReport(
            balanced_accuracy=acc,
            recall=list(recall),
            precision=list(precision),
            predicted=[float(p) for p in predicted],
            final_balanced_accuracy=acc,
            balanced_accuracy_la=acc_la,
            recall_la=list(recall if recall_la is None else recall_la),
            final_balanced_accuracy_la=acc_la,
            la_prior=prior,
        )
        unlabeled = results.Report(
            balanced_accuracy=float(np.mean(recall)),
            accuracy=float(np.mean(recall)),
            recall=list(recall),
            precision=list(precision),
            predicted=[int(p) for p in predicted],
        )
        picks = results.Picks(
            rate=[1.0] * num_classes,
            predicted=[int(p) for p in predicted],
            picked=list(picked),
            correct=list(correct),
            precision=[c / n if n else 0.0 for c, n in zip(correct, picked, strict=True)],
            recall=[c / n if n else 0.0 for c, n in zip(correct, predicted, strict=True)],
            total_picked=sum(picked),
            total_precision=sum(correct) / max(sum(picked), 1),
        )
        return results.Generation(
            generation=g,
            temperature=None,
            labeled_size=sum(counts) + g * sum(picked),
            balanced_accuracy=acc,
            evals=[results.Eval(step=steps, balanced_accuracy=acc)],
            balanced_accuracy_la=acc_la,
            test=test,
            unlabeled=unlabeled,
            picks=picks,
            seconds=seconds,
        )

    return results.Results(
        args=dict(args or {}),
        class_names=list(class_names),
        labeled_counts=counts,
        sampling_rates=[1.0] * num_classes,
        balanced_accuracy=accuracies[-1],
        balanced_accuracy_la=las[-1],
        generations=[generation(g, *a) for g, a in enumerate(zip(accuracies, las, strict=True))],
    )


def write_results(folder, run) -> str:
    """Writes `run` (a `crest.results.Results`) as FOLDER/results.json in the bytes a run
    writes; returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, 'results.json')
    with open(path, 'w') as f:
        json.dump(run.to_json(), f, indent=1)
    return path


def tiny_config(workdir, **settings):
    """The Config of a tiny 2-generation CReST+ run on the data set registered as 'tiny'
    (e.g. `tiny()`) in `workdir`; `settings` change it."""
    from crest import config as config_lib

    tiny_settings = dict(
        workdir=str(workdir),
        dataset='tiny',
        imbalance=8,
        label_fraction=0.3,
        arch='cnn_small',
        generations=2,
        steps_per_generation=4,
        eval_every=2,
        batch_size=8,
        uratio=2,
        ema_warmup=True,
        seed=1,
    )
    return config_lib.Config(**{**tiny_settings, **settings})


def tiny_run(workdir, **settings):
    """Runs (or resumes) in this process `tiny_config(workdir, **settings)` on `tiny()`
    (about 10 s on 2 cores). Returns the Config."""
    import pytest

    from crest import loop
    from libml import datasets

    cfg = tiny_config(workdir, **settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(datasets.DATASETS, 'tiny', tiny())
        loop.run(cfg, log=lambda _: None)
    return cfg
