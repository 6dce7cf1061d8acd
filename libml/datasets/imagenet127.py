"""ImageNet127: the 1000 ILSVRC-2012 classes grouped into Huh et al.'s 127 WordNet
classes (2016), a naturally long-tailed data set: the largest class, mammal, holds 218
ILSVRC classes and 277,601 training images, the smallest, butterfly fish, one class
(rock beauty) and 969 images; imbalance 286.

The map is the data file imagenet127.tsv beside this module (one row per ILSVRC class:
index, wnid, group wnid, group name, training images); docs/imagenet127.md says how it
was built and checked. Classes are indexed by their training images, largest first.

Input: a local ImageNet, D/train/<wnid>/*.JPEG and D/val/<wnid>/*.JPEG (the validation
images sorted into class folders, as the usual preparation scripts do). Whatever the
size of ImageNet, nothing is held whole: the fold is written file by file. A fold is
a random `label_fraction` of each class's training images labeled (seeded by `fold`,
as for CIFAR-LT), the rest unlabeled; the test set is the whole validation set, which
is imbalanced too (50 images per ILSVRC class), so the metric is the mean per-class
recall, i.e. balanced accuracy. Images are resized to `image_size` squares and stored as
JPEG (quality 95); ids are positions in the sorted list of train (val) files, recorded
in paths.json.
"""

import collections
import csv
import functools
import os

import numpy as np
import tensorflow as tf

from libml import folds, lt, records
from libml.datasets import base, image_files
from libml.records import DataError

MAP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'imagenet127.tsv')
NUM_CLASSES = 127
DEFAULT_IMAGE_SIZE = 64
CHUNK = 512  # Images decoded at once while writing.
# Stored as JPEG: as PNG, 1.28M photos would take several times the JPEG originals.
JPEG_QUALITY = 95


def read_map() -> tuple[dict[str, int], list[str]]:
    """({ILSVRC wnid: class index}, class names), classes ranked by training images
    (ties by name)."""
    with open(MAP_FILE, newline='') as f:
        rows = list(csv.DictReader(f, delimiter='\t'))
    images = collections.Counter()
    names = {}
    for row in rows:
        images[row['group_wnid']] += int(row['train_images'])
        names[row['group_wnid']] = row['group_name']
    ranked = sorted(images, key=lambda g: (-images[g], names[g]))
    index = {g: i for i, g in enumerate(ranked)}
    return {row['wnid']: index[row['group_wnid']] for row in rows}, [names[g] for g in ranked]


def _list_split(data_dir: str, split: str, classes: dict[str, int]):
    """(sorted relative paths, labels) of D/split/<wnid>/*; every wnid of the map must
    have a folder, and every folder must be a wnid of the map."""
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise DataError(f'{root}: not found (expected {split}/<wnid>/*.JPEG)')
    folders = {n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))}
    missing, unknown = sorted(set(classes) - folders), sorted(folders - set(classes))
    if missing or unknown:
        raise DataError(
            f'{root}: '
            + (
                f'{len(missing)} ILSVRC class folder(s) missing, e.g. {missing[0]}'
                if missing
                else ''
            )
            + ('; ' if missing and unknown else '')
            + (
                f'{len(unknown)} folder(s) not ILSVRC-2012 classes, e.g. {unknown[0]}'
                if unknown
                else ''
            )
        )
    paths = sorted(
        f'{split}/{wnid}/{name}'
        for wnid in folders
        for name in os.listdir(os.path.join(root, wnid))
        if not name.startswith('.')
    )
    labels = np.array([classes[p.split('/')[1]] for p in paths], np.int64)
    return paths, labels


