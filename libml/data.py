"""TFRecord folds of long-tailed data sets, and the tf.data pipelines that train on them.

A fold folder holds `labeled.tfrecord`, `unlabeled.tfrecord`, `test.tfrecord` and
`counts.json`. Each record is a tf.train.Example with `image` (PNG), `label` (int64) and
`id` (int64, the image's index in the source's train split, or test split for test
records); pseudo-labeled records also carry `pseudo` = 1 and their `confidence`.
Files are written under a temporary name and renamed, so a crash never leaves a
truncated file under the real name; `counts.json` is written last and marks a complete
fold.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from libml import augment, datasets, lt

SPLITS = ('labeled', 'unlabeled', 'test')
COUNTS_FILE = 'counts.json'


@dataclasses.dataclass
class Records:
    """Examples in memory: uint8 images [N, H, W, C] and per-example columns [N]."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    pseudo: np.ndarray | None = None  # 1 for pseudo-labeled examples.
    confidence: np.ndarray | None = None  # Model confidence of a pseudo-label.

    def __post_init__(self):
        n = len(self.labels)
        if self.pseudo is None:
            self.pseudo = np.zeros(n, np.int64)
        if self.confidence is None:
            self.confidence = np.ones(n, np.float32)

    def __len__(self):
        return len(self.labels)

    def take(self, index) -> 'Records':
        return Records(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: list['Records']) -> 'Records':
        fields = dataclasses.fields(Records)
        return Records(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields))


# --------------------------------------------------------------------------------------
# TFRecord files.

_FEATURES = {
    'image': tf.io.FixedLenFeature([], tf.string),
    'label': tf.io.FixedLenFeature([], tf.int64),
    'id': tf.io.FixedLenFeature([], tf.int64),
    'pseudo': tf.io.FixedLenFeature([], tf.int64, default_value=0),
    'confidence': tf.io.FixedLenFeature([], tf.float32, default_value=1.0),
}


def write_records(path: str, records: Records) -> None:
    """Writes `records` to `path` atomically (temporary file, then rename)."""
    tmp = f'{path}.tmp-{os.getpid()}'
    pngs = tf.data.Dataset.from_tensor_slices(records.images).map(
        tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    with tf.io.TFRecordWriter(tmp) as writer:
        for png, label, id_, pseudo, conf in zip(
            pngs.as_numpy_iterator(),
            records.labels,
            records.ids,
            records.pseudo,
            records.confidence,
            strict=True,
        ):
            feature = {
                'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                'id': tf.train.Feature(int64_list=tf.train.Int64List(value=[id_])),
            }
            if pseudo:
                feature['pseudo'] = tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
                feature['confidence'] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[conf])
                )
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_records(path: str) -> Records:
    """Reads a whole TFRecord file into memory through tf.data; errors name the file."""
    if not tf.io.gfile.exists(path):
        raise datasets.DataError(f'{path}: not found')

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, _FEATURES)
        ex['image'] = tf.io.decode_png(ex['image'])
        return ex

    ds = tf.data.TFRecordDataset(path).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    columns = {k: [] for k in ('image', 'label', 'id', 'pseudo', 'confidence')}
    try:
        for batch in ds.batch(4096).as_numpy_iterator():
            for k, v in batch.items():
                columns[k].append(v)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise datasets.DataError(f'{path}: corrupt TFRecord file ({e.message})') from e
    if not columns['label']:
        raise datasets.DataError(f'{path}: holds no records')
    return Records(*(np.concatenate(columns[k]) for k in columns))


