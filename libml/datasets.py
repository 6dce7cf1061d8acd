"""Image classification sources: the raw, balanced train and test splits.

A source is loaded into memory as uint8 NHWC arrays. Three ways in, tried in order:
  1. `data_dir`, a local folder with the official files (CIFAR binary archives or their
     extracted .bin files; Fashion-MNIST IDX files, gzipped or not);
  2. for Fashion-MNIST, the Debian package `dataset-fashion-mnist`
     (/usr/share/datasets/fashion-mnist);
  3. tensorflow-datasets, which needs the network the first time.
The CIFAR *python* archives are never read: unpickling runs arbitrary code.

Images keep the official files' order whichever way they come, so that the same fold
selects the same images and ids: tensorflow-datasets stores CIFAR shuffled, and its
`id` feature ('train_00042') gives back the index in the official archive.
tensorflow-datasets' Fashion-MNIST has no such feature, so its order differs from the
IDX files' (each fold records its source in counts.json).

Long-tailed subsets and labeled/unlabeled folds are built on top of this in `lt.py`.
"""

import dataclasses
import gzip
import os
import socket
import struct
import tarfile
import zlib
from collections.abc import Callable

import numpy as np

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'


class DataError(Exception):
    """Raised for missing, unreadable or malformed data, always naming the file."""


@dataclasses.dataclass(frozen=True)
class Source:
    """A balanced data set in memory: uint8 images [N, H, W, C], int64 labels [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    origin: str = ''  # Where the images were read from.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registered data set: a balanced source made long-tailed (`load`, with the size
    of its head class), or the user's own split data used as it is (`load_given`)."""

    name: str
    num_classes: int | None  # None: read from the data.
    image_shape: tuple[int, int, int] | None
    head_count: int | None  # N_1, images kept in the largest class (labeled ones under DARP).
    load: Callable[[str | None], Source] | None
    # DARP's protocol when set: M_1, the unlabeled images of the largest class; the
    # labeled and unlabeled sets follow the long-tail law separately, and the split is
    # fixed (lt.darp_split) instead of a random fold.
    darp_unlabeled_head: int | None = None
    # The user's data: (data_dir, image_size, bad_images, log) -> user_data.GivenSplits.
    load_given: Callable | None = None
    # Data too large to hold, whose fold is written file by file: (data_dir,
    # label_fraction, fold, image_size, bad_images, output_dir, log) -> counts.json entries.
    write_fold: Callable | None = None

    @property
    def fixed_split(self) -> bool:
        """Whether the labeled/unlabeled split is given rather than drawn per fold."""
        return bool(self.darp_unlabeled_head or self.load_given)


# --------------------------------------------------------------------------------------
# CIFAR, binary version: each record is label byte(s) then 3072 bytes, channel-major.


