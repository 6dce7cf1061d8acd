"""The data sets: every registered one implements the interface, the synthetic one
builds a fold from nothing, and the sources' loaders read the official file formats
(written by the tests) or tensorflow-datasets in the same order."""

import inspect
import os
import tarfile

import numpy as np
import pytest

from libml import datasets, folds, lt, records
from libml.datasets import base, longtail, synthetic, tfds_source
from tests import fakes

CIFAR10 = datasets.get('cifar10lt')


def test_every_registered_data_set_implements_the_interface(tmp_path):
    assert set(datasets.DATASETS) >= {
        'cifar10lt',
        'cifar100lt',
        'fashion_mnist_lt',
        'cifar10_darp',
        'folder',
        'npz',
        'imagenet127',
        'synthetic_lt',
    }
    spec = folds.FoldSpec(data_dir=str(tmp_path))
    for name, dataset in datasets.DATASETS.items():
        assert isinstance(dataset, base.Dataset), name
        assert not inspect.isabstract(type(dataset)), name
        assert dataset.name == name and datasets.get(name) is dataset
        assert dataset.num_classes is None or dataset.num_classes >= 2, name
        shape = dataset.image_shape
        assert shape is None or (len(shape) == 3 and shape[-1] in (1, 3)), name
        names = dataset.class_names
        assert names is None or len(names) == dataset.num_classes, name
        dataset.check(spec)  # The default settings, with a data folder, are taken.
        stored = dataset.stored_spec(spec)
        assert next(iter(stored.items())) == ('dataset', name), name
        how = dataset.describe(spec)
        assert how and '\n' not in how, name
        assert all('=' in part for part in dataset.folder_name_parts(str(tmp_path))), name
    assert datasets.long_tailed() == [
        n for n, d in datasets.DATASETS.items() if isinstance(d, longtail.LongTailed)
    ]


def test_unknown_dataset():
    with pytest.raises(ValueError, match='cifar10lt'):
        datasets.get('mnist')


@pytest.mark.parametrize(
    'name,settings,message',
    [
        ('cifar10lt', dict(imbalance=6000), r'--imbalance must be in \[1, 5000\] for cifar10lt'),
        ('cifar10lt', dict(image_size=32), '--image_size must be 0 for cifar10lt'),
        ('cifar100lt', dict(class_order=[1, 0]), '--class_order must be a permutation of 0..99'),
        ('cifar10_darp', dict(fold=2), '--fold must be 1 for cifar10_darp: its split is fixed'),
        ('synthetic_lt', dict(imbalance=101), r'--imbalance must be in \[1, 100\]'),
        ('folder', dict(), '--data_dir must be set for --dataset=folder'),
        ('npz', dict(data_dir='/no/such.npz'), '--data_dir must be an existing folder or file'),
        ('npz', dict(data_dir='/', class_order=2), '--class_order must be 0 for npz'),
        ('npz', dict(data_dir='/', fold=3), '--fold must be 1 for npz'),
        ('imagenet127', dict(), '--data_dir must be set for --dataset=imagenet127'),
        ('imagenet127', dict(data_dir='/', class_order=[1, 0]), '--class_order must be 0 for'),
    ],
)
def test_each_data_set_refuses_the_settings_it_cannot_take(name, settings, message):
    with pytest.raises(ValueError, match=message) as e:
        datasets.get(name).check(folds.FoldSpec(**settings))
    assert '\n' not in str(e.value)


def test_the_analytic_prior_needs_a_synthetic_long_tail():
    spec = folds.FoldSpec(data_dir='/')
    datasets.get('cifar10lt').check(spec, class_prior='analytic')
    with pytest.raises(ValueError, match="--class_prior must be 'labeled' for imagenet127"):
        datasets.get('imagenet127').check(spec, class_prior='analytic')


def test_the_synthetic_data_set_builds_a_fold_from_nothing(tmp_path):
    dataset = datasets.get('synthetic_lt')
    spec = folds.FoldSpec(imbalance=10, label_fraction=0.2)
    summary = folds.ensure_fold(dataset, spec, str(tmp_path / 'a'), log=lambda _: None)
    counts = lt.longtail_counts(100, 5, 10)
    assert summary['longtail'] == counts and summary['labeled'] == lt.labeled_counts(counts, 0.2)
    assert summary['test'] == [20] * 5
    assert summary['class_names'] == list(dataset.class_names)
    test = folds.read_split(str(tmp_path / 'a'), 'test', summary)
    assert test.images.shape == (100, 16, 16, 3) and test.images.dtype == np.uint8
    # Each class is its own gray level: the mean of an image tells its class.
    means = test.images.reshape(len(test), -1).mean(axis=1)
    levels = np.array([means[test.labels == c].mean() for c in range(5)])
    assert np.all(np.diff(levels) > 30)
    nearest = np.abs(means[:, None] - levels[None]).argmin(axis=1)
    np.testing.assert_array_equal(nearest, test.labels)
    # The same images on every build; another seed, other images.
    again = folds.create_fold(dataset, spec, str(tmp_path / 'b'), log=lambda _: None)
    assert again['files'] == summary['files']
    other = synthetic.Synthetic('other', seed=1).load(None)
    assert not np.array_equal(other.train_images, dataset.load(None).train_images)


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.RandomState(0)
    batches = [rng.randint(0, 10, 6).tolist() for _ in range(5)]
    fakes.write_cifar10_archive(str(tmp_path), batches, [3, 1, 4, 1])
    return str(tmp_path), np.concatenate(batches)


