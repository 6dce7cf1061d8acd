"""Source loaders on files in the official formats, fold creation, TFRecords, pipelines."""

import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from libml import data, datasets, lt
from tests import fakes


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.RandomState(0)
    batches = [rng.randint(0, 10, 6).tolist() for _ in range(5)]
    fakes.write_cifar10_archive(str(tmp_path), batches, [3, 1, 4, 1])
    return str(tmp_path), np.concatenate(batches)


def test_cifar10_binary_archive_layout(cifar_dir):
    folder, labels = cifar_dir
    source = datasets.load_cifar10(folder)
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
    source = datasets.load_cifar10(str(extracted))
    np.testing.assert_array_equal(source.train_labels, labels)


def test_cifar100_uses_fine_label(tmp_path):
    labels = [17, 99, 0]
    (tmp_path / 'train.bin').write_bytes(fakes.cifar_records(labels, label_bytes=2))
    (tmp_path / 'test.bin').write_bytes(fakes.cifar_records([5], label_bytes=2))
    (tmp_path / 'fine_label_names.txt').write_text('\n'.join(f'c{i}' for i in range(100)))
    source = datasets.load_cifar100(str(tmp_path))
    np.testing.assert_array_equal(source.train_labels, labels)
    assert source.train_images[1, 2, 3, 0] == fakes.cifar_pixel(1, 0, 2, 3)


def test_cifar_errors_name_the_file(tmp_path):
    bad = tmp_path / 'cifar-10-binary.tar.gz'
    bad.write_bytes(b'not a tar file')
    with pytest.raises(datasets.DataError, match='cifar-10-binary.tar.gz'):
        datasets.load_cifar10(str(tmp_path))
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'data_batch_1.bin').write_bytes(b'x' * 100)
    with pytest.raises(datasets.DataError, match='data_batch_2.bin'):
        datasets.load_cifar10(str(other))


