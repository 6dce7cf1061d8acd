"""The user's own images, already split by their owner and used as they are: no
synthetic long tail, no random fold.

Two forms:
  folder  D/labeled/<class>/*, D/unlabeled/** and D/test/<class>/* (D/val/<class>/*
          optional). Unlabeled images may sit in any sub-folders; one whose first-level
          folder is named like a class takes that label, which serves only to report
          the precision of the picks. PNG, JPEG, BMP or GIF files of any size, all
          resized to one square size (default: the median side of all images).
  npz     one file with arrays x_labeled, y_labeled, x_unlabeled, x_test, y_test and
          optionally y_unlabeled (-1: unknown), x_val, y_val, class_names; uint8
          images [N, H, W] or [N, H, W, C]; read with allow_pickle=False.

Classes are ranked by their labeled count, index 0 the largest (ties by name), whatever
their names or original indices: the rebalancing rates are set per rank.

Ids are stable: an image's index in the sorted list of the train files (the paths under
labeled/ and unlabeled/, relative to D, so labeled ones first), of the test files or of
the val files, whatever order the file system lists them in; for npz, the row
(labeled rows first, then unlabeled ones). Train ids are unique across labeled and
unlabeled images, so an exported labeled set names each image once.
"""

import concurrent.futures
import dataclasses
import os

import numpy as np
import tensorflow as tf

from libml.datasets import DataError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
BAD_IMAGES = ('stop', 'skip')  # What to do with an unreadable image file.
MIN_IMAGE_SIZE = 8  # The augmentations pad by 4 pixels, reflecting.
CHANNELS = (1, 3)  # Gray or RGB: what the augmentations take.
UNKNOWN = -1  # The label of an unlabeled image whose class is not known.


@dataclasses.dataclass(frozen=True)
class GivenSplits:
    """A data set split by its owner. Per split ('labeled', 'unlabeled', 'test', and
    'val' if given): uint8 images [N, S, S, C], int64 labels (UNKNOWN where not known;
    only unlabeled images may have them) and int64 ids."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    ids: dict[str, np.ndarray]
    class_names: tuple[str, ...]
    origin: str
    # The file of each id, by id space ('train', 'test', 'val'); None for npz.
    paths: dict[str, list[str]] | None = None
    skipped: tuple[str, ...] = ()  # Unreadable files left out (--bad_images=skip).


def _rank_classes(names: list[str], labeled: np.ndarray) -> list[int]:
    """The classes' indices in rank order: most labeled images first, ties by name."""
    counts = np.bincount(labeled, minlength=len(names))
    return sorted(range(len(names)), key=lambda c: (-counts[c], names[c]))


def resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    resized = tf.image.resize(image, (size, size), method='bilinear', antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def _check_channels(channels: dict[int, str], where: str) -> int:
    """The one channel count of all images, given {count: an example image}."""
    if len(channels) > 1:
        found = ', '.join(f'{c} (e.g. {path})' for c, path in sorted(channels.items()))
        raise DataError(
            f'{where}: images have different channel counts: {found}; convert them all '
            'to gray or all to RGB'
        )
    ((count, example),) = channels.items()
    if count not in CHANNELS:
        raise DataError(
            f'{example}: {count} channels (e.g. with alpha); images must be gray or RGB'
        )
    return count


# --------------------------------------------------------------------------------------
# A folder of image files.


def _list_images(root: str, split: str) -> tuple[list[str], list[str]]:
    """(image files, other files) under root/split as sorted paths relative to root,
    '/'-separated; hidden files and folders are left out."""
    images, others = [], []
    for folder, subfolders, files in os.walk(os.path.join(root, split), followlinks=True):
        subfolders[:] = [s for s in subfolders if not s.startswith('.')]
        for name in files:
            if name.startswith('.'):
                continue
            path = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, '/')
            is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
            (images if is_image else others).append(path)
    return sorted(images), sorted(others)


def decode_file(path: str) -> np.ndarray | str:
    """The image in `path` as uint8 [H, W, C], or the reason it cannot be read."""
    try:
        with open(path, 'rb') as f:
            content = f.read()
        return tf.io.decode_image(content, expand_animations=False).numpy()
    except (OSError, tf.errors.InvalidArgumentError) as e:
        reason = getattr(e, 'message', None) or str(e)
        return reason.splitlines()[0] if reason else type(e).__name__


