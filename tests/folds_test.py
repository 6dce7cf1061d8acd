"""Folds: building one from a data set, its files and ids, class orders, reuse and the
checks that rebuild a changed fold; on a synthetic data set (nothing to read) and, for
DARP's split, a fake CIFAR-10 archive."""

import os

import numpy as np
import pytest

from libml import folds, lt, records
from libml.datasets import cifar
from tests import fakes


def quiet(_):
    pass


@pytest.fixture
def tiny():
    """A 10-class data set with N_1 = 20 of 25 train images per class, 4 test ones."""
    return fakes.tiny(head_count=20, train_per_class=25, test_per_class=4)


def create(dataset, out, **settings):
    return folds.create_fold(dataset, folds.FoldSpec(**settings), out, log=quiet)


def ensure(dataset, out, log=quiet, **settings):
    return folds.ensure_fold(dataset, folds.FoldSpec(**settings), out, log=log)


def test_create_fold_files_and_ids(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    summary = create(tiny, out, imbalance=10, label_fraction=0.5)
    counts = lt.longtail_counts(20, 10, 10)
    assert summary['longtail'] == counts
    assert summary['labeled'] == lt.labeled_counts(counts, 0.5)
    assert sorted(os.listdir(out)) == sorted(
        ['counts.json', 'labeled.tfrecord', 'unlabeled.tfrecord', 'test.tfrecord']
    )
    assert records.read_json(os.path.join(out, folds.COUNTS_FILE)) == summary
    source = tiny.load(None)
    for split in ('labeled', 'unlabeled'):
        examples = records.read_records(os.path.join(out, f'{split}.tfrecord'))
        assert np.bincount(examples.labels, minlength=10).tolist() == summary[split]
        # Ids index the source train split: image and label must match it.
        np.testing.assert_array_equal(examples.images, source.train_images[examples.ids])
        np.testing.assert_array_equal(examples.labels, source.train_labels[examples.ids])
    test = records.read_records(os.path.join(out, 'test.tfrecord'))
    np.testing.assert_array_equal(test.ids, np.arange(40))
    np.testing.assert_array_equal(test.images, source.test_images)


def test_class_order_relabels_so_that_other_classes_are_rare(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    summary = create(tiny, out, imbalance=10, label_fraction=0.5, class_order=3)
    assert summary['class_order'] == 3 and type(summary['class_order']) is int
    order = lt.class_order(10, 3)
    assert sorted(order) == list(range(10)) and list(order) != list(range(10))
    source = tiny.load(None)
    assert summary['class_names'] == [source.class_names[c] for c in order]
    # Label r is source class order[r], and rank 0 keeps the head's count.
    assert summary['longtail'] == lt.longtail_counts(20, 10, 10)
    for split in ('labeled', 'unlabeled', 'test'):
        examples = records.read_records(os.path.join(out, f'{split}.tfrecord'))
        labels = (source.test_labels if split == 'test' else source.train_labels)[examples.ids]
        np.testing.assert_array_equal(order[examples.labels], labels)
    # Seed 0 is the source's order and leaves the fold's spec as before.
    np.testing.assert_array_equal(lt.class_order(10, 0), np.arange(10))
    assert 'class_order' not in tiny.stored_spec(folds.FoldSpec(10, 0.5, 1))
    with pytest.raises(records.DataError, match='another fold'):
        ensure(tiny, out, imbalance=10, label_fraction=0.5)
    with pytest.raises(ValueError, match='>= 0'):
        lt.class_order(10, -1)


def test_an_explicit_class_order_ranks_the_classes_as_listed(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    order = [6, 4, 2, 0, 9, 1, 3, 5, 7, 8]
    summary = create(tiny, out, imbalance=10, label_fraction=0.5, class_order=order)
    assert summary['class_order'] == order
    assert records.read_json(os.path.join(out, 'counts.json'))['class_order'] == order
    source = tiny.load(None)
    assert summary['class_names'][:2] == [source.class_names[6], source.class_names[4]]
    assert summary['class_names'] == [source.class_names[c] for c in order]
    assert summary['longtail'] == lt.longtail_counts(20, 10, 10)
    for split in ('labeled', 'unlabeled', 'test'):
        examples = records.read_records(os.path.join(out, f'{split}.tfrecord'))
        labels = (source.test_labels if split == 'test' else source.train_labels)[examples.ids]
        np.testing.assert_array_equal(np.asarray(order)[examples.labels], labels)
    train = np.concatenate(
        [
            records.read_records(os.path.join(out, f'{s}.tfrecord')).ids
            for s in ('labeled', 'unlabeled')
        ]
    )
    # Rank 0, the head, is source class 6 with N_1 = 20 images; rank 9 is class 8.
    assert np.sum(source.train_labels[train] == 6) == 20
    assert np.sum(source.train_labels[train] == 8) == lt.longtail_counts(20, 10, 10)[-1]
    # The fold is reused for the same list (as counts.json gives it back), no other order.
    again = ensure(tiny, out, imbalance=10, label_fraction=0.5, class_order=list(order))
    assert again == summary
    for other in (0, 3, order[::-1]):
        with pytest.raises(records.DataError, match='another fold'):
            ensure(tiny, out, imbalance=10, label_fraction=0.5, class_order=other)


def test_fold_determinism_through_files(tiny, tmp_path):
    def ids(fold, name):
        out = str(tmp_path / name)
        create(tiny, out, imbalance=10, label_fraction=0.3, fold=fold)
        return records.read_records(os.path.join(out, 'labeled.tfrecord')).ids

    a, b, c = ids(1, 'a'), ids(1, 'b'), ids(2, 'c')
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ensure_fold_reuses_and_checks(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    first = ensure(tiny, out, imbalance=10, label_fraction=0.5)
    mtime = os.path.getmtime(os.path.join(out, 'labeled.tfrecord'))
    assert ensure(tiny, out, imbalance=10, label_fraction=0.5) == first
    assert os.path.getmtime(os.path.join(out, 'labeled.tfrecord')) == mtime
    with pytest.raises(records.DataError, match='another fold'):
        ensure(tiny, out, imbalance=10, label_fraction=0.5, fold=2)


def test_a_fold_file_replaced_or_cut_is_refused_by_a_checked_read(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    summary = create(tiny, out, imbalance=10, label_fraction=0.5)
    unlabeled = folds.read_split(out, 'unlabeled', summary)
    path = os.path.join(out, 'unlabeled.tfrecord')
    records.write_records(path, unlabeled.take(np.arange(len(unlabeled) - 1)))  # One short.
    with pytest.raises(records.DataError, match='unlabeled.tfrecord: not the file counts.json'):
        folds.read_split(out, 'unlabeled', summary)
    logs = []
    ensure(tiny, out, logs.append, imbalance=10, label_fraction=0.5)
    assert any('rebuilding the fold' in line for line in logs)
    assert len(folds.read_split(out, 'unlabeled', summary)) == len(unlabeled)


def test_a_fold_of_an_earlier_version_without_digests_is_rebuilt(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    summary = create(tiny, out, imbalance=10, label_fraction=0.5)
    old = {k: v for k, v in summary.items() if k != 'files'}
    records.write_json(os.path.join(out, folds.COUNTS_FILE), old)
    logs = []
    assert ensure(tiny, out, logs.append, imbalance=10, label_fraction=0.5) == summary
    assert any('records no digests' in line and 'rebuilding' in line for line in logs)


def test_the_spec_refuses_what_no_data_set_takes():
    for settings, message in (
        (dict(label_fraction=1), r'--label_fraction must be in \(0, 1\) \(1 would leave'),
        (dict(fold=0), '--fold must be >= 1, got 0'),
        (dict(image_size=-1), '--image_size must be >= 0'),
        (dict(bad_images='ignore'), "--bad_images must be one of \\['stop', 'skip'\\]"),
    ):
        with pytest.raises(ValueError, match=message):
            folds.FoldSpec(**settings)


def test_the_image_shape_of_a_fold_is_recorded_or_the_data_sets(tiny):
    assert folds.image_shape_of_fold({'image_shape': [12, 12, 3]}, tiny) == (12, 12, 3)
    assert folds.image_shape_of_fold({}, tiny) == (28, 28, 1)


def test_darp_fold_is_the_first_images_of_each_class(tmp_path):
    """DARP's protocol (here N_1 = 4 labeled, M_1 = 8 unlabeled, gamma 4): per class the
    first N_c images of the official order labeled, the next M_c unlabeled, whatever
    --label_fraction says; ids are the images' indices in the archive."""
    rng = np.random.RandomState(1)
    labels = rng.permutation(np.arange(150) % 10)
    fakes.write_cifar10_archive(str(tmp_path), np.split(labels, 5), [3, 1, 4, 1])
    tiny = cifar.Cifar('tiny_darp', 10, head_count=4, darp_unlabeled_head=8)
    n = lt.longtail_counts(4, 10, 4)
    m = lt.longtail_counts(8, 10, 4)
    assert n == [4, 3, 2, 2, 2, 1, 1, 1, 1, 1] and m == [8, 6, 5, 5, 4, 3, 3, 2, 2, 2]
    summaries = []
    for beta in (0.1, 0.5):
        out = str(tmp_path / f'fold_{beta}')
        summary = create(tiny, out, imbalance=4, label_fraction=beta, data_dir=str(tmp_path))
        summaries.append(summary)
        assert summary['labeled'] == n and summary['unlabeled'] == m
        assert summary['longtail'] == [a + b for a, b in zip(n, m, strict=True)]
        labeled = folds.read_split(out, 'labeled', summary)
        unlabeled = folds.read_split(out, 'unlabeled', summary)
        for c in range(10):
            members = np.flatnonzero(labels == c)
            assert sorted(labeled.ids[labeled.labels == c]) == members[: n[c]].tolist()
            assert (
                sorted(unlabeled.ids[unlabeled.labels == c]) == members[n[c] : n[c] + m[c]].tolist()
            )
        assert len(folds.read_split(out, 'test', summary)) == 4
    assert summaries[0]['files'] == summaries[1]['files']  # the same bytes