def write_json(path: str, obj) -> None:
    """Writes JSON atomically, like `write_records`."""
    tmp = f'{path}.tmp-{os.getpid()}'
    with tf.io.gfile.GFile(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_array(path: str, array: np.ndarray) -> None:
    """Writes a NumPy .npy file atomically, like `write_records`."""
    tmp = f'{path}.tmp-{os.getpid()}'
    with tf.io.gfile.GFile(tmp, 'wb') as f:
        np.save(f, array)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_json(path: str):
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------------------
# Folds.


def fold_spec(dataset: str, imbalance: float, label_fraction: float, fold: int) -> dict:
    """The flags that determine a fold's contents; stored in counts.json to check reuse."""
    return dict(dataset=dataset, imbalance=imbalance, label_fraction=label_fraction, fold=fold)


def create_fold(
    dataset: str,
    imbalance: float,
    label_fraction: float,
    fold: int,
    output_dir: str,
    data_dir: str | None = None,
    log=print,
) -> dict:
    """Builds one labeled/unlabeled fold of a long-tailed data set as TFRecords.

    Returns the content of counts.json: the fold's flags, class names, and per-class
    counts of the long-tailed train set and of each split.
    """
    info = datasets.get_dataset(dataset)
    counts = lt.longtail_counts(info.head_count, info.num_classes, imbalance)
    source = info.load(data_dir)
    if source.train_images.shape[1:] != info.image_shape:
        raise datasets.DataError(
            f'{dataset}: images are {source.train_images.shape[1:]}, expected {info.image_shape}'
        )
    keep = lt.longtail_subset(source.train_labels, counts)
    labeled_pos, unlabeled_pos = lt.split_fold(source.train_labels[keep], label_fraction, fold)
    train_ids = np.arange(len(source.train_labels), dtype=np.int64)
    train = Records(source.train_images, source.train_labels, train_ids)
    splits = {
        'labeled': train.take(keep[labeled_pos]),
        'unlabeled': train.take(keep[unlabeled_pos]),
        'test': Records(
            source.test_images,
            source.test_labels,
            np.arange(len(source.test_labels), dtype=np.int64),
        ),
    }
    tf.io.gfile.makedirs(output_dir)
    summary = fold_spec(dataset, imbalance, label_fraction, fold)
    summary['class_names'] = list(source.class_names)
    summary['source'] = source.origin
    summary['longtail'] = counts
    for name, records in splits.items():
        path = os.path.join(output_dir, f'{name}.tfrecord')
        log(f'writing {path} ({len(records)} images)')
        write_records(path, records)
        summary[name] = np.bincount(records.labels, minlength=info.num_classes).tolist()
    write_json(os.path.join(output_dir, COUNTS_FILE), summary)
    return summary


def ensure_fold(dataset, imbalance, label_fraction, fold, output_dir, data_dir=None, log=print):
    """Returns counts.json of the fold in `output_dir`, creating the fold if missing."""
    path = os.path.join(output_dir, COUNTS_FILE)
    if tf.io.gfile.exists(path):
        summary = read_json(path)
        spec = fold_spec(dataset, imbalance, label_fraction, fold)
        if {k: summary.get(k) for k in spec} != spec:
            raise datasets.DataError(f'{path}: holds another fold than {spec}')
        return summary
    return create_fold(dataset, imbalance, label_fraction, fold, output_dir, data_dir, log)


# --------------------------------------------------------------------------------------
# tf.data pipelines. Images stay uint8 in memory and become float in [-1, 1] per batch.


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


def _class_balanced(labeled: Records, seed: int | None) -> tf.data.Dataset:
    """Endless (image, label) pairs, each class drawn with the same probability, each
    class's images in a reshuffled cycle."""
    classes = np.unique(labeled.labels)
    per_class = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(labeled.labels == c)
        per_class.append(
            tf.data.Dataset.from_tensor_slices((labeled.images[members], labeled.labels[members]))
            .shuffle(len(members), seed=None if seed is None else seed + i)
            .repeat()
        )
    weights = [1.0 / len(classes)] * len(classes)
    return tf.data.Dataset.sample_from_datasets(per_class, weights, seed=seed)


def train_dataset(
    labeled: Records,
    unlabeled_images: np.ndarray,
    batch_size: int,
    uratio: int,
    views: Views,
    seed: int | None = None,
    resample: bool = False,
) -> tf.data.Dataset:
    """An endless stream of the batches `views` asks for, as dicts:

    x_l, y_l: `batch_size` labeled images in their view, and their labels;
    x_u: a tuple with one batch per unlabeled view, each of the same `batch_size * uratio`
      unlabeled images (absent when `views.unlabeled` is empty).

    With `resample`, labeled images are drawn class-balanced (re-sampling, RS): every
    class equally often, i.e. each image with probability inversely proportional to its
    class's size; the draws follow `seed`.
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

    def labeled_view(x, y):
        return labeled_aug(to_float(x)), y

    def unlabeled_views(x):
        x = to_float(x)
        return tuple(aug(x) for aug in unlabeled_augs)

    options = tf.data.Options()
    # Augmentations draw from TF's global RNG; a checkpointed iterator restores the
    # order of examples but not the augmentation draws, which is fine for training.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    if resample:
        ds_l = _class_balanced(labeled, seed)
    else:
        ds_l = (
            tf.data.Dataset.from_tensor_slices((labeled.images, labeled.labels))
            .repeat(reps)
            .shuffle(len(labeled) * reps, seed=seed)
            .repeat()
        )
    ds_l = ds_l.map(labeled_view, num_parallel_calls=tf.data.AUTOTUNE).batch(
        batch_size, drop_remainder=True
    )
    if not unlabeled_augs:
        ds = ds_l.map(lambda x, y: dict(x_l=x, y_l=y))
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
    ds_u = (
        tf.data.Dataset.from_tensor_slices(unlabeled_images)
        .shuffle(len(unlabeled_images), seed=seed)
        .repeat()
        .map(unlabeled_views, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size * uratio, drop_remainder=True)
    )
    ds = tf.data.Dataset.zip(ds_l, ds_u).map(lambda lab, unl: dict(x_l=lab[0], y_l=lab[1], x_u=unl))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
