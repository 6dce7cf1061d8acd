"""TFRecord folds of long-tailed data sets, and the tf.data pipelines that train on them.

A fold folder holds `labeled.tfrecord`, `unlabeled.tfrecord`, `test.tfrecord` and
`counts.json` (and `val.tfrecord`, `paths.json` for the user's data that has them).
Each record is a tf.train.Example with `image` (PNG; JPEG for ImageNet127),
`label` (int64; -1 for an
unlabeled image of unknown class) and `id` (int64, the image's index in the source's
train split, or test split for test records); pseudo-labeled records also carry
`pseudo` = 1 and their `confidence`.
Files are written under a temporary name and renamed, so a crash never leaves a
truncated file under the real name; `counts.json` is written last and marks a complete
fold. It records each file's number of records and SHA-256 digest, which every read
checks: a file cut short (even at a record boundary) or swapped is refused or rebuilt.
Temporary names are random and created exclusively, so a planted link is never
followed; `remove_temporary_files` clears those a crash left behind.
"""

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import secrets
import tempfile

import numpy as np
import tensorflow as tf

from libml import augment, datasets, lt

SPLITS = ('labeled', 'unlabeled', 'test')
COUNTS_FILE = 'counts.json'
PATHS_FILE = 'paths.json'  # The user's image files, by id.
GIVEN_ORDER_SEED = 0


@dataclasses.dataclass
class Records:
    """Examples: uint8 images [N, H, W, C] and per-example columns [N], in memory; or
    the columns only, the images left in the TFRecord file `path` and read as a stream
    (`images` None; see `read_records`)."""

    images: np.ndarray | None
    labels: np.ndarray
    ids: np.ndarray
    pseudo: np.ndarray | None = None  # 1 for pseudo-labeled examples.
    confidence: np.ndarray | None = None  # Model confidence of a pseudo-label.
    path: str | None = None  # The file the records were read from.

    COLUMNS = ('images', 'labels', 'ids', 'pseudo', 'confidence')

    def __post_init__(self):
        n = len(self.labels)
        if self.pseudo is None:
            self.pseudo = np.zeros(n, np.int64)
        if self.confidence is None:
            self.confidence = np.ones(n, np.float32)

    def __len__(self):
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        return self.images is None

    def take(self, index) -> 'Records':
        if self.streamed:
            raise ValueError(f'{self.path}: streamed records are not taken in memory')
        return Records(*(getattr(self, c)[index] for c in Records.COLUMNS))

    @staticmethod
    def concat(parts: list['Records']) -> 'Records':
        return Records(*(np.concatenate([getattr(p, c) for p in parts]) for c in Records.COLUMNS))


# --------------------------------------------------------------------------------------
# TFRecord files.

_FEATURES = {
    'image': tf.io.FixedLenFeature([], tf.string),
    'label': tf.io.FixedLenFeature([], tf.int64),
    'id': tf.io.FixedLenFeature([], tf.int64),
    'pseudo': tf.io.FixedLenFeature([], tf.int64, default_value=0),
    'confidence': tf.io.FixedLenFeature([], tf.float32, default_value=1.0),
}


TEMPORARY = '*.tmp-*'  # The pattern of temporary file names.


@contextlib.contextmanager
def _atomic(path: str):
    """Yields a temporary name beside `path`, renamed to `path` if the block succeeds,
    removed if it fails. Locally the name is random and the file created exclusively
    (no planted link can be followed); other file systems get a random suffix."""
    if '://' in path:
        tmp = f'{path}.tmp-{secrets.token_hex(8)}'
    else:
        fd, tmp = tempfile.mkstemp(
            prefix=os.path.basename(path) + '.tmp-', dir=os.path.dirname(path) or '.'
        )
        os.close(fd)
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        with contextlib.suppress(Exception):
            tf.io.gfile.remove(tmp)
        raise