def test_fashion_mnist_idx_and_errors(tmp_path):
    (x_train, y_train), (x_test, _) = fakes.write_fashion_mnist(str(tmp_path), 3, 2)
    source = datasets.load_fashion_mnist(str(tmp_path))
    assert source.train_images.shape == (30, 28, 28, 1)
    np.testing.assert_array_equal(source.train_images[..., 0], x_train)
    np.testing.assert_array_equal(source.train_labels, y_train)
    np.testing.assert_array_equal(source.test_images[..., 0], x_test)
    assert source.class_names[9] == 'Ankle boot'

    (tmp_path / 't10k-labels-idx1-ubyte').write_bytes(b'\0\0\x08\x01\0\0\0\x09abc')
    with pytest.raises(datasets.DataError, match='t10k-labels-idx1-ubyte: header'):
        datasets.load_fashion_mnist(str(tmp_path))
    os.remove(tmp_path / 'train-images-idx3-ubyte.gz')
    with pytest.raises(datasets.DataError, match='train-images-idx3-ubyte'):
        datasets.load_fashion_mnist(str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(ValueError, match='cifar10lt'):
        datasets.get_dataset('mnist')


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A registered 10-class data set with N_1 = 20, read by the Fashion-MNIST loader."""
    src = tmp_path / 'src'
    monkeypatch.setitem(datasets.DATASETS, 'tiny', fakes.tiny_fashion_mnist(src, 25, 4, 20))
    return str(src)


def test_create_fold_files_and_ids(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    summary = data.create_fold('tiny', 10, 0.5, 1, out, tiny, log=lambda _: None)
    counts = lt.longtail_counts(20, 10, 10)
    assert summary['longtail'] == counts
    assert summary['labeled'] == lt.labeled_counts(counts, 0.5)
    assert sorted(os.listdir(out)) == sorted(
        ['counts.json', 'labeled.tfrecord', 'unlabeled.tfrecord', 'test.tfrecord']
    )
    source = datasets.load_fashion_mnist(tiny)
    for split in ('labeled', 'unlabeled'):
        records = data.read_records(os.path.join(out, f'{split}.tfrecord'))
        assert np.bincount(records.labels, minlength=10).tolist() == summary[split]
        # Ids index the source train split: image and label must match it.
        np.testing.assert_array_equal(records.images, source.train_images[records.ids])
        np.testing.assert_array_equal(records.labels, source.train_labels[records.ids])
    test = data.read_records(os.path.join(out, 'test.tfrecord'))
    np.testing.assert_array_equal(test.ids, np.arange(40))
    np.testing.assert_array_equal(test.images, source.test_images)


def test_class_order_relabels_so_that_other_classes_are_rare(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    summary = data.create_fold('tiny', 10, 0.5, 1, out, tiny, log=lambda _: None, class_order=3)
    assert summary['class_order'] == 3 and type(summary['class_order']) is int
    order = lt.class_order(10, 3)
    assert sorted(order) == list(range(10)) and list(order) != list(range(10))
    source = datasets.load_fashion_mnist(tiny)
    assert summary['class_names'] == [source.class_names[c] for c in order]
    # Label r is source class order[r], and rank 0 keeps the head's count.
    assert summary['longtail'] == lt.longtail_counts(20, 10, 10)
    for split in ('labeled', 'unlabeled', 'test'):
        records = data.read_records(os.path.join(out, f'{split}.tfrecord'))
        labels = (source.test_labels if split == 'test' else source.train_labels)[records.ids]
        np.testing.assert_array_equal(order[records.labels], labels)
    # Seed 0 is the source's order and leaves the fold's spec as before.
    np.testing.assert_array_equal(lt.class_order(10, 0), np.arange(10))
    assert 'class_order' not in data.fold_spec('tiny', 10, 0.5, 1)
    with pytest.raises(datasets.DataError, match='another fold'):
        data.ensure_fold('tiny', 10, 0.5, 1, out, tiny)
    with pytest.raises(ValueError, match='>= 0'):
        lt.class_order(10, -1)


def test_an_explicit_class_order_ranks_the_classes_as_listed(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    order = [6, 4, 2, 0, 9, 1, 3, 5, 7, 8]
    summary = data.create_fold('tiny', 10, 0.5, 1, out, tiny, log=lambda _: None, class_order=order)
    assert summary['class_order'] == order
    assert data.read_json(os.path.join(out, 'counts.json'))['class_order'] == order
    source = datasets.load_fashion_mnist(tiny)
    assert summary['class_names'][:2] == [source.class_names[6], source.class_names[4]]
    assert summary['class_names'] == [source.class_names[c] for c in order]
    assert summary['longtail'] == lt.longtail_counts(20, 10, 10)
    for split in ('labeled', 'unlabeled', 'test'):
        records = data.read_records(os.path.join(out, f'{split}.tfrecord'))
        labels = (source.test_labels if split == 'test' else source.train_labels)[records.ids]
        np.testing.assert_array_equal(np.asarray(order)[records.labels], labels)
    train = np.concatenate(
        [
            data.read_records(os.path.join(out, f'{s}.tfrecord')).ids
            for s in ('labeled', 'unlabeled')
        ]
    )
    # Rank 0, the head, is source class 6 with N_1 = 20 images; rank 9 is class 8.
    assert np.sum(source.train_labels[train] == 6) == 20
    assert np.sum(source.train_labels[train] == 8) == lt.longtail_counts(20, 10, 10)[-1]
    # The fold is reused for the same list (as counts.json gives it back), no other order.
    assert data.ensure_fold('tiny', 10, 0.5, 1, out, tiny, class_order=list(order)) == summary
    for other in (0, 3, order[::-1]):
        with pytest.raises(datasets.DataError, match='another fold'):
            data.ensure_fold('tiny', 10, 0.5, 1, out, tiny, class_order=other)


def test_fold_determinism_through_files(tiny, tmp_path):
    def ids(fold, name):
        out = str(tmp_path / name)
        data.create_fold('tiny', 10, 0.3, fold, out, tiny, log=lambda _: None)
        return data.read_records(os.path.join(out, 'labeled.tfrecord')).ids

    a, b, c = ids(1, 'a'), ids(1, 'b'), ids(2, 'c')
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ensure_fold_reuses_and_checks(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    first = data.ensure_fold('tiny', 10, 0.5, 1, out, tiny, log=lambda _: None)
    mtime = os.path.getmtime(os.path.join(out, 'labeled.tfrecord'))
    assert data.ensure_fold('tiny', 10, 0.5, 1, out, tiny) == first
    assert os.path.getmtime(os.path.join(out, 'labeled.tfrecord')) == mtime
    with pytest.raises(datasets.DataError, match='another fold'):
        data.ensure_fold('tiny', 10, 0.5, 2, out, tiny)


def test_records_roundtrip_and_corruption(tmp_path):
    rng = np.random.RandomState(0)
    records = data.Records(
        rng.randint(0, 256, (5, 8, 8, 3)).astype(np.uint8),
        np.array([0, 1, 2, 1, 0]),
        np.array([10, 11, 12, 13, 14]),
        np.array([0, 0, 1, 1, 0]),
        np.array([1, 1, 0.7, 0.9, 1], np.float32),
    )
    path = str(tmp_path / 'x.tfrecord')
    data.write_records(path, records)
    assert os.listdir(tmp_path) == ['x.tfrecord']  # No temporary file left behind.
    back = data.read_records(path)
    for field in ('images', 'labels', 'ids', 'pseudo', 'confidence'):
        np.testing.assert_allclose(getattr(back, field), getattr(records, field))

    with open(path, 'rb') as f:
        payload = f.read()
    with open(path, 'wb') as f:
        f.write(payload[: len(payload) - 30])
    with pytest.raises(datasets.DataError, match='x.tfrecord: corrupt'):
        data.read_records(path)
    with pytest.raises(datasets.DataError, match='missing.tfrecord: not found'):
        data.read_records(str(tmp_path / 'missing.tfrecord'))


_WRITE_SCRIPT = """
import sys
import numpy as np
from libml import data
records = data.Records(
    np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1), np.array([0, 1]),
    np.array([7, 8]), np.array([0, 1]), np.array([1, 0.5], np.float32))
