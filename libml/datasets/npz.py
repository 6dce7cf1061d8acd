"""The user's own images as an .npz file of arrays (--dataset=npz, --data_dir=the file):
x_labeled, y_labeled, x_unlabeled, x_test, y_test and optionally y_unlabeled
(-1: unknown), x_val, y_val, class_names; uint8 images [N, H, W] or [N, H, W, C]; read
with allow_pickle=False.

Ids are an image's row: labeled rows first, then unlabeled ones.
"""

import collections
import os
import zipfile
import zlib

import numpy as np

from libml import machine
from libml.datasets import given as given_lib
from libml.datasets import image_files
from libml.records import DataError

NPZ_REQUIRED = ('x_labeled', 'y_labeled', 'x_unlabeled', 'x_test', 'y_test')
NPZ_OPTIONAL = ('y_unlabeled', 'x_val', 'y_val', 'class_names')


# What reading a damaged zip archive or array raises.
UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def open_npz(path: str):
    """`np.load` of the .npz file at `path` (no pickles); a one-line DataError for a
    folder, an unreadable file, a single .npy array, a file that is no zip archive or a
    damaged one."""
    if os.path.isdir(path):
        raise DataError(f'{path}: a folder, not an .npz file (--dataset=folder reads folders)')
    try:
        with open(path, 'rb') as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f'{path}: cannot read it ({e.strerror})') from e
    if magic.startswith(b'\x93NUMPY'):
        raise DataError(f'{path}: a single array (.npy), not an .npz file of named arrays')
    if not magic.startswith((b'PK\x03\x04', b'PK\x05\x06')):
        raise DataError(f'{path}: not an .npz file (not a zip archive; np.savez writes one)')
    try:
        return np.load(path, allow_pickle=False)
    except UNREADABLE as e:
        raise DataError(f'{path}: not a readable .npz file ({e})') from e


def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    archive = open_npz(path)
    with archive:
        unknown = sorted(set(archive.files) - set(NPZ_REQUIRED) - set(NPZ_OPTIONAL))
        missing = [k for k in NPZ_REQUIRED if k not in archive.files]
        if unknown or missing:
            raise DataError(
                f'{path}: '
                + (f'missing array(s) {", ".join(missing)}' if missing else '')
                + ('; ' if missing and unknown else '')
                + (f'unknown array(s) {", ".join(unknown)}' if unknown else '')
                + f' (it takes {", ".join(NPZ_REQUIRED)}, optionally {", ".join(NPZ_OPTIONAL)})'
            )
        arrays = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as e:
                if 'pickle' not in str(e):
                    raise DataError(f'{path}: array {key} cannot be read ({e})') from e
                # An object array: loading it would unpickle.
                raise DataError(
                    f'{path}: array {key} holds Python objects, which are not read (it '
                    'would run code); save numbers, or strings as a str array'
                ) from e
            except UNREADABLE as e:
                raise DataError(f'{path}: array {key} cannot be read ({e})') from e
    return arrays


