"""Folds: the settings a fold is built from, and the fold folder built from them.

A fold folder holds `labeled.tfrecord`, `unlabeled.tfrecord`, `test.tfrecord` and
`counts.json` (and `val.tfrecord`, `paths.json` for the user's data that has them).
`counts.json` is written last and marks a complete fold: it stores the settings that
determine the fold (so that a fold is reused only for the same ones), the class names,
per-class counts and each file's number of records and digest (see libml/records.py),
which every read of a split checks. What a data set writes into a fold is its own
business (libml/datasets/); this module asks it through its `stored_spec` and
`make_fold` and never which kind of data set it is.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from libml import lt, records

SPLITS = ('labeled', 'unlabeled', 'test')
COUNTS_FILE = 'counts.json'
PATHS_FILE = 'paths.json'  # The user's image files, by id.
# Data kept in its files' order (grouped by class) is stored in a fixed random order:
# a stream read through a bounded shuffle buffer then mixes the classes.
GIVEN_ORDER_SEED = 0
BAD_IMAGES = ('stop', 'skip')  # What to do with an unreadable image file.


def require(ok: bool, flag: str, allowed: str, value) -> None:
    """Raises ValueError('--flag must be <allowed>, got <value>') unless `ok`."""
    if not ok:
        raise ValueError(f'--{flag} must be {allowed}, got {value!r}')


@dataclasses.dataclass(frozen=True)
class FoldSpec:
    """The settings a fold is built from, by their flags' names; checked here for what
    holds for every data set, by the data set (`check`) for the rest.

    Which of them a data set uses, and stores in counts.json, is up to it: e.g. the
    user's own data keeps its split and ignores `imbalance` and `label_fraction`.
    """

    imbalance: float = 100.0
    label_fraction: float = 0.1
    fold: int = 1
    data_dir: str | None = None
    image_size: int = 0  # Side in pixels images are resized to, where a data set resizes.
    class_order: int | list[int] = 0  # A seed, or the source classes by rank (lt.py).
    bad_images: str = 'stop'
    # The unlabeled images' class distribution (lt.py): the labeled long tail's, or a
    # profile of their own, where a data set offers one.
    unlabeled_distribution: str = 'same'

    def __post_init__(self):
        require(
            0 < self.label_fraction < 1,
            'label_fraction',
            'in (0, 1) (1 would leave no unlabeled image)',
            self.label_fraction,
        )
        require(self.fold >= 1, 'fold', '>= 1', self.fold)
        require(self.image_size >= 0, 'image_size', '>= 0', self.image_size)
        require(
            self.bad_images in BAD_IMAGES,
            'bad_images',
            f'one of {list(BAD_IMAGES)}',
            self.bad_images,
        )
        require(
            self.unlabeled_distribution in lt.UNLABELED_DISTRIBUTIONS,
            'unlabeled_distribution',
            f'one of {list(lt.UNLABELED_DISTRIBUTIONS)}',
            self.unlabeled_distribution,
        )


def write_splits(output_dir: str, splits: dict, num_classes: int, log, paths=None) -> dict:
    """Writes each split's `records.Records` to `output_dir`/<split>.tfrecord (and
    `paths`, the image files by id, to paths.json); returns the counts.json entries
    that describe them: `files` (records and digest of each) and each split's per-class
    counts of known labels."""
    tf.io.gfile.makedirs(output_dir)
    entries = {'files': {}}
    if paths is not None:
        path = os.path.join(output_dir, PATHS_FILE)
        records.write_json(path, paths)
        entries['files'][PATHS_FILE] = {'records': None, 'sha256': records.file_digest(path)}
    for name, split in splits.items():
        path = os.path.join(output_dir, f'{name}.tfrecord')
        log(f'writing {path} ({len(split)} images)')
        entries['files'][f'{name}.tfrecord'] = records.write_records(path, split)
        known = split.labels[split.labels >= 0]
        entries[name] = np.bincount(known, minlength=num_classes).tolist()
    return entries


def create_fold(dataset, spec: FoldSpec, output_dir: str, log=print) -> dict:
    """Builds the fold `spec` of `dataset` (a libml.datasets plug-in) in `output_dir`;
    returns the content of counts.json: the settings that determine the fold, then
    what the data set says of it (class names, per-class counts of the long-tailed train
    set and of each split, its files' digests)."""
    summary = {**dataset.stored_spec(spec), **dataset.make_fold(spec, output_dir, log)}
    records.write_json(os.path.join(output_dir, COUNTS_FILE), summary)
    return summary


def ensure_fold(dataset, spec: FoldSpec, output_dir: str, log=print) -> dict:
    """Returns counts.json of the fold in `output_dir`, creating the fold if missing and
    rebuilding it (the same images, from the source) if a file is missing or changed, or
    if counts.json records no digests."""
    path = os.path.join(output_dir, COUNTS_FILE)
    if tf.io.gfile.exists(path):
        summary = records.read_json(path)
        stored = dataset.stored_spec(spec)
        # Settings stored only away from their default are compared both ways.
        if (
            {k: summary.get(k) for k in stored} != stored
            or summary.get('class_order', 0) != spec.class_order
            or summary.get('unlabeled_distribution', 'same') != spec.unlabeled_distribution
        ):
            raise records.DataError(f'{path}: holds another fold than {stored}')
        try:
            if 'files' not in summary:
                raise records.DataError(
                    f'{path}: records no digests (written by an earlier version of this code)'
                )
            for name in [f'{s}.tfrecord' for s in fold_splits(summary)]:
                records.check_file(os.path.join(output_dir, name), summary['files'][name], path)
            return summary
        except records.DataError as e:
            log(f'{e}; rebuilding the fold')
    if tf.io.gfile.exists(output_dir):
        return create_fold(dataset, spec, output_dir, log)
    try:
        return create_fold(dataset, spec, output_dir, log)
    except BaseException:
        # A fold that failed leaves no folder behind (it holds no counts.json anyway).
        if tf.io.gfile.exists(output_dir):
            tf.io.gfile.rmtree(output_dir)
        raise


def read_split(fold_dir: str, split: str, summary: dict, images: bool = True) -> records.Records:
    """One split of a fold, checked against its counts.json `summary`; without
    `images`, the images are left in the file (see `records.read_records`)."""
    name = f'{split}.tfrecord'
    return records.read_records(
        os.path.join(fold_dir, name), summary['files'][name], COUNTS_FILE, images=images
    )


def image_shape_of_fold(summary: dict, dataset) -> tuple[int, int, int]:
    """The shape of a fold's images: as its counts.json `summary` records it, else the
    fixed shape of its `dataset`'s images."""
    if 'image_shape' in summary:
        return tuple(summary['image_shape'])
    return dataset.image_shape


def fold_splits(summary: dict) -> tuple[str, ...]:
    """The splits a fold holds: SPLITS, and 'val' if its data came with one."""
    return SPLITS + (('val',) if 'val.tfrecord' in summary.get('files', {}) else ())