print('RESULT ' + repr(data.write_records(sys.argv[1], records)['sha256']).replace("'", '"'))
"""


def test_the_same_records_are_written_as_the_same_bytes_in_any_process(tmp_path, monkeypatch):
    # Python's hash seed changes the order in which an Example's feature map is
    # serialized unless the writer sorts it.
    digests = set()
    for hash_seed in ('1', '2', '3'):
        monkeypatch.setenv('PYTHONHASHSEED', hash_seed)
        digests.add(fakes.run_python(_WRITE_SCRIPT, str(tmp_path / f'{hash_seed}.tfrecord')))
    assert len(digests) == 1


def test_train_dataset_shapes_and_ranges():
    rng = np.random.RandomState(0)
    labeled = data.Records(
        rng.randint(0, 256, (5, 28, 28, 1)).astype(np.uint8), np.arange(5), np.arange(5)
    )
    unlabeled = rng.randint(0, 256, (20, 28, 28, 1)).astype(np.uint8)
    views = data.Views('weak', ('weak', 'strong'))
    batch = next(iter(data.train_dataset(labeled, unlabeled, 8, 2, views)))
    assert batch['x_l'].shape == (8, 28, 28, 1)  # Fewer labeled images than a batch.
    assert batch['y_l'].shape == (8,)
    x_w, x_s = batch['x_u']
    assert x_w.shape == x_s.shape == (16, 28, 28, 1)
    for x in (batch['x_l'], x_w, x_s):
        assert -1.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0
    assert not np.allclose(x_w, x_s)


def test_train_dataset_builds_the_views_asked_for():
    # Flat images: a weak view (pad, crop, flip) of one is the image itself, so the views
    # of each unlabeled image can be matched.
    values = np.arange(0, 200, 10, dtype=np.uint8)
    unlabeled = np.broadcast_to(values[:, None, None, None], (20, 28, 28, 1)).copy()
    labeled = data.Records(unlabeled[:4], np.arange(4), np.arange(4))
    views = data.Views('weak', ('weak',) * 3)
    batch = next(iter(data.train_dataset(labeled, unlabeled, 4, 2, views, seed=1)))
    assert len(batch['x_u']) == 3
    first = batch['x_u'][0].numpy()
    assert len(set(first[:, 0, 0, 0].tolist())) == 8  # Eight different images...
    for view in batch['x_u'][1:]:
        np.testing.assert_array_equal(view.numpy(), first)  # ...the same in every view.

    labeled_only = data.train_dataset(labeled, unlabeled, 4, 2, data.Views('weak', ()))
    assert set(next(iter(labeled_only))) == {'x_l', 'y_l'}
    with pytest.raises(ValueError, match="unknown view 'blurred'"):
        data.train_dataset(labeled, unlabeled, 4, 2, data.Views('blurred', ()))


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

    monkeypatch.setattr(datasets.socket, 'create_connection', lambda *a, **k: Connection())
    from_tfds = datasets._from_tfds('cifar10', 'www.cs.toronto.edu', str(tmp_path / 'tfds'))
    from_archive = datasets.load_cifar10(folder)
    for field in ('train_images', 'train_labels', 'test_images', 'test_labels', 'class_names'):
        np.testing.assert_array_equal(getattr(from_tfds, field), getattr(from_archive, field))
    assert from_tfds.origin == 'tensorflow-datasets cifar10'


def test_resampled_labeled_batches_are_class_balanced_and_follow_the_seed():
    # Classes of 40, 8 and 2 images: drawn equally often all the same.
    labels = np.repeat([0, 1, 2], [40, 8, 2])
    images = (labels[:, None, None, None] * np.ones((1, 28, 28, 1))).astype(np.uint8)
    labeled = data.Records(images, labels, np.arange(50))

    def drawn(seed, batches=60):
        stream = data.train_dataset(
            labeled, images, 30, 1, data.Views('weak', ()), seed=seed, resample=True
        )
        return np.concatenate([b['y_l'].numpy() for b in stream.take(batches)])

    first = drawn(seed=3)
    counts = np.bincount(first, minlength=3)
    assert counts.sum() == 1800
    # Multinomial(1800, 1/3 each): std 20, so 600 +- 80 holds but for 1 run in 30,000.
    assert np.all(np.abs(counts - 600) < 80), counts
    np.testing.assert_array_equal(drawn(seed=3), first)
    assert not np.array_equal(drawn(seed=4), first)
    # Without re-sampling, classes come in their own proportions.
    plain = data.train_dataset(labeled, images, 50, 1, data.Views('weak', ()), seed=3)
    np.testing.assert_array_equal(np.bincount(next(iter(plain))['y_l'].numpy()), [40, 8, 2])


def test_resampled_stream_resumes_from_a_checkpoint(tmp_path):
    labels = np.repeat([0, 1, 2], [40, 8, 2])
    images = np.zeros((50, 28, 28, 1), np.uint8)
    labeled = data.Records(images, labels, np.arange(50))
    views = data.Views('weak', ('weak',))
    stream = data.train_dataset(labeled, images, 8, 1, views, seed=3, resample=True)
    iterator = iter(stream)
    next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / 'ckpt'))
    expected = [next(iterator)['y_l'].numpy() for _ in range(3)]
    restored = iter(stream)
    tf.train.Checkpoint(iterator=restored).restore(path)
    for batch in expected:
        np.testing.assert_array_equal(next(restored)['y_l'].numpy(), batch)


def test_writes_replace_a_planted_link_instead_of_following_it(tmp_path):
    victim = tmp_path / 'victim'
    victim.write_text('keep me')
    (tmp_path / 'args.json').symlink_to(victim)
    data.write_json(str(tmp_path / 'args.json'), {'a': 1})
    assert victim.read_text() == 'keep me'
    assert not (tmp_path / 'args.json').is_symlink()
    assert data.read_json(str(tmp_path / 'args.json')) == {'a': 1}
    assert sorted(os.listdir(tmp_path)) == ['args.json', 'victim']  # No temporary file left.


def test_temporary_files_left_by_a_crash_are_removed(tmp_path):
    (tmp_path / 'gen_00').mkdir()
    left = [tmp_path / 'results.json.tmp-x1y2', tmp_path / 'gen_00' / 'labeled.tfrecord.tmp-9']
    for path in left:
        path.write_text('')
    (tmp_path / 'gen_00' / 'picks.json').write_text('{}')
    # Another worker's copy of the run, beside ours on a shared disk, writing right now.
    (tmp_path / '.worker_1' / 'data').mkdir(parents=True)
    (tmp_path / '.worker_1' / 'data' / 'labeled.tfrecord.tmp-7').write_text('')
    removed = data.remove_temporary_files(str(tmp_path))
    assert sorted(removed) == sorted(str(p) for p in left)
    assert os.listdir(tmp_path / 'gen_00') == ['picks.json']
    assert os.listdir(tmp_path / '.worker_1' / 'data') == ['labeled.tfrecord.tmp-7']


def test_a_fold_file_replaced_or_cut_is_refused_by_a_checked_read(tiny, tmp_path):
    out = str(tmp_path / 'fold')
    summary = data.create_fold('tiny', 10, 0.5, 1, out, tiny, log=lambda _: None)
    unlabeled = data.read_split(out, 'unlabeled', summary)
    path = os.path.join(out, 'unlabeled.tfrecord')
    data.write_records(path, unlabeled.take(np.arange(len(unlabeled) - 1)))  # One record short.
    with pytest.raises(datasets.DataError, match='unlabeled.tfrecord: not the file counts.json'):
        data.read_split(out, 'unlabeled', summary)
    logs = []
    data.ensure_fold('tiny', 10, 0.5, 1, out, tiny, log=logs.append)
    assert any('rebuilding the fold' in line for line in logs)
    assert len(data.read_split(out, 'unlabeled', summary)) == len(unlabeled)


def test_darp_fold_is_the_first_images_of_each_class(tmp_path, monkeypatch):
    """DARP's protocol (here N_1 = 4 labeled, M_1 = 8 unlabeled, gamma 4): per class the
    first N_c images of the official order labeled, the next M_c unlabeled, whatever
    --label_fraction says; ids are the images' indices in the archive."""
    rng = np.random.RandomState(1)
    labels = rng.permutation(np.arange(150) % 10)
    fakes.write_cifar10_archive(str(tmp_path), np.split(labels, 5), [3, 1, 4, 1])
    tiny = datasets.DatasetInfo('tiny_darp', 10, (32, 32, 3), 4, datasets.load_cifar10, 8)
    monkeypatch.setitem(datasets.DATASETS, 'tiny_darp', tiny)
    n = lt.longtail_counts(4, 10, 4)
    m = lt.longtail_counts(8, 10, 4)
    assert n == [4, 3, 2, 2, 2, 1, 1, 1, 1, 1] and m == [8, 6, 5, 5, 4, 3, 3, 2, 2, 2]
    summaries = []
    for beta in (0.1, 0.5):
        out = str(tmp_path / f'fold_{beta}')
        summary = data.create_fold('tiny_darp', 4, beta, 1, out, str(tmp_path), log=lambda _: 0)
        summaries.append(summary)
        assert summary['labeled'] == n and summary['unlabeled'] == m
        assert summary['longtail'] == [a + b for a, b in zip(n, m, strict=True)]
        labeled = data.read_split(out, 'labeled', summary)
        unlabeled = data.read_split(out, 'unlabeled', summary)
        for c in range(10):
            members = np.flatnonzero(labels == c)
            assert sorted(labeled.ids[labeled.labels == c]) == members[: n[c]].tolist()
            assert (
                sorted(unlabeled.ids[unlabeled.labels == c]) == members[n[c] : n[c] + m[c]].tolist()
            )
        assert len(data.read_split(out, 'test', summary)) == 4
    assert summaries[0]['files'] == summaries[1]['files']  # the same bytes