def _cifar_parse(data: bytes, label_bytes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + 3072
    if not data or len(data) % record:
        raise DataError(f'{name}: {len(data)} bytes is not a whole number of {record}-byte records')
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: coarse, then fine label.
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _cifar_files(data_dir: str, archive: str, names: list[str]) -> dict[str, bytes]:
    """{name: content} of CIFAR files ('data_batch_1.bin', ...) from `data_dir`/`archive`
    or extracted, directly in data_dir or in the archive's top folder inside it."""
    wanted = set(names)
    found: dict[str, bytes] = {}
    path = os.path.join(data_dir, archive)
    if os.path.exists(path):
        try:
            with tarfile.open(path, 'r:gz') as tar:
                for member in tar.getmembers():
                    base = os.path.basename(member.name)
                    if member.isfile() and base in wanted:
                        found[base] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataError(f'{path}: not a readable .tar.gz archive ({e})') from e
    else:
        for root, _, files in os.walk(data_dir):
            for base in wanted & set(files):
                with open(os.path.join(root, base), 'rb') as f:
                    found.setdefault(base, f.read())
    missing = sorted(wanted - set(found))
    if missing:
        where = path if os.path.exists(path) else data_dir
        raise DataError(f'{where}: missing CIFAR binary file(s) {", ".join(missing)}')
    return found


def _cifar_from_dir(data_dir: str, num_classes: int) -> Source:
    if num_classes == 10:
        archive, label_bytes, meta = 'cifar-10-binary.tar.gz', 1, 'batches.meta.txt'
        train = [f'data_batch_{i}.bin' for i in range(1, 6)]
        test = ['test_batch.bin']
    else:
        archive, label_bytes, meta = 'cifar-100-binary.tar.gz', 2, 'fine_label_names.txt'
        train, test = ['train.bin'], ['test.bin']
    files = _cifar_files(data_dir, archive, [*train, *test, meta])
    # Each file parsed on its own, so that an error names the file at fault.
    parsed = {n: _cifar_parse(files[n], label_bytes, f'{data_dir}: {n}') for n in train + test}
    x_train, y_train = (np.concatenate(a) for a in zip(*(parsed[n] for n in train), strict=True))
    x_test, y_test = (np.concatenate(a) for a in zip(*(parsed[n] for n in test), strict=True))
    try:
        names = tuple(n.strip() for n in files[meta].decode().splitlines() if n.strip())
    except UnicodeDecodeError as e:
        raise DataError(f'{data_dir}: {meta} is not text ({e})') from e
    for split, labels in (('train', y_train), ('test', y_test)):
        if labels.max() >= num_classes:
            raise DataError(f'{data_dir}: {split} label {labels.max()} >= {num_classes} classes')
    if len(names) != num_classes:
        names = tuple(f'class_{i}' for i in range(num_classes))
    return Source(x_train, y_train, x_test, y_test, names, f'official files in {data_dir}')


# --------------------------------------------------------------------------------------
# Fashion-MNIST, IDX format: big-endian magic (0x0801 labels, 0x0803 images), dims, bytes.

FASHION_MNIST_CLASSES = (
    'T-shirt/top',
    'Trouser',
    'Pullover',
    'Dress',
    'Coat',
    'Sandal',
    'Shirt',
    'Sneaker',
    'Bag',
    'Ankle boot',
)


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file of unsigned bytes (optionally gzipped) into an array."""
    try:
        opener = gzip.open if path.endswith('.gz') else open
        with opener(path, 'rb') as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib: a corrupt deflate stream.
        raise DataError(f'{path}: cannot read ({e})') from e
    if len(data) < 4 or data[:2] != b'\0\0' or data[2] != 0x08:
        raise DataError(f'{path}: not an IDX file of unsigned bytes')
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise DataError(f'{path}: IDX header cut short ({len(data)} bytes)')
    shape = struct.unpack(f'>{ndim}I', data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataError(f'{path}: header says {shape} = {np.prod(shape)} bytes, found {len(body)}')
    if not len(body):
        raise DataError(f'{path}: holds no data (shape {shape})')
    return np.frombuffer(body, np.uint8).reshape(shape)


def _idx_path(folder: str, stem: str) -> str | None:
    for name in (stem, stem + '.gz'):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _fashion_mnist_from_dir(folder: str) -> Source:
    arrays = {}
    for key, stem in (
        ('x_train', 'train-images-idx3-ubyte'),
        ('y_train', 'train-labels-idx1-ubyte'),
        ('x_test', 't10k-images-idx3-ubyte'),
        ('y_test', 't10k-labels-idx1-ubyte'),
    ):
        path = _idx_path(folder, stem)
        if path is None:
            raise DataError(f'{os.path.join(folder, stem)}[.gz]: not found')
        arrays[key] = read_idx(path)
    for split in ('train', 'test'):
        x, y = arrays[f'x_{split}'], arrays[f'y_{split}']
        if x.ndim != 3 or len(x) != len(y) or y.max() >= 10:
            raise DataError(f'{folder}: {split} images {x.shape} do not match labels {y.shape}')
    return Source(
        arrays['x_train'][..., None],
        arrays['y_train'].astype(np.int64),
        arrays['x_test'][..., None],
        arrays['y_test'].astype(np.int64),
        FASHION_MNIST_CLASSES,
        f'official files in {folder}',
    )


# --------------------------------------------------------------------------------------
# tensorflow-datasets fallback.


def _from_tfds(name: str, host: str, data_dir: str | None = None) -> Source:
    import tensorflow_datasets as tfds  # Slow import; only needed on this path.

    builder = tfds.builder(name, data_dir=data_dir)
    if not os.path.isdir(builder.data_dir) or not builder.info.splits:
        # Offline, tfds hangs for minutes before failing: check the download host first.
        try:
            socket.create_connection((host, 443), timeout=5).close()
        except OSError as e:
            raise DataError(
                f'{name}: not in {builder.data_dir} and {host} is unreachable ({e}); '
                'pass --data_dir with the official files'
            ) from e
        builder.download_and_prepare()
    splits = tfds.as_numpy(builder.as_dataset(batch_size=-1))

    def official_order(split):
        examples = splits[split]
        images, labels = examples['image'], examples['label'].astype(np.int64)
        if 'id' in examples:  # '<split>_<index in the official files>'
            index = [int(i.rsplit(b'_', 1)[1]) for i in examples['id']]
            order = np.argsort(index, kind='stable')
            images, labels = images[order], labels[order]
        return images, labels

    (x_train, y_train), (x_test, y_test) = official_order('train'), official_order('test')
    names = tuple(builder.info.features['label'].names)
    return Source(x_train, y_train, x_test, y_test, names, f'tensorflow-datasets {name}')


def load_cifar10(data_dir: str | None) -> Source:
    if data_dir:
        return _cifar_from_dir(data_dir, 10)
    return _from_tfds('cifar10', 'www.cs.toronto.edu')


def load_cifar100(data_dir: str | None) -> Source:
    if data_dir:
        return _cifar_from_dir(data_dir, 100)
    return _from_tfds('cifar100', 'www.cs.toronto.edu')


def load_fashion_mnist(data_dir: str | None) -> Source:
    if data_dir:
        return _fashion_mnist_from_dir(data_dir)
    if os.path.isdir(DEBIAN_FASHION_MNIST):
        return _fashion_mnist_from_dir(DEBIAN_FASHION_MNIST)
    return _from_tfds('fashion_mnist', 'storage.googleapis.com')


def _load_folder(data_dir, **options):
    from libml import user_data  # It builds on this module.

    return user_data.load_folder(data_dir, **options)


def _load_npz(data_dir, **options):
    from libml import user_data

    return user_data.load_npz(data_dir, **options)


def _write_imagenet127(*args):
    from libml import imagenet

    return imagenet.write_fold(*args)


DATASETS = {
    'cifar10lt': DatasetInfo('cifar10lt', 10, (32, 32, 3), 5000, load_cifar10),
    'cifar100lt': DatasetInfo('cifar100lt', 100, (32, 32, 3), 500, load_cifar100),
    'fashion_mnist_lt': DatasetInfo('fashion_mnist_lt', 10, (28, 28, 1), 5000, load_fashion_mnist),
    'cifar10_darp': DatasetInfo('cifar10_darp', 10, (32, 32, 3), 1500, load_cifar10, 3000),
    # The user's own images: a folder, or arrays in an .npz file (libml/user_data.py).
    'folder': DatasetInfo('folder', None, None, None, None, load_given=_load_folder),
    'npz': DatasetInfo('npz', None, None, None, None, load_given=_load_npz),
    # ImageNet's 1000 classes in 127 groups, naturally long-tailed (libml/imagenet.py).
    'imagenet127': DatasetInfo('imagenet127', 127, None, None, None, write_fold=_write_imagenet127),
}


def get_dataset(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; choose one of {", ".join(DATASETS)}')
    return DATASETS[name]