def read_images(root, paths, bad_images, log, skipped, transform=None, chunk=512):
    """Yields (position in `paths`, image) for the files root/path, decoded (then passed
    through `transform`, e.g. resize and encode) on all cores `chunk` at a time, in
    order, so that no more than a chunk is held. An unreadable file raises DataError
    naming it (`bad_images` 'stop') or is left out and appended to `skipped` ('skip')."""

    def load(path):
        image = decode_file(os.path.join(root, path))
        return image if isinstance(image, str) or transform is None else transform(image)

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, len(paths), chunk):
            positions = range(start, min(start + chunk, len(paths)))
            loaded = pool.map(lambda i: load(paths[i]), positions)
            for i, image in zip(positions, loaded, strict=True):
                if isinstance(image, str):
                    message = f'{os.path.join(root, paths[i])}: not a readable image ({image})'
                    if bad_images == 'stop':
                        raise DataError(f'{message}; --bad_images=skip leaves such files out')
                    log(f'skipped {message}')
                    skipped.append(paths[i])
                    continue
                yield i, image
            if (start // chunk) % 100 == 99:
                log(f'  {positions.stop}/{len(paths)} images')


def _class_of(path: str) -> str | None:
    """'labeled/cat/x.png' -> 'cat'; None for a file directly in the split's folder."""
    parts = path.split('/')
    return parts[1] if len(parts) > 2 else None


def load_folder(
    data_dir: str, image_size: int = 0, bad_images: str = 'stop', log=print
) -> GivenSplits:
    """Reads D/{labeled,unlabeled,test,val} (see the module docstring).

    Args:
      image_size: the side images are resized to; 0: the median side of all images.
      bad_images: 'stop' raises DataError at the first unreadable image file, naming it;
        'skip' leaves such files out and lists them in the result.
    """
    if not os.path.isdir(data_dir):
        raise DataError(f'{data_dir}: not a folder (expected labeled/, unlabeled/, test/)')
    for split in ('labeled', 'unlabeled', 'test'):
        if not os.path.isdir(os.path.join(data_dir, split)):
            raise DataError(f'{os.path.join(data_dir, split)}: not found')
    splits = ['labeled', 'unlabeled', 'test']
    if os.path.isdir(os.path.join(data_dir, 'val')):
        splits.append('val')

    # Classes: the labeled set's folders; each must hold images.
    files, ignored = {}, []
    for split in splits:
        files[split], others = _list_images(data_dir, split)
        ignored += others
    labeled_root = os.path.join(data_dir, 'labeled')
    names = sorted(
        n
        for n in os.listdir(labeled_root)
        if not n.startswith('.') and os.path.isdir(os.path.join(labeled_root, n))
    )
    per_class = {n: 0 for n in names}
    for path in files['labeled']:
        name = _class_of(path)
        if name is None:
            raise DataError(
                f'{os.path.join(data_dir, path)}: labeled images go in labeled/<class>/'
            )
        per_class[name] += 1
    empty = [n for n in names if not per_class[n]]
    if empty or not names:
        raise DataError(
            f'{labeled_root}: class folder(s) without images: {", ".join(empty)}'
            if empty
            else f'{labeled_root}: no class folders'
        )
    for split in ('test', 'val'):
        for path in files.get(split, []):
            name = _class_of(path)
            if name not in per_class:
                raise DataError(
                    f'{os.path.join(data_dir, path)}: '
                    + (
                        f'class {name!r} has no labeled images'
                        if name
                        else f'{split} images go in {split}/<class>/'
                    )
                )
    if not files['unlabeled']:
        raise DataError(f'{os.path.join(data_dir, "unlabeled")}: no images')
    if not files['test']:
        raise DataError(f'{os.path.join(data_dir, "test")}: no images')
    if ignored:
        log(
            f'{data_dir}: {len(ignored)} file(s) not in {"/".join(IMAGE_EXTENSIONS)} left '
            f'out, e.g. {ignored[0]}'
        )

    # Ids: positions in the sorted file lists (labeled/ sorts before unlabeled/).
    id_spaces = {
        'train': sorted(files['labeled'] + files['unlabeled']),
        'test': files['test'],
        **({'val': files['val']} if 'val' in files else {}),
    }
    space_of = {'labeled': 'train', 'unlabeled': 'train', 'test': 'test', 'val': 'val'}
    index = {space: {p: i for i, p in enumerate(paths)} for space, paths in id_spaces.items()}

    everything = [p for split in splits for p in files[split]]
    log(f'{data_dir}: reading {len(everything)} images')
    skipped = []
    decoded = {
        everything[i]: image
        for i, image in read_images(data_dir, everything, bad_images, log, skipped)
    }
    channels = {}
    for path, image in decoded.items():
        channels.setdefault(image.shape[2], os.path.join(data_dir, path))
    _check_channels(channels, data_dir)

    sides = np.array([image.shape[:2] for image in decoded.values()]).ravel()
    if not image_size:
        image_size = int(np.median(sides))
        how = 'the median side of all images; --image_size sets another'
    else:
        how = '--image_size'
    if image_size < MIN_IMAGE_SIZE:
        raise DataError(
            f'{data_dir}: images of {image_size} px are too small (min {MIN_IMAGE_SIZE})'
        )
    log(
        f'images resized to {image_size}x{image_size} ({how}); sides found '
        f'{sides.min()}..{sides.max()} px'
    )
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        resized = dict(
            zip(decoded, pool.map(lambda p: resize(decoded[p], image_size), decoded), strict=True)
        )

    # Classes by rank, and each split's images, labels and ids in id order.
    order = _rank_classes(names, np.repeat(np.arange(len(names)), [per_class[n] for n in names]))
    rank = {names[c]: r for r, c in enumerate(order)}
    images, labels, ids = {}, {}, {}
    for split in splits:
        kept = [p for p in files[split] if p in resized]
        if not kept:
            raise DataError(f'{os.path.join(data_dir, split)}: no readable images')
        images[split] = np.stack([resized[p] for p in kept])
        labels[split] = np.array([rank.get(_class_of(p), UNKNOWN) for p in kept], np.int64)
        ids[split] = np.array([index[space_of[split]][p] for p in kept], np.int64)
    return GivenSplits(
        images,
        labels,
        ids,
        tuple(names[c] for c in order),
        f'image folder {os.path.abspath(data_dir)}',
        id_spaces,
        tuple(skipped),
    )


# --------------------------------------------------------------------------------------
# A .npz file of arrays.

NPZ_REQUIRED = ('x_labeled', 'y_labeled', 'x_unlabeled', 'x_test', 'y_test')
NPZ_OPTIONAL = ('y_unlabeled', 'x_val', 'y_val', 'class_names')


def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f'{path}: not a readable .npz file ({e})') from e
    with archive:
        if not hasattr(archive, 'files'):
            raise DataError(f'{path}: a single array, not an .npz file of named arrays')
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
            except ValueError as e:  # An object array: loading it would unpickle.
                raise DataError(
                    f'{path}: array {key} holds Python objects, which are not read (it '
                    'would run code); save numbers, or strings as a str array'
                ) from e
    return arrays