def streamed_records(tmp_path, name, images, labels, ids):
    path = str(tmp_path / f'{name}.tfrecord')
    expected = data.write_records(path, data.Records(images, labels, ids))
    return data.read_records(path, expected, images=False)


def test_streamed_records_keep_their_columns_and_images_in_the_file(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 12, 12, 1), np.uint8)
    records = streamed_records(tmp_path, 'x', images, np.arange(30) % 3, np.arange(100, 130))
    assert records.streamed and records.images is None
    np.testing.assert_array_equal(records.ids, np.arange(100, 130))
    assert data.image_shape_of(records.path) == (12, 12, 1)
    batches = [b.numpy() for b in data.image_batches(records, 8)]
    assert [len(b) for b in batches] == [8, 8, 8, 6]
    np.testing.assert_array_equal(np.concatenate(batches), images)
    with pytest.raises(ValueError, match='streamed records are not taken'):
        records.take([0])


@pytest.mark.parametrize('resample', [False, True])
def test_a_streamed_train_dataset_sees_every_image_and_resumes_exactly(tmp_path, resample):
    # Each image is flat with its own value, so a weak view shows which image it is.
    values = np.arange(0, 240, 8, dtype=np.uint8)
    images = np.broadcast_to(values[:, None, None, None], (30, 12, 12, 1)).copy()
    labels = np.repeat([0, 1, 2], [20, 6, 4])
    labeled = streamed_records(tmp_path, 'labeled', images[:10], labels[:10] % 2, np.arange(10))
    unlabeled = streamed_records(tmp_path, 'unlabeled', images[10:], labels[10:], np.arange(20))
    views = data.Views('weak', ('weak', 'strong'))
    stream = data.train_dataset(
        labeled, [labeled.path, unlabeled.path], 5, 2, views, seed=2, resample=resample
    )
    iterator = iter(stream)
    first = [next(iterator) for _ in range(6)]  # 30 labeled and 60 unlabeled draws.

    def seen(x):
        return set(np.round((x[:, 0, 0, 0] + 1) * 127.5).astype(int).tolist())

    assert seen(np.concatenate([b['x_u'][0] for b in first])) == set(values.tolist())
    if not resample:
        assert seen(np.concatenate([b['x_l'] for b in first])) == set(values[:10].tolist())
    assert first[0]['x_u'][1].shape == (10, 12, 12, 1)
    path = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / 'ckpt'))
    expected = [next(iterator) for _ in range(3)]
    restored = iter(stream)
    tf.train.Checkpoint(iterator=restored).restore(path)
    for batch in expected:
        again = next(restored)
        np.testing.assert_array_equal(again['x_l'].numpy(), batch['x_l'].numpy())
        np.testing.assert_array_equal(again['x_u'][1].numpy(), batch['x_u'][1].numpy())


