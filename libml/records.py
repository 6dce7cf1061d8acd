"""Record files: examples as TFRecords, JSON and .npy files, each written atomically,
and the digests that tell a complete file from one cut short or replaced.

Each record is a tf.train.Example with `image` (PNG; JPEG for ImageNet127), `label`
(int64; -1 for an unlabeled image of unknown class) and `id` (int64, the image's index
in its source's split); pseudo-labeled records also carry `pseudo` = 1 and their
`confidence`.
Files are written under a temporary name and renamed, so a crash never leaves a
truncated file under the real name. Writing a record file returns its number of records
and SHA-256 digest, which the file that records it keeps and every checked read
compares: a file cut short (even at a record boundary) or swapped is refused.
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


class DataError(Exception):
    """Raised for missing, unreadable or malformed data, always naming the file."""


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
        raise DataError(f'{path}: not found')
    if expected is not None and file_digest(path) != expected['sha256']:
        raise DataError(
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
        raise DataError(f'{path}: corrupt TFRecord file ({e.message})') from e
    if not columns['label']:
        raise DataError(f'{path}: holds no records')
    arrays = [np.concatenate(columns[k]) for k in keys]
    return Records(*([] if images else [None]), *arrays, path=path)


def decode(image, channels: int = 0):
    """An image of a record: PNG, or JPEG (ImageNet127's, see libml/datasets/imagenet127.py)."""
    return tf.io.decode_image(image, channels=channels, expand_animations=False)


def parse_image_label(serialized):
    """(encoded image, label) of a serialized record."""
    ex = tf.io.parse_single_example(serialized, {k: _FEATURES[k] for k in ('image', 'label')})
    return ex['image'], ex['label']


def image_shape_of(path: str) -> tuple[int, int, int]:
    """The shape of the first image of a TFRecord file (all of a fold's have one shape)."""
    for serialized in tf.data.TFRecordDataset(path).take(1):
        return tuple(decode(parse_image_label(serialized)[0]).shape)
    raise DataError(f'{path}: holds no records')


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
        raise DataError(
            f'{path}: not valid JSON ({e}); it was cut short or edited: restore or delete it'
        ) from e
