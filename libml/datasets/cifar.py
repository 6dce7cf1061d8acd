"""CIFAR-10-LT and CIFAR-100-LT (the paper's main data sets), and CIFAR-10 under DARP's
protocol (the paper's Table 3).

Read from the official *binary* version, in `data_dir` as the .tar.gz archive or its
extracted .bin files, else from tensorflow-datasets. The *python* archives are never
read: unpickling runs arbitrary code. Each record of a binary file is the label byte(s)
then 3072 bytes, channel-major.
"""

import os
import tarfile
import zlib

import numpy as np

from libml.datasets import longtail, tfds_source
from libml.records import DataError


def _parse(data: bytes, label_bytes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + 3072
    if not data or len(data) % record:
        raise DataError(f'{name}: {len(data)} bytes is not a whole number of {record}-byte records')
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: coarse, then fine label.
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


# Far above CIFAR-100's train.bin (154 MB).
MAX_FILE_BYTES = 1 << 30


def _files(data_dir: str, archive: str, names: list[str]) -> dict[str, bytes]:
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
    elif not os.path.isdir(data_dir):
        raise DataError(f'{data_dir}: a file, not a folder (--data_dir holds the CIFAR files)')
    else:
        for root, _, files in os.walk(data_dir):
            for base in sorted(wanted & set(files)):
                if base in found:
                    continue
                with open(os.path.join(root, base), 'rb') as f:
                    # Bounded: a link to a device that never ends is refused.
                    found[base] = f.read(MAX_FILE_BYTES + 1)
                if len(found[base]) > MAX_FILE_BYTES:
                    raise DataError(
                        f'{os.path.join(root, base)}: over {MAX_FILE_BYTES:,} bytes, not a '
                        'CIFAR binary file'
                    )
    missing = sorted(wanted - set(found))
    if missing:
        where = path if os.path.exists(path) else data_dir
        raise DataError(f'{where}: missing CIFAR binary file(s) {", ".join(missing)}')
    return found


def _from_dir(data_dir: str, num_classes: int) -> longtail.Source:
    if num_classes == 10:
        archive, label_bytes, meta = 'cifar-10-binary.tar.gz', 1, 'batches.meta.txt'
        train = [f'data_batch_{i}.bin' for i in range(1, 6)]
        test = ['test_batch.bin']
    else:
        archive, label_bytes, meta = 'cifar-100-binary.tar.gz', 2, 'fine_label_names.txt'
        train, test = ['train.bin'], ['test.bin']
    files = _files(data_dir, archive, [*train, *test, meta])
    # Each file parsed on its own, so that an error names the file at fault.
    parsed = {n: _parse(files[n], label_bytes, f'{data_dir}: {n}') for n in train + test}
    x_train, y_train = (np.concatenate(a) for a in zip(*(parsed[n] for n in train), strict=True))
    x_test, y_test = (np.concatenate(a) for a in zip(*(parsed[n] for n in test), strict=True))
    try:
        names = tuple(n.strip() for n in files[meta].decode().splitlines() if n.strip())
    except UnicodeDecodeError as e:
        raise DataError(f'{data_dir}: {meta} is not text ({e})') from e
    for split, labels in (('train', y_train), ('test', y_test)):
        if labels.max() >= num_classes:
            raise DataError(
                f'{data_dir}: {split} label {labels.max()} out of range (classes 0..'
                f'{num_classes - 1})'
            )
    if len(np.unique(y_test)) < 2:
        raise DataError(
            f'{data_dir}: {", ".join(test)}: test labels of one class only ({y_test[0]}); '
            'a broken file?'
        )
    if len(names) != num_classes:
        names = tuple(f'class_{i}' for i in range(num_classes))
    return longtail.Source(x_train, y_train, x_test, y_test, names, f'official files in {data_dir}')


class Cifar(longtail.LongTailed):
    """CIFAR-10 or CIFAR-100 (`num_classes`) made long-tailed: N_1 = 5000 (500) images
    in the head class, as the paper; under DARP's protocol N_1 = 1500 labeled and
    M_1 = 3000 unlabeled. `unlabeled_head`: M_1 of --unlabeled_distribution uniform or
    reversed."""

    def __init__(
        self,
        name: str,
        num_classes: int,
        head_count: int,
        darp_unlabeled_head=None,
        unlabeled_head=None,
    ):
        super().__init__(
            name, num_classes, (32, 32, 3), head_count, darp_unlabeled_head, unlabeled_head
        )

    def load(self, data_dir: str | None) -> longtail.Source:
        if data_dir:
            return _from_dir(data_dir, self.num_classes)
        return tfds_source.load(f'cifar{self.num_classes}', 'www.cs.toronto.edu')