def test_a_streamed_export_holds_the_originals_and_the_relabeled_picks(tmp_path):
    rng = np.random.default_rng(1)
    original = streamed_records(
        tmp_path,
        'labeled',
        rng.integers(0, 256, (6, 8, 8, 3), np.uint8),
        np.arange(6) % 2,
        np.arange(6),
    )
    pool = rng.integers(0, 256, (20, 8, 8, 3), np.uint8)
    unlabeled = streamed_records(tmp_path, 'unlabeled', pool, np.zeros(20, int), np.arange(6, 26))
    picks = np.array([13, 2, 7, 19])  # As selected: grouped by class, not by position.
    labels, confidence = np.array([1, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    path = str(tmp_path / 'export.tfrecord')
    written = data.export_streamed(path, original, unlabeled, picks, labels, confidence, seed=0)
    exported = data.read_records(path, written)
    assert written['records'] == 10
    pseudo = exported.pseudo == 1
    # The originals in their order, the picks in the unlabeled file's order.
    np.testing.assert_array_equal(exported.ids[~pseudo], original.ids)
    np.testing.assert_array_equal(exported.ids[pseudo], unlabeled.ids[[2, 7, 13, 19]])
    np.testing.assert_array_equal(exported.labels[pseudo], [0, 0, 1, 1])
    np.testing.assert_allclose(exported.confidence[pseudo], [0.8, 0.7, 0.9, 0.6])
    np.testing.assert_array_equal(exported.images[pseudo], pool[[2, 7, 13, 19]])
    # Mixed, in an order that follows the seed.
    assert np.flatnonzero(pseudo)[0] < np.flatnonzero(~pseudo)[-1]  # Not simply appended.
    orders = set()
    for seed in range(4):
        data.export_streamed(path, original, unlabeled, picks, labels, confidence, seed=seed)
        orders.add(tuple(data.read_records(path).pseudo))
    assert len(orders) > 1