def load_npz(path: str, image_size: int = 0, bad_images: str = 'stop', log=print) -> GivenSplits:
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
    _check_channels({x.shape[3]: f'{path}: x_{s}' for s, x in images.items()}, path)
    shapes = {x.shape[1:3] for x in images.values()}
    if not image_size:
        if len(shapes) > 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
            raise DataError(
                f'{path}: images are {sorted(shapes)} pixels; pass --image_size to resize '
                'them all to one square size'
            )
        image_size = next(iter(shapes))[0]
    if image_size < MIN_IMAGE_SIZE:
        raise DataError(f'{path}: images of {image_size} px are too small (min {MIN_IMAGE_SIZE})')
    if shapes != {(image_size, image_size)}:
        log(f'images resized to {image_size}x{image_size} (--image_size)')
        images = {s: np.stack([resize(im, image_size) for im in x]) for s, x in images.items()}

    labels = {}
    for split in splits:
        key = f'y_{split}'
        if key not in arrays:  # Only y_unlabeled is optional.
            labels[split] = np.full(len(images[split]), UNKNOWN, np.int64)
            continue
        y = arrays[key]
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(images[split]),):
            raise DataError(
                f'{path}: {key} is {y.dtype} {y.shape}; expected integers '
                f'[{len(images[split])}], one per image of x_{split}'
            )
        lowest = UNKNOWN if split == 'unlabeled' else 0
        if y.min() < lowest:
            raise DataError(f'{path}: {key} holds {y.min()}, below {lowest}')
        labels[split] = y.astype(np.int64)
    num_classes = 1 + max(int(y.max()) for y in labels.values())
    if 'class_names' in arrays:
        names = arrays['class_names']
        if names.dtype.kind != 'U' or names.ndim != 1 or len(names) < num_classes:
            raise DataError(
                f'{path}: class_names is {names.dtype} {names.shape}; expected a str array '
                f'of at least {num_classes} names (labels go up to {num_classes - 1})'
            )
        names = [str(n) for n in names]
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

    order = _rank_classes(names, labels['labeled'])
    rank = np.empty(len(names), np.int64)
    rank[order] = np.arange(len(names))
    ranked = {s: np.where(y >= 0, rank[np.maximum(y, 0)], UNKNOWN) for s, y in labels.items()}
    n_labeled = len(images['labeled'])
    ids = {s: np.arange(len(images[s]), dtype=np.int64) for s in splits}
    ids['unlabeled'] += n_labeled  # One id space for the train rows.
    return GivenSplits(
        images, ranked, ids, tuple(names[c] for c in order), f'arrays in {os.path.abspath(path)}'
    )