def test_cifar10_binary_archive_layout(cifar_dir):
    folder, labels = cifar_dir
    source = CIFAR10.load(folder)
    assert source.train_images.shape == (30, 32, 32, 3)
    assert source.train_images.dtype == np.uint8
    np.testing.assert_array_equal(source.train_labels, labels)
    np.testing.assert_array_equal(source.test_labels, [3, 1, 4, 1])
    # HWC pixel (row, col, channel) of image i must be the CHW byte (channel, row, col).
    for i, r, c, ch in [(0, 0, 0, 0), (7, 5, 31, 2), (29, 31, 4, 1)]:
        assert source.train_images[i, r, c, ch] == fakes.cifar_pixel(i, ch, r, c)
    assert source.test_images[2, 3, 9, 1] == fakes.cifar_pixel(10_002, 1, 3, 9)
    assert source.class_names[3] == 'name3'


def test_cifar10_extracted_files(cifar_dir, tmp_path):
    folder, labels = cifar_dir
    extracted = tmp_path / 'extracted'
    with tarfile.open(os.path.join(folder, 'cifar-10-binary.tar.gz')) as tar:
        tar.extractall(extracted, filter='data')
    source = CIFAR10.load(str(extracted))
    np.testing.assert_array_equal(source.train_labels, labels)


def test_cifar100_uses_fine_label(tmp_path):
    labels = [17, 99, 0]
    (tmp_path / 'train.bin').write_bytes(fakes.cifar_records(labels, label_bytes=2))
    (tmp_path / 'test.bin').write_bytes(fakes.cifar_records([5, 6], label_bytes=2))
    (tmp_path / 'fine_label_names.txt').write_text('\n'.join(f'c{i}' for i in range(100)))
    source = datasets.get('cifar100lt').load(str(tmp_path))
    np.testing.assert_array_equal(source.train_labels, labels)
    assert source.train_images[1, 2, 3, 0] == fakes.cifar_pixel(1, 0, 2, 3)


def test_cifar_errors_name_the_file(tmp_path):
    bad = tmp_path / 'cifar-10-binary.tar.gz'
    bad.write_bytes(b'not a tar file')
    with pytest.raises(records.DataError, match='cifar-10-binary.tar.gz'):
        CIFAR10.load(str(tmp_path))
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'data_batch_1.bin').write_bytes(b'x' * 100)
    with pytest.raises(records.DataError, match='data_batch_2.bin'):
        CIFAR10.load(str(other))


def test_fashion_mnist_idx_and_errors(tmp_path):
    (x_train, y_train), (x_test, _) = fakes.write_fashion_mnist(str(tmp_path), 3, 2)
    source = datasets.get('fashion_mnist_lt').load(str(tmp_path))
    assert source.train_images.shape == (30, 28, 28, 1)
    np.testing.assert_array_equal(source.train_images[..., 0], x_train)
    np.testing.assert_array_equal(source.train_labels, y_train)
    np.testing.assert_array_equal(source.test_images[..., 0], x_test)
    assert source.class_names[9] == 'Ankle boot'

    (tmp_path / 't10k-labels-idx1-ubyte').write_bytes(b'\0\0\x08\x01\0\0\0\x09abc')
    with pytest.raises(records.DataError, match='t10k-labels-idx1-ubyte: header'):
        datasets.get('fashion_mnist_lt').load(str(tmp_path))
    os.remove(tmp_path / 'train-images-idx3-ubyte.gz')
    with pytest.raises(records.DataError, match='train-images-idx3-ubyte'):
        datasets.get('fashion_mnist_lt').load(str(tmp_path))


def test_cifar_from_tensorflow_datasets_keeps_the_official_order(cifar_dir, tmp_path, monkeypatch):
    """tensorflow-datasets' own CIFAR-10 builder, fed the archive instead of a download:
    whichever way CIFAR comes in, the same index is the same image."""
    tfds = pytest.importorskip('tensorflow_datasets')
    folder, _ = cifar_dir
    extracted = tmp_path / 'extracted'
    with tarfile.open(os.path.join(folder, 'cifar-10-binary.tar.gz')) as tar:
        tar.extractall(extracted, filter='data')
    monkeypatch.setattr(
        tfds.download.DownloadManager, 'download_and_extract', lambda self, url: str(extracted)
    )

    class Connection:  # The host check before a download, answered offline.
        def close(self):
            pass

    monkeypatch.setattr(tfds_source.socket, 'create_connection', lambda *a, **k: Connection())
    from_tfds = tfds_source.load('cifar10', 'www.cs.toronto.edu', str(tmp_path / 'tfds'))
    from_archive = CIFAR10.load(folder)
    for field in ('train_images', 'train_labels', 'test_images', 'test_labels', 'class_names'):
        np.testing.assert_array_equal(getattr(from_tfds, field), getattr(from_archive, field))
    assert from_tfds.origin == 'tensorflow-datasets cifar10'


def test_a_label_fraction_that_rounds_a_class_up_past_twice_its_share_is_warned():
    """N = 50, 20, 4 at beta = 0.1: ceil(5) = 5, ceil(2) = 2, ceil(0.4) = 1, over twice
    0.4: the smallest class is named; at beta = 0.3 (ceil(1.2) = 2) nothing is."""
    logs = []
    longtail.warn_rounded_up([50, 20, 4], 0.1, ['a', 'b', 'c'], logs.append)
    assert logs == [
        'warning: --label_fraction=0.1 rounds the labeled count of 1 class(es) up to over '
        'twice beta * N_l: c 1 (0.4 implied); the labeled class distribution (the prior of '
        'the rates mu) is flatter than the long tail'
    ]
    logs.clear()
    longtail.warn_rounded_up([50, 20, 4], 0.3, ['a', 'b', 'c'], logs.append)
    assert logs == []
