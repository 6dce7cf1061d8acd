"""The user's own images as a folder (--dataset=folder):

  D/labeled/<class>/*, D/unlabeled/** and D/test/<class>/* (D/val/<class>/* optional).

Unlabeled images may sit in any sub-folders; one whose first-level folder is named like
a class takes that label, which serves only to report the precision of the picks. PNG,
JPEG, BMP or GIF files of any size, all resized to one square size (default: the median
side of all images).

Ids are an image's index in the sorted list of the train files (the paths under
labeled/ and unlabeled/, relative to D, so labeled ones first), of the test files or of
the val files, whatever order the file system lists them in.
"""

import concurrent.futures
import hashlib
import os

import numpy as np

from libml import machine
from libml.datasets import given as given_lib
from libml.datasets import image_files
from libml.records import DataError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
SPLITS = ('labeled', 'unlabeled', 'test', 'val')


def list_images(root: str, split: str = '', log=print) -> tuple[list[str], list[str]]:
    """(image files, other files) under root/split (all of root by default) as sorted
    paths relative to root, '/'-separated; hidden files and folders are left out. Links
    to folders are followed, but not to a folder already read (a loop) nor into root
    itself, an ancestor of it or another split's folder: each image is read once, in its
    own split."""
    top = os.path.realpath(os.path.join(root, split))
    others = [os.path.realpath(os.path.join(root, s)) for s in SPLITS if s != split]
    others = others if split else []  # All of root: no split of its own.
    seen = {top}
    images, others_files = [], []

    def followed(folder: str, name: str) -> bool:
        real = os.path.realpath(os.path.join(folder, name))
        outside = (
            real in seen
            or top.startswith(real + os.sep)  # Root or an ancestor: a loop through it.
            or any(real == o or real.startswith(o + os.sep) for o in others)
        )
        if outside:
            where = os.path.relpath(os.path.join(folder, name), root)
            log(f'{os.path.join(root, where)}: a link to {real}, read elsewhere: not followed')
            return False
        seen.add(real)
        return True

    for folder, subfolders, files in os.walk(os.path.join(root, split), followlinks=True):
        subfolders[:] = [s for s in subfolders if not s.startswith('.') and followed(folder, s)]
        for name in files:
            if name.startswith('.'):
                continue
            path = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, '/')
            is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
            (images if is_image else others_files).append(path)
    return sorted(images), sorted(others_files)


def _same_bytes(root: str, tests: list[str], train: list[str]) -> tuple[str, str] | None:
    """A (test file, train file) pair holding the same bytes, or None. Only files of a
    size found in both lists are hashed, so a large folder costs little more than a
    listing."""
    sizes = {p: os.path.getsize(os.path.join(root, p)) for p in tests + train}
    shared = {sizes[p] for p in tests} & {sizes[p] for p in train}
    digests = {}
    for path in [p for p in train if sizes[p] in shared]:
        digests.setdefault((sizes[path], _digest(os.path.join(root, path))), path)
    for path in [p for p in tests if sizes[p] in shared]:
        twin = digests.get((sizes[path], _digest(os.path.join(root, path))))
        if twin is not None:
            return path, twin
    return None


def _digest(path: str) -> bytes:
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').digest()


def _class_of(path: str) -> str | None:
    """'labeled/cat/x.png' -> 'cat'; None for a file directly in the split's folder."""
    parts = path.split('/')
    return parts[1] if len(parts) > 2 else None


def load_folder(
    data_dir: str, image_size: int = 0, bad_images: str = 'stop', log=print
) -> given_lib.GivenSplits:
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
        files[split], others = list_images(data_dir, split, log)
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
    test_classes = sorted({_class_of(p) for p in files['test']})
    if len(test_classes) < 2 <= len(names):
        raise DataError(
            f'{os.path.join(data_dir, "test")}: images of one class only ({test_classes[0]}); '
            'a test set of one class measures nothing'
        )
    for split in ('test', 'val'):
        twins = _same_bytes(data_dir, files.get(split, []), files['labeled'] + files['unlabeled'])
        if twins:
            raise DataError(
                f'{os.path.join(data_dir, twins[0])} and {os.path.join(data_dir, twins[1])}: the '
                f'same image (same bytes) in {split}/ and in the train images; remove one'
            )
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
    if image_size:  # Resized images and their stacked copies.
        try:
            machine.check_fits(
                2 * len(everything) * image_size**2 * 3,
                f'{data_dir}: the fold of {len(everything):,} images at {image_size} px',
                'lower --image_size',
            )
        except MemoryError as e:
            raise DataError(str(e)) from None
    log(f'{data_dir}: reading {len(everything)} images')
    skipped = []
    decoded = {
        everything[i]: image
        for i, image in image_files.read_images(data_dir, everything, bad_images, log, skipped)
    }
    channels = {}
    for path, image in decoded.items():
        channels.setdefault(image.shape[2], os.path.join(data_dir, path))
    given_lib.check_channels(channels, data_dir)

    sides = np.array([image.shape[:2] for image in decoded.values()]).ravel()
    if not image_size:
        image_size = int(np.median(sides))
        how = 'the median side of all images; --image_size sets another'
    else:
        how = '--image_size'
    if image_size < given_lib.MIN_IMAGE_SIZE:
        raise DataError(
            f'{data_dir}: images of {image_size} px are too small (min {given_lib.MIN_IMAGE_SIZE})'
        )
    log(
        f'images resized to {image_size}x{image_size} ({how}); sides found '
        f'{sides.min()}..{sides.max()} px'
    )
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        resized = dict(
            zip(
                decoded,
                pool.map(lambda p: image_files.resize(decoded[p], image_size), decoded),
                strict=True,
            )
        )

    # Classes by rank, and each split's images, labels and ids in id order.
    order = given_lib.rank_classes(
        names, np.repeat(np.arange(len(names)), [per_class[n] for n in names])
    )
    rank = {names[c]: r for r, c in enumerate(order)}
    readable = {_class_of(p) for p in files['labeled'] if p in resized}
    lost = [n for n in names if n not in readable]
    if lost:
        unreadable = [p for p in skipped if p.startswith(f'labeled/{lost[0]}/')]
        raise DataError(
            f'{os.path.join(labeled_root, lost[0])}: every labeled image of class {lost[0]!r} '
            f'was skipped as unreadable ({", ".join(unreadable[:5])}'
            + (', ...' if len(unreadable) > 5 else '')
            + '); replace them or remove the class'
        )
    images, labels, ids = {}, {}, {}
    for split in splits:
        kept = [p for p in files[split] if p in resized]
        if not kept:
            raise DataError(f'{os.path.join(data_dir, split)}: no readable images')
        images[split] = np.stack([resized[p] for p in kept])
        labels[split] = np.array(
            [rank.get(_class_of(p), given_lib.UNKNOWN) for p in kept], np.int64
        )
        ids[split] = np.array([index[space_of[split]][p] for p in kept], np.int64)
    return given_lib.GivenSplits(
        images,
        labels,
        ids,
        tuple(names[c] for c in order),
        f'image folder {os.path.abspath(data_dir)}',
        id_spaces,
        tuple(skipped),
    )


class Folder(given_lib.Given):
    """The user's images in a folder, split into labeled/, unlabeled/ and test/."""

    def load(self, data_dir, image_size, bad_images, log) -> given_lib.GivenSplits:
        return load_folder(data_dir, image_size=image_size, bad_images=bad_images, log=log)