def load_npz(
    path: str, image_size: int = 0, bad_images: str = 'stop', log=print
) -> given_lib.GivenSplits:
    """Reads the arrays of an .npz file (see the module docstring).

    Args:
      image_size: the side images are resized to; 0 keeps them as they are, which then
        must be square.
      bad_images: unused (arrays hold no unreadable image).
    """
    del bad_images
    arrays = _npz_arrays(path)
    splits = ['labeled', 'unlabeled', 'test'] + (['val'] if 'x_val' in arrays else [])
    if ('x_val' in arrays) != ('y_val' in arrays):
        raise DataError(f'{path}: x_val and y_val go together')

    images = {}
    for split in splits:
        x = arrays[f'x_{split}']
        if x.dtype != np.uint8:
            raise DataError(f'{path}: x_{split} is {x.dtype}; images must be uint8 (0..255)')
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or not len(x):
            raise DataError(
                f'{path}: x_{split} has shape {x.shape}; expected [N, H, W(, C)], N > 0'
            )
        images[split] = x
    given_lib.check_channels({x.shape[3]: f'{path}: x_{s}' for s, x in images.items()}, path)
    shapes = {x.shape[1:3] for x in images.values()}
    if not image_size:
        if len(shapes) > 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
            raise DataError(
                f'{path}: images are {sorted(shapes)} pixels; pass --image_size to resize '
                'them all to one square size'
            )
        image_size = next(iter(shapes))[0]
    if image_size < given_lib.MIN_IMAGE_SIZE:
        raise DataError(
            f'{path}: images of {image_size} px are too small (min {given_lib.MIN_IMAGE_SIZE})'
        )
    if shapes != {(image_size, image_size)}:
        count = sum(len(x) for x in images.values())
        try:  # The resized images and their stacked copies.
            machine.check_fits(
                2 * count * image_size**2 * images['labeled'].shape[3],
                f'{path}: {count:,} images resized to {image_size} px',
                'lower --image_size',
            )
        except MemoryError as e:
            raise DataError(str(e)) from None
        log(f'images resized to {image_size}x{image_size} (--image_size)')
        images = {
            s: np.stack([image_files.resize(im, image_size) for im in x]) for s, x in images.items()
        }

    labels = {}
    for split in splits:
        key = f'y_{split}'
        if key not in arrays:  # Only y_unlabeled is optional.
            labels[split] = np.full(len(images[split]), given_lib.UNKNOWN, np.int64)
            continue
        y = arrays[key]
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(images[split]),):
            raise DataError(
                f'{path}: {key} is {y.dtype} {y.shape}; expected integers '
                f'[{len(images[split])}], one per image of x_{split}'
            )
        lowest = given_lib.UNKNOWN if split == 'unlabeled' else 0
        if y.min() < lowest:
            raise DataError(f'{path}: {key} holds {y.min()}, below {lowest}')
        if y.max() >= given_lib.MAX_CLASSES:
            raise DataError(
                f'{path}: {key} holds label {y.max()}, out of range (classes 0..'
                f'{given_lib.MAX_CLASSES - 1} at most)'
            )
        labels[split] = y.astype(np.int64)
    if len(np.unique(labels['test'])) < 2 <= len(np.unique(labels['labeled'])):
        raise DataError(
            f'{path}: y_test holds one class only ({labels["test"][0]}); a test set of one '
            'class measures nothing'
        )
    num_classes = 1 + max(int(y.max()) for y in labels.values())
    if 'class_names' in arrays:
        names = arrays['class_names']
        if names.dtype.kind != 'U' or names.ndim != 1 or len(names) < num_classes:
            raise DataError(
                f'{path}: class_names is {names.dtype} {names.shape}; expected a str array '
                f'of at least {num_classes} names (labels go up to {num_classes - 1})'
            )
        names = [str(n) for n in names]
        repeated = sorted(n for n, k in collections.Counter(names).items() if k > 1)
        if repeated:
            raise DataError(f'{path}: class_names repeats {", ".join(map(repr, repeated))}')
    else:
        names = [f'class_{c}' for c in range(num_classes)]
    counts = np.bincount(labels['labeled'], minlength=len(names))
    for split in ('test', 'val', 'unlabeled'):
        unknown = [c for c in np.unique(labels.get(split, [])) if c >= 0 and not counts[c]]
        if unknown:
            raise DataError(
                f'{path}: y_{split} holds class {names[unknown[0]]!r}, which has no labeled image'
            )
    empty = [names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f'{path}: class(es) without labeled images: {", ".join(empty)}')

    order = given_lib.rank_classes(names, labels['labeled'])
    rank = np.empty(len(names), np.int64)
    rank[order] = np.arange(len(names))
    ranked = {
        s: np.where(y >= 0, rank[np.maximum(y, 0)], given_lib.UNKNOWN) for s, y in labels.items()
    }
    n_labeled = len(images['labeled'])
    ids = {s: np.arange(len(images[s]), dtype=np.int64) for s in splits}
    ids['unlabeled'] += n_labeled  # One id space for the train rows.
    return given_lib.GivenSplits(
        images, ranked, ids, tuple(names[c] for c in order), f'arrays in {os.path.abspath(path)}'
    )


class Npz(given_lib.Given):
    """The user's images as arrays in an .npz file."""

    def load(self, data_dir, image_size, bad_images, log) -> given_lib.GivenSplits:
        return load_npz(data_dir, image_size=image_size, bad_images=bad_images, log=log)
