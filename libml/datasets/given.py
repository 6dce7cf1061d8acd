"""The user's own images, already split by their owner and used as they are: no
synthetic long tail, no random fold. The shared base of the two forms they come in, an
image folder (folder.py) and an .npz file of arrays (npz.py).

Classes are ranked by their labeled count, index 0 the largest (ties by name), whatever
their names or original indices: the rebalancing rates are set per rank.

Ids are stable (each form says how) and train ids are unique across labeled and
unlabeled images, so an exported labeled set names each image once.
"""

import abc
import dataclasses
import os

import numpy as np

from libml import folds, records
from libml.datasets import base
from libml.records import DataError

MIN_IMAGE_SIZE = 8  # The augmentations pad by 4 pixels, reflecting.
CHANNELS = (1, 3)  # Gray or RGB: what the augmentations take.
UNKNOWN = -1  # The label of an unlabeled image whose class is not known.
MAX_CLASSES = 100_000  # Far above ImageNet-21k's 21,841.


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


def rank_classes(names: list[str], labeled: np.ndarray) -> list[int]:
    """The classes' indices in rank order: most labeled images first, ties by name."""
    counts = np.bincount(labeled, minlength=len(names))
    return sorted(range(len(names)), key=lambda c: (-counts[c], names[c]))


def check_channels(channels: dict[int, str], where: str) -> int:
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


class Given(base.Dataset):
    """The user's data in one form: `load` reads it; the fold is its split as given,
    its images resized to one square size (--image_size, or the form's default)."""

    def __init__(self, name: str):
        self.name = name

    @abc.abstractmethod
    def load(self, data_dir: str, image_size: int, bad_images: str, log) -> GivenSplits:
        """The splits in `data_dir`; an unreadable image stops or is skipped per
        `bad_images` (folds.BAD_IMAGES)."""

    def check(self, spec: folds.FoldSpec, class_prior: str = 'labeled') -> None:
        base.check_data_dir(self.name, spec)
        base.check_own_long_tail(self.name, spec, class_prior)
        base.check_fixed_split(self.name, spec)

    def stored_spec(self, spec: folds.FoldSpec) -> dict:
        data_dir = os.path.abspath(spec.data_dir or '')
        return dict(dataset=self.name, data_dir=data_dir, image_size=spec.image_size)

    def describe(self, spec: folds.FoldSpec) -> str:
        return f'{spec.data_dir}, split as given (--imbalance, --label_fraction unused)'

    def folder_name_parts(self, data_dir: str | None) -> list[str]:
        # The user's data is named by where it is: two folders, two run folders.
        name = os.path.basename(os.path.normpath(data_dir or ''))
        return [f'data={os.path.splitext(name)[0]}']

    def make_fold(self, spec: folds.FoldSpec, output_dir: str, log) -> dict:
        if not spec.data_dir:
            raise DataError(f'--dataset={self.name} reads its data from --data_dir')
        given = self.load(spec.data_dir, spec.image_size, spec.bad_images, log)
        splits = {
            s: records.Records(given.images[s], given.labels[s], given.ids[s]) for s in given.images
        }
        # Stored in a fixed random order, not the files' (grouped by class).
        rng = np.random.default_rng(folds.GIVEN_ORDER_SEED)
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
        num_classes = len(given.class_names)
        written = folds.write_splits(output_dir, splits, num_classes, log, paths=given.paths)
        return {**entries, **written}
