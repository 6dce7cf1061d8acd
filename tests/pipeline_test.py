"""The tf.data pipelines: views, class-balanced re-sampling, streams from files, and
resuming from an iterator's checkpoint."""

import numpy as np
import pytest
import tensorflow as tf

from libml import pipeline, records
from tests import fakes


def test_train_dataset_shapes_and_ranges():
    rng = np.random.RandomState(0)
    labeled = records.Records(
        rng.randint(0, 256, (5, 28, 28, 1)).astype(np.uint8), np.arange(5), np.arange(5)
    )
    unlabeled = rng.randint(0, 256, (20, 28, 28, 1)).astype(np.uint8)
    views = pipeline.Views('weak', ('weak', 'strong'))
    batch = next(iter(pipeline.train_dataset(labeled, unlabeled, 8, 2, views)))
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
    labeled = records.Records(unlabeled[:4], np.arange(4), np.arange(4))
    views = pipeline.Views('weak', ('weak',) * 3)
    batch = next(iter(pipeline.train_dataset(labeled, unlabeled, 4, 2, views, seed=1)))
    assert len(batch['x_u']) == 3
    first = batch['x_u'][0].numpy()
    assert len(set(first[:, 0, 0, 0].tolist())) == 8  # Eight different images...
    for view in batch['x_u'][1:]:
        np.testing.assert_array_equal(view.numpy(), first)  # ...the same in every view.

    labeled_only = pipeline.train_dataset(labeled, unlabeled, 4, 2, pipeline.Views('weak', ()))
    assert set(next(iter(labeled_only))) == {'x_l', 'y_l'}
    with pytest.raises(ValueError, match="unknown view 'blurred'"):
        pipeline.train_dataset(labeled, unlabeled, 4, 2, pipeline.Views('blurred', ()))


def test_resampled_labeled_batches_are_class_balanced_and_follow_the_seed():
    # Classes of 40, 8 and 2 images: drawn equally often all the same.
    labels = np.repeat([0, 1, 2], [40, 8, 2])
    images = (labels[:, None, None, None] * np.ones((1, 28, 28, 1))).astype(np.uint8)
    labeled = records.Records(images, labels, np.arange(50))

    def drawn(seed, batches=60):
        stream = pipeline.train_dataset(
            labeled, images, 30, 1, pipeline.Views('weak', ()), seed=seed, resample=True
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
    plain = pipeline.train_dataset(labeled, images, 50, 1, pipeline.Views('weak', ()), seed=3)
    np.testing.assert_array_equal(np.bincount(next(iter(plain))['y_l'].numpy()), [40, 8, 2])


def test_resampled_stream_resumes_from_a_checkpoint(tmp_path):
    labels = np.repeat([0, 1, 2], [40, 8, 2])
    images = np.zeros((50, 28, 28, 1), np.uint8)
    labeled = records.Records(images, labels, np.arange(50))
    views = pipeline.Views('weak', ('weak',))
    stream = pipeline.train_dataset(labeled, images, 8, 1, views, seed=3, resample=True)
    iterator = iter(stream)
    next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / 'ckpt'))
    expected = [next(iterator)['y_l'].numpy() for _ in range(3)]
    restored = iter(stream)
    tf.train.Checkpoint(iterator=restored).restore(path)
    for batch in expected:
        np.testing.assert_array_equal(next(restored)['y_l'].numpy(), batch)


def test_streamed_records_keep_their_columns_and_images_in_the_file(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 12, 12, 1), np.uint8)
    examples = fakes.streamed_records(tmp_path, 'x', images, np.arange(30) % 3, np.arange(100, 130))
    assert examples.streamed and examples.images is None
    np.testing.assert_array_equal(examples.ids, np.arange(100, 130))
    assert records.image_shape_of(examples.path) == (12, 12, 1)
    batches = [b.numpy() for b in pipeline.image_batches(examples, 8)]
    assert [len(b) for b in batches] == [8, 8, 8, 6]
    np.testing.assert_array_equal(np.concatenate(batches), images)
    with pytest.raises(ValueError, match='streamed records are not taken'):
        examples.take([0])


@pytest.mark.parametrize('resample', [False, True])
def test_a_streamed_train_dataset_sees_every_image_and_resumes_exactly(tmp_path, resample):
    # Each image is flat with its own value, so a weak view shows which image it is.
    values = np.arange(0, 240, 8, dtype=np.uint8)
    images = np.broadcast_to(values[:, None, None, None], (30, 12, 12, 1)).copy()
    labels = np.repeat([0, 1, 2], [20, 6, 4])
    labeled = fakes.streamed_records(
        tmp_path, 'labeled', images[:10], labels[:10] % 2, np.arange(10)
    )
    unlabeled = fakes.streamed_records(
        tmp_path, 'unlabeled', images[10:], labels[10:], np.arange(20)
    )
    views = pipeline.Views('weak', ('weak', 'strong'))
    stream = pipeline.train_dataset(
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