def _image_rows(data_dir, paths, labels, ids, image_size, bad_images, log, skipped):
    """(JPEG, label, id, 0, 1.0) rows of the images, decoded, resized and encoded a
    chunk at a time on all cores; unreadable files stop (naming the file) or are skipped."""

    def encode(image):
        if image.shape[-1] == 1:  # A few ILSVRC JPEGs are gray.
            image = np.repeat(image, 3, axis=-1)
        resized = image_files.resize(image[..., :3], image_size)
        return tf.io.encode_jpeg(resized, quality=JPEG_QUALITY).numpy()

    images = image_files.read_images(data_dir, paths, bad_images, log, skipped, encode, CHUNK)
    for i, encoded in images:
        yield encoded, int(labels[i]), int(ids[i]), 0, 1.0


def write_fold(data_dir, label_fraction, fold, image_size, bad_images, output_dir, log) -> dict:
    """Writes an ImageNet127 fold to `output_dir` (labeled, unlabeled and test TFRecords,
    paths.json); returns the counts.json entries that describe it."""
    classes, names = read_map()
    image_size = image_size or DEFAULT_IMAGE_SIZE
    train_paths, train_labels = _list_split(data_dir, 'train', classes)
    val_paths, val_labels = _list_split(data_dir, 'val', classes)
    labeled, unlabeled = lt.split_fold(train_labels, label_fraction, fold)
    rng = np.random.default_rng(folds.GIVEN_ORDER_SEED)  # Stored mixed, for streams.
    splits = {
        'labeled': (train_paths, train_labels, rng.permutation(labeled)),
        'unlabeled': (train_paths, train_labels, rng.permutation(unlabeled)),
        'test': (val_paths, val_labels, rng.permutation(len(val_paths))),
    }
    os.makedirs(output_dir, exist_ok=True)
    records.write_json(
        os.path.join(output_dir, folds.PATHS_FILE), {'train': train_paths, 'test': val_paths}
    )
    entries = dict(
        class_names=names,
        source=f'ImageNet in {os.path.abspath(data_dir)}, 127 classes',
        longtail=np.bincount(train_labels, minlength=NUM_CLASSES).tolist(),
        image_shape=[image_size, image_size, 3],
        files={},
    )
    skipped = []
    for split, (paths, labels, order) in splits.items():
        path = os.path.join(output_dir, f'{split}.tfrecord')
        log(f'writing {path} ({len(order)} images, {image_size}x{image_size})')
        rows = _image_rows(
            data_dir,
            [paths[i] for i in order],
            labels[order],
            order,
            image_size,
            bad_images,
            log,
            skipped,
        )
        entries['files'][f'{split}.tfrecord'] = records.write_examples(path, rows)
        kept = np.ones(len(order), bool)
        if skipped:
            gone = set(skipped)
            kept = np.array([paths[i] not in gone for i in order])
        entries[split] = np.bincount(labels[order][kept], minlength=NUM_CLASSES).tolist()
    if skipped:
        entries['skipped'] = skipped
    return entries


class ImageNet127(base.Dataset):
    """ImageNet in 127 classes, its own long tail; a fold as for CIFAR-LT, written file
    by file."""

    num_classes = NUM_CLASSES

    def __init__(self, name: str):
        self.name = name

    @functools.cached_property
    def class_names(self) -> tuple[str, ...]:
        return tuple(read_map()[1])

    def check(self, spec: folds.FoldSpec, class_prior: str = 'labeled') -> None:
        base.check_data_dir(self.name, spec)
        base.check_own_long_tail(self.name, spec, class_prior)

    def stored_spec(self, spec: folds.FoldSpec) -> dict:
        return dict(
            dataset=self.name,
            label_fraction=spec.label_fraction,
            fold=spec.fold,
            image_size=spec.image_size,
        )

    def describe(self, spec: folds.FoldSpec) -> str:
        return f'fold {spec.fold}, its own long tail; --imbalance unused'

    def make_fold(self, spec: folds.FoldSpec, output_dir: str, log) -> dict:
        if not spec.data_dir:
            raise DataError(f'--dataset={self.name} reads its data from --data_dir')
        tf.io.gfile.makedirs(output_dir)
        return write_fold(
            spec.data_dir,
            spec.label_fraction,
            spec.fold,
            spec.image_size,
            spec.bad_images,
            output_dir,
            log,
        )
