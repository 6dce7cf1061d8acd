"""The tf.data pipelines that train on a fold: augmented views of labeled and unlabeled
images, in memory or streamed from TFRecord files, and the images in order for
prediction. Images stay uint8 in memory and become float in [-1, 1] per batch.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from libml import augment, records


def to_float(images):
    return tf.cast(images, tf.float32) / 127.5 - 1.0


@dataclasses.dataclass(frozen=True)
class Views:
    """What an algorithm's train step reads: the augmentation of the labeled images, and
    one augmentation per view of each unlabeled image (names in `augment.AUGMENTATIONS`).

    E.g. FixMatch: Views('weak', ('weak', 'strong')); MixMatch with K = 2:
    Views('weak', ('weak', 'weak')); a supervised baseline: Views('weak', ()).
    """

    labeled: str = 'weak'
    unlabeled: tuple[str, ...] = ()


STREAM_BUFFER = 10_000  # Records a stream's shuffle buffer holds (encoded).


def _class_balanced(labeled: records.Records, seed: int) -> tf.data.Dataset:
    """Endless (image, label) pairs, each class drawn with the same probability, each
    class's images in a reshuffled cycle."""
    classes = np.unique(labeled.labels)
    per_class = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(labeled.labels == c)
        if labeled.streamed:
            one_class = (
                tf.data.TFRecordDataset(labeled.path)
                .map(records.parse_image_label)
                .filter(lambda _, y, c=c: tf.equal(y, c))
            )
        else:
            one_class = tf.data.Dataset.from_tensor_slices(
                (labeled.images[members], labeled.labels[members])
            )
        per_class.append(
            one_class.shuffle(min(len(members), STREAM_BUFFER), seed=seed + i).repeat()
        )
    weights = [1.0 / len(classes)] * len(classes)
    return tf.data.Dataset.sample_from_datasets(per_class, weights, seed=seed)


def train_dataset(
    labeled: records.Records,
    unlabeled_images: np.ndarray | list[str],
    batch_size: int,
    uratio: int,
    views: Views,
    seed: int = 0,
    resample: bool = False,
) -> tf.data.Dataset:
    """An endless stream of the batches `views` asks for, as dicts:

    x_l, y_l: `batch_size` labeled images in their view, and their labels;
    x_u: a tuple with one batch per unlabeled view, each of the same `batch_size * uratio`
      unlabeled images (absent when `views.unlabeled` is empty).

    Images come from memory (`labeled.images`, the `unlabeled_images` array, each fully
    reshuffled every epoch) or are streamed from TFRecord files (streamed `labeled`,
    a list of files for the unlabeled ones) through a shuffle buffer of
    STREAM_BUFFER encoded records, which then sits in the iterator's checkpoints.

    With `resample`, labeled images are drawn class-balanced (re-sampling, RS): every
    class equally often, i.e. each image with probability inversely proportional to its
    class's size.

    Every random draw follows `seed`: the orders (seeded shuffles and re-sampling) and
    each image's augmentation, whose stateless seed is (seed, stream, position in the
    stream). The stream is the same on every run, and one restored from a checkpoint of
    its iterator continues exactly where it stopped.
    """
    for name in (views.labeled, *views.unlabeled):
        if name not in augment.AUGMENTATIONS:
            raise ValueError(f'unknown view {name!r}; known: {", ".join(augment.AUGMENTATIONS)}')
    if len(labeled) < batch_size:
        # Repeat before shuffling so small labeled sets still fill whole batches.
        reps = -(-batch_size // len(labeled))
    else:
        reps = 1
    labeled_aug = augment.AUGMENTATIONS[views.labeled]
    unlabeled_augs = [augment.AUGMENTATIONS[name] for name in views.unlabeled]
    shape = records.image_shape_of(labeled.path) if labeled.streamed else labeled.images.shape[1:]

    def decoded(x):
        """A streamed image is decoded after the shuffle, which holds it encoded."""
        if x.dtype != tf.string:
            return x
        return tf.ensure_shape(records.decode(x, channels=shape[-1]), shape)

    def element_seed(stream, index):
        return tf.stack([tf.constant(2 * seed + stream, tf.int64), index])

    def labeled_view(index, example):
        x, y = example
        return labeled_aug(to_float(decoded(x)), element_seed(0, index)), y

    def unlabeled_views(index, x):
        x = to_float(decoded(x))
        seeds = tf.random.experimental.stateless_split(element_seed(1, index), len(unlabeled_augs))
        return tuple(aug(x, seeds[v]) for v, aug in enumerate(unlabeled_augs))

    options = tf.data.Options()
    # Nothing in the pipeline may hold state outside the iterator's checkpoint.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.FAIL
    if resample:
        ds_l = _class_balanced(labeled, seed)
    elif labeled.streamed:
        ds_l = (
            tf.data.TFRecordDataset(labeled.path)
            .repeat(reps)
            .shuffle(min(len(labeled) * reps, STREAM_BUFFER), seed=seed)
            .repeat()
            .map(records.parse_image_label)
        )
    else:
        ds_l = (
            tf.data.Dataset.from_tensor_slices((labeled.images, labeled.labels))
            .repeat(reps)
            .shuffle(len(labeled) * reps, seed=seed)
            .repeat()
        )
    ds_l = (
        ds_l.enumerate()
        .map(labeled_view, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
    )
    if not unlabeled_augs:
        ds = ds_l.map(lambda x, y: dict(x_l=x, y_l=y))
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
    if isinstance(unlabeled_images, np.ndarray):
        ds_u = tf.data.Dataset.from_tensor_slices(unlabeled_images).shuffle(
            len(unlabeled_images), seed=seed
        )
    else:  # Files: the unlabeled stream mixes them record by record.
        files = tf.data.Dataset.from_tensor_slices(list(unlabeled_images))
        ds_u = (
            files.interleave(tf.data.TFRecordDataset, cycle_length=len(unlabeled_images))
            .shuffle(STREAM_BUFFER, seed=seed)
            .map(lambda s: records.parse_image_label(s)[0])
        )
    ds_u = (
        ds_u.repeat()
        .enumerate()
        .map(unlabeled_views, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size * uratio, drop_remainder=True)
    )
    ds = tf.data.Dataset.zip(ds_l, ds_u).map(lambda lab, unl: dict(x_l=lab[0], y_l=lab[1], x_u=unl))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def image_batches(examples: records.Records, batch_size: int = 1000):
    """The images of `examples` in order, in batches: slices of the array in memory, or
    a tf.data stream of uint8 batches decoded from the file."""
    if not examples.streamed:
        return (examples.images[i : i + batch_size] for i in range(0, len(examples), batch_size))
    return (
        tf.data.TFRecordDataset(examples.path)
        .map(
            lambda s: records.decode(records.parse_image_label(s)[0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(batch_size)
        .prefetch(2)
    )