def remove_temporary_files(folder: str) -> list[str]:
    """Removes the temporary files an interrupted write left anywhere under `folder`,
    except in hidden sub-folders (another process's, e.g. a worker's copy of a run)."""
    removed = []
    for root, _, files in tf.io.gfile.walk(folder):
        relative = os.path.relpath(root, folder)
        if any(part.startswith('.') and part != '.' for part in relative.split(os.sep)):
            continue
        for name in fnmatch.filter(files, TEMPORARY):
            tf.io.gfile.remove(os.path.join(root, name))
            removed.append(os.path.join(root, name))
    return removed


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, 'rb') as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_records(path: str, records: Records) -> dict:
    """Writes `records` to `path` atomically; returns {'records': N, 'sha256': digest},
    what `read_records` checks the file against."""
    pngs = tf.data.Dataset.from_tensor_slices(records.images).map(
        tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return write_examples(
        path,
        zip(
            pngs.as_numpy_iterator(),
            records.labels,
            records.ids,
            records.pseudo,
            records.confidence,
            strict=True,
        ),
    )


def write_examples(path: str, rows) -> dict:
    """`write_records` from an iterable of (encoded image, label, id, pseudo, confidence)
    rows, e.g. a stream of images too many to hold."""
    count = 0
    with _atomic(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            for png, label, id_, pseudo, conf in rows:
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
                # Map fields serialize in an order that changes with the process's
                # hash seed unless asked to sort: the same records, the same bytes.
                writer.write(example.SerializeToString(deterministic=True))
                count += 1
        written = {'records': count, 'sha256': file_digest(tmp)}
    return written


def check_file(path: str, expected: dict | None, recorded_in: str) -> None:
    """Raises DataError unless `path` exists and has the digest `expected` records (the
    dict `write_records` returned, kept in `recorded_in`); None checks existence only."""
    if not tf.io.gfile.exists(path):
        raise datasets.DataError(f'{path}: not found')
    if expected is not None and file_digest(path) != expected['sha256']:
        raise datasets.DataError(
            f'{path}: not the file {recorded_in} records ({expected["records"]} records, '
            f'SHA-256 {expected["sha256"][:12]}...): it was cut short or replaced'
        )


def read_records(
    path: str, expected: dict | None = None, recorded_in: str = '', images: bool = True
) -> Records:
    """Reads a whole TFRecord file into memory through tf.data; errors name the file.

    With `expected` ({'records', 'sha256'} from `write_records`, kept in the file
    `recorded_in`), a file that is not the one written is refused. Without `images`,
    only the columns are read: the images stay in the file, to be streamed.
    """
    check_file(path, expected, recorded_in)

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, _FEATURES)
        if images:
            ex['image'] = decode(ex['image'])
        else:
            del ex['image']
        return ex

    ds = tf.data.TFRecordDataset(path).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    keys = ('image',) * images + ('label', 'id', 'pseudo', 'confidence')
    columns = {k: [] for k in keys}
    try:
        for batch in ds.batch(4096).as_numpy_iterator():
            for k, v in batch.items():
                columns[k].append(v)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise datasets.DataError(f'{path}: corrupt TFRecord file ({e.message})') from e
    if not columns['label']:
        raise datasets.DataError(f'{path}: holds no records')
    arrays = [np.concatenate(columns[k]) for k in keys]
    return Records(*([] if images else [None]), *arrays, path=path)


def decode(image, channels: int = 0):
    """An image of a record: PNG, or JPEG (ImageNet127's, see libml/imagenet.py)."""
    return tf.io.decode_image(image, channels=channels, expand_animations=False)


def _parse_image_label(serialized):
    """(encoded image, label) of a serialized record."""
    ex = tf.io.parse_single_example(serialized, {k: _FEATURES[k] for k in ('image', 'label')})
    return ex['image'], ex['label']


def image_shape_of(path: str) -> tuple[int, int, int]:
    """The shape of the first image of a TFRecord file (all of a fold's have one shape)."""
    for serialized in tf.data.TFRecordDataset(path).take(1):
        return tuple(decode(_parse_image_label(serialized)[0]).shape)
    raise datasets.DataError(f'{path}: holds no records')


def image_batches(records: Records, batch_size: int = 1000):
    """The images of `records` in order, in batches: slices of the array in memory, or
    a tf.data stream of uint8 batches decoded from the file."""
    if not records.streamed:
        return (records.images[i : i + batch_size] for i in range(0, len(records), batch_size))
    return (
        tf.data.TFRecordDataset(records.path)
        .map(
            lambda s: decode(_parse_image_label(s)[0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(batch_size)
        .prefetch(2)
    )


def export_streamed(
    path: str,
    original: Records,
    unlabeled: Records,
    picks: np.ndarray,
    labels: np.ndarray,
    confidence: np.ndarray,
    seed: int,
) -> dict:
    """Writes `original`'s records plus `unlabeled`'s records at positions `picks`,
    pseudo-labeled (`labels`, `confidence`, one per pick), from file to file without
    holding the images; returns what `write_records` returns.

    The two streams are merged in a random order (`seed`): a reader with a bounded
    shuffle buffer then sees picks and original images mixed throughout. The picks
    keep their order in the unlabeled file.
    """
    order = np.argsort(picks, kind='stable')
    positions, labels, confidence = picks[order], labels[order], confidence[order]
    pick_at = {int(p): i for i, p in enumerate(positions)}

    def picked():
        for position, serialized in enumerate(tf.data.TFRecordDataset(unlabeled.path)):
            i = pick_at.get(position)
            if i is None:
                continue
            example = tf.train.Example.FromString(serialized.numpy())
            feature = example.features.feature
            feature['label'].int64_list.value[:] = [int(labels[i])]
            feature['pseudo'].int64_list.value[:] = [1]
            feature['confidence'].float_list.value[:] = [float(confidence[i])]
            yield example.SerializeToString(deterministic=True)

    originals = (
        s.numpy() for s in tf.data.TFRecordDataset(original.path)
    )  # Already pseudo == 0 only: a fold's labeled file.
    # Each next record is drawn from a stream with probability proportional to what it
    # has left: a uniformly random interleaving.
    left = [len(original), len(positions)]
    streams = [originals, picked()]
    rng = np.random.default_rng(seed)
    with _atomic(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            while sum(left):
                which = int(rng.random() * sum(left) >= left[0])
                writer.write(next(streams[which]))
                left[which] -= 1
        written = {'records': len(original) + len(positions), 'sha256': file_digest(tmp)}
    return written


def write_json(path: str, obj) -> None:
    """Writes JSON atomically, like `write_records`."""
    with _atomic(path) as tmp:
        with tf.io.gfile.GFile(tmp, 'w') as f:
            json.dump(obj, f, indent=1)


def write_array(path: str, array: np.ndarray) -> None:
    """Writes a NumPy .npy file atomically, like `write_records`."""
    with _atomic(path) as tmp:
        with tf.io.gfile.GFile(tmp, 'wb') as f:
            np.save(f, array)


def read_json(path: str):
    """The JSON content of `path`; a DataError naming the file if it cannot be parsed."""
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise datasets.DataError(
            f'{path}: not valid JSON ({e}); it was cut short or edited: restore or delete it'
        ) from e


# --------------------------------------------------------------------------------------
# Folds.


def fold_spec(
    dataset: str,
    imbalance: float,
    label_fraction: float,
    fold: int,
    data_dir: str | None = None,
    image_size: int = 0,
    class_order: int | list[int] = 0,
) -> dict:
    """The flags that determine a fold's contents; stored in counts.json to check reuse.

    For the user's own data (given splits) these are where it is and the image size. A
    class order other than the source's (seed 0) is named only when used, so that folds
    made before it existed still match.
    """
    info = datasets.get_dataset(dataset)
    if info.load_given:
        return dict(
            dataset=dataset, data_dir=os.path.abspath(data_dir or ''), image_size=image_size
        )
    if info.write_fold:  # ImageNet127: a random fold of a natural long tail, resized.
        return dict(
            dataset=dataset, label_fraction=label_fraction, fold=fold, image_size=image_size
        )
    spec = dict(dataset=dataset, imbalance=imbalance, label_fraction=label_fraction, fold=fold)
    return {**spec, 'class_order': class_order} if class_order else spec


def longtail_splits(info, imbalance, label_fraction, fold, data_dir, class_order=0):
    """({split: Records}, summary entries) of a long-tailed fold of a balanced source.

    With `class_order` a seed k > 0 or a list the classes are first relabeled by that
    permutation (`lt.class_order`): label r is the source class of rank r, so that label
    0 stays the head and the class names follow their images.
    """
    counts = lt.longtail_counts(info.head_count, info.num_classes, imbalance)
    source = info.load(data_dir)
    if source.train_images.shape[1:] != info.image_shape:
        raise datasets.DataError(
            f'{info.name}: images are {source.train_images.shape[1:]}, expected {info.image_shape}'
        )
    if class_order:
        order = lt.class_order(info.num_classes, class_order)
        rank = np.argsort(order)  # rank[source class] = its new label
        source = dataclasses.replace(
            source,
            train_labels=rank[source.train_labels],
            test_labels=rank[source.test_labels],
            class_names=tuple(source.class_names[c] for c in order),
        )
    if info.darp_unlabeled_head:  # DARP: fixed split, label_fraction and fold unused.
        unlabeled_counts = lt.longtail_counts(info.darp_unlabeled_head, info.num_classes, imbalance)
        labeled, unlabeled = lt.darp_split(source.train_labels, counts, unlabeled_counts)
        counts = [n + m for n, m in zip(counts, unlabeled_counts, strict=True)]
    else:
        keep = lt.longtail_subset(source.train_labels, counts)
        labeled_pos, unlabeled_pos = lt.split_fold(source.train_labels[keep], label_fraction, fold)
        labeled, unlabeled = keep[labeled_pos], keep[unlabeled_pos]
    train_ids = np.arange(len(source.train_labels), dtype=np.int64)
    train = Records(source.train_images, source.train_labels, train_ids)
    splits = {
        'labeled': train.take(labeled),
        'unlabeled': train.take(unlabeled),
        'test': Records(
            source.test_images,
            source.test_labels,
            np.arange(len(source.test_labels), dtype=np.int64),
        ),
    }
    return splits, dict(class_names=list(source.class_names), source=source.origin, longtail=counts)


def _given_splits(info, data_dir, image_size, bad_images, log):
    """({split: Records}, summary entries) of the user's own data, used as it is."""
    if not data_dir:
        raise datasets.DataError(f'--dataset={info.name} reads its data from --data_dir')
    given = info.load_given(data_dir, image_size=image_size, bad_images=bad_images, log=log)
    splits = {s: Records(given.images[s], given.labels[s], given.ids[s]) for s in given.images}
    # Stored in a fixed random order, not the files' (grouped by class): a stream read
    # through a bounded shuffle buffer then mixes the classes.
    rng = np.random.default_rng(GIVEN_ORDER_SEED)
    splits = {s: r.take(rng.permutation(len(r))) for s, r in splits.items()}
    known = np.concatenate([splits[s].labels for s in ('labeled', 'unlabeled')])
    entries = dict(
        class_names=list(given.class_names),
        source=given.origin,
        # The class distribution of the train images whose class is known.
        longtail=np.bincount(known[known >= 0], minlength=len(given.class_names)).tolist(),
        image_shape=list(splits['labeled'].images.shape[1:]),
        unknown_labels={s: int(np.sum(r.labels < 0)) for s, r in splits.items()},
    )
    if given.skipped:
        entries['skipped'] = list(given.skipped)
    return splits, entries, given.paths


def create_fold(
    dataset: str,
    imbalance: float,
    label_fraction: float,
    fold: int,
    output_dir: str,
    data_dir: str | None = None,
    log=print,
    image_size: int = 0,
    bad_images: str = 'stop',
    class_order: int | list[int] = 0,
) -> dict:
    """Builds one labeled/unlabeled fold of a data set as TFRecords.

    A built-in data set is made long-tailed (its classes ranked by `class_order`, see
    `longtail_splits`) and split by `fold`; the user's own data
    (`--dataset=folder` or `npz`) keeps its own split, its images resized to
    `image_size` (0: see libml/user_data.py), unreadable files stopping or skipped per
    `bad_images`; its files' paths per id go to paths.json.

    Returns the content of counts.json: the fold's flags, class names, and per-class
    counts of the long-tailed train set and of each split.
    """
    info = datasets.get_dataset(dataset)
    spec = fold_spec(dataset, imbalance, label_fraction, fold, data_dir, image_size, class_order)
    if info.write_fold:  # Written file by file, never held whole.
        if not data_dir:
            raise datasets.DataError(f'--dataset={dataset} reads its data from --data_dir')
        tf.io.gfile.makedirs(output_dir)
        entries = info.write_fold(
            data_dir, label_fraction, fold, image_size, bad_images, output_dir, log
        )
        summary = {**spec, **entries}
        write_json(os.path.join(output_dir, COUNTS_FILE), summary)
        return summary
    paths = None
    if info.load_given:
        splits, entries, paths = _given_splits(info, data_dir, image_size, bad_images, log)
    else:
        splits, entries = longtail_splits(
            info, imbalance, label_fraction, fold, data_dir, class_order
        )
    num_classes = len(entries['class_names'])
    tf.io.gfile.makedirs(output_dir)
    summary = {**spec, **entries}
    summary['files'] = {}
    if paths is not None:
        path = os.path.join(output_dir, PATHS_FILE)
        write_json(path, paths)
        summary['files'][PATHS_FILE] = {'records': None, 'sha256': file_digest(path)}
    for name, records in splits.items():
        path = os.path.join(output_dir, f'{name}.tfrecord')
        log(f'writing {path} ({len(records)} images)')
        summary['files'][f'{name}.tfrecord'] = write_records(path, records)
        known = records.labels[records.labels >= 0]
        summary[name] = np.bincount(known, minlength=num_classes).tolist()
    write_json(os.path.join(output_dir, COUNTS_FILE), summary)
    return summary


def read_split(fold_dir: str, split: str, summary: dict, images: bool = True) -> Records:
    """One split of a fold, checked against its counts.json `summary`; without
    `images`, the images are left in the file (see `read_records`)."""
    name = f'{split}.tfrecord'
    expected = summary.get('files', {}).get(name)  # Folds made before digests: unchecked.
    return read_records(os.path.join(fold_dir, name), expected, COUNTS_FILE, images=images)


def image_shape_of_fold(summary: dict) -> tuple[int, int, int]:
    """The shape of a fold's images, from its counts.json `summary`."""
    if 'image_shape' in summary:
        return tuple(summary['image_shape'])
    return datasets.get_dataset(summary['dataset']).image_shape


def fold_splits(summary: dict) -> tuple[str, ...]:
    """The splits a fold holds: SPLITS, and 'val' if its data came with one."""
    return SPLITS + (('val',) if 'val.tfrecord' in summary.get('files', {}) else ())


def ensure_fold(
    dataset,
    imbalance,
    label_fraction,
    fold,
    output_dir,
    data_dir=None,
    log=print,
    image_size=0,
    bad_images='stop',
    class_order=0,
):
    """Returns counts.json of the fold in `output_dir`, creating the fold if missing and
    rebuilding it (the same images, from the source) if a file is missing or changed."""
    path = os.path.join(output_dir, COUNTS_FILE)
    if tf.io.gfile.exists(path):
        summary = read_json(path)
        spec = fold_spec(
            dataset, imbalance, label_fraction, fold, data_dir, image_size, class_order
        )
        stored = {k: summary.get(k) for k in spec}
        if stored != spec or summary.get('class_order', 0) != class_order:
            raise datasets.DataError(f'{path}: holds another fold than {spec}')
        try:
            for name in [f'{s}.tfrecord' for s in fold_splits(summary)]:
                check_file(os.path.join(output_dir, name), summary.get('files', {}).get(name), path)
            return summary
        except datasets.DataError as e:
            log(f'{e}; rebuilding the fold')
    return create_fold(
        dataset,
        imbalance,
        label_fraction,
        fold,
        output_dir,
        data_dir,
        log,
        image_size=image_size,
        bad_images=bad_images,
        class_order=class_order,
    )


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


STREAM_BUFFER = 10_000  # Records a stream's shuffle buffer holds (encoded).


def _class_balanced(labeled: Records, seed: int) -> tf.data.Dataset:
    """Endless (image, label) pairs, each class drawn with the same probability, each
    class's images in a reshuffled cycle."""
    classes = np.unique(labeled.labels)
    per_class = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(labeled.labels == c)
        if labeled.streamed:
            one_class = (
                tf.data.TFRecordDataset(labeled.path)
                .map(_parse_image_label)
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
    labeled: Records,
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
    shape = image_shape_of(labeled.path) if labeled.streamed else labeled.images.shape[1:]

    def decoded(x):
        """A streamed image is decoded after the shuffle, which holds it encoded."""
        if x.dtype != tf.string:
            return x
        return tf.ensure_shape(decode(x, channels=shape[-1]), shape)

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
            .map(_parse_image_label)
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
            .map(lambda s: _parse_image_label(s)[0])
        )
    ds_u = (
        ds_u.repeat()
        .enumerate()
        .map(unlabeled_views, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size * uratio, drop_remainder=True)
    )
    ds = tf.data.Dataset.zip(ds_l, ds_u).map(lambda lab, unl: dict(x_l=lab[0], y_l=lab[1], x_u=unl))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
