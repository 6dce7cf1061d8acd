"""Fashion-MNIST-LT: Fashion-MNIST made long-tailed, the data set that runs offline.

Read from, in order: `data_dir` with the official IDX files (gzipped or not); the
Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist);
tensorflow-datasets. An IDX file is a big-endian magic (0x0801 labels, 0x0803 images),
its dimensions, then the bytes.
"""

import gzip
import math
import os
import struct
import zlib

import numpy as np

from libml.datasets import longtail, tfds_source
from libml.records import DataError

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'

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


# Far above Fashion-MNIST's 47 MB: a header asking for more is not a data set file.
MAX_IDX_BYTES = 1 << 30


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file of unsigned bytes (optionally gzipped) into an array, reading
    no more than its header says it holds (plus one byte, to tell a longer file)."""
    try:
        opener = gzip.open if path.endswith('.gz') else open
        with opener(path, 'rb') as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b'\0\0' or head[2] != 0x08:
                raise DataError(f'{path}: not an IDX file of unsigned bytes')
            ndim = head[3]
            dims = f.read(4 * ndim)
            if ndim == 0 or len(dims) < 4 * ndim:
                raise DataError(f'{path}: IDX header cut short ({4 + len(dims)} bytes)')
            shape = struct.unpack(f'>{ndim}I', dims)
            size = math.prod(shape)
            if size > MAX_IDX_BYTES:
                raise DataError(
                    f'{path}: header says {shape} = {size:,} bytes, over the {MAX_IDX_BYTES:,} '
                    'this reader takes'
                )
            body = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as e:  # zlib: a corrupt deflate stream.
        raise DataError(f'{path}: cannot read ({e})') from e
    if len(body) > size:
        raise DataError(f'{path}: longer than its header says ({shape} = {size} bytes)')
    if len(body) != size:
        raise DataError(f'{path}: header says {shape} = {size} bytes, found {len(body)}')
    if not len(body):
        raise DataError(f'{path}: holds no data (shape {shape})')
    return np.frombuffer(body, np.uint8).reshape(shape)


def _idx_path(folder: str, stem: str) -> str | None:
    for name in (stem, stem + '.gz'):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _from_dir(folder: str) -> longtail.Source:
    if not os.path.isdir(folder):
        raise DataError(f'{folder}: a file, not a folder (--data_dir holds the IDX files)')
    arrays, paths = {}, {}
    for key, stem in (
        ('x_train', 'train-images-idx3-ubyte'),
        ('y_train', 'train-labels-idx1-ubyte'),
        ('x_test', 't10k-images-idx3-ubyte'),
        ('y_test', 't10k-labels-idx1-ubyte'),
    ):
        path = _idx_path(folder, stem)
        if path is None:
            raise DataError(f'{os.path.join(folder, stem)}[.gz]: not found')
        arrays[key], paths[key] = read_idx(path), path
    for split in ('train', 'test'):
        x, y = arrays[f'x_{split}'], arrays[f'y_{split}']
        if y.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(
                f'{paths[f"y_{split}"]}: label {y.max()} out of range '
                f'(classes 0..{len(FASHION_MNIST_CLASSES) - 1})'
            )
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f'{folder}: {split} images {x.shape} do not match labels {y.shape}')
    if len(np.unique(arrays['y_test'])) < 2:
        raise DataError(
            f'{paths["y_test"]}: test labels of one class only ({arrays["y_test"][0]}); '
            'a broken file?'
        )
    return longtail.Source(
        arrays['x_train'][..., None],
        arrays['y_train'].astype(np.int64),
        arrays['x_test'][..., None],
        arrays['y_test'].astype(np.int64),
        FASHION_MNIST_CLASSES,
        f'official files in {folder}',
    )


class FashionMnist(longtail.LongTailed):
    """Fashion-MNIST made long-tailed, N_1 = `head_count` images in the head class; with
    --unlabeled_distribution uniform or reversed, M_1 = `unlabeled_head` unlabeled images
    in the largest unlabeled class (as CIFAR-10's: 4,000 beside 500 labeled at 10%)."""

    def __init__(self, name: str, head_count: int = 5000, unlabeled_head: int = 4000):
        super().__init__(name, 10, (28, 28, 1), head_count, unlabeled_head=unlabeled_head)

    @property
    def class_names(self) -> tuple[str, ...]:
        return FASHION_MNIST_CLASSES

    def load(self, data_dir: str | None) -> longtail.Source:
        if data_dir:
            return _from_dir(data_dir)
        if os.path.isdir(DEBIAN_FASHION_MNIST):
            return _from_dir(DEBIAN_FASHION_MNIST)
        return tfds_source.load('fashion_mnist', 'storage.googleapis.com')
