"""A balanced source made long-tailed: the shared base of CIFAR-LT, Fashion-MNIST-LT and
the synthetic data set.

A family loads its balanced train and test splits (`load`); this class cuts the train
split to a long tail (lt.py: class l keeps N_l = floor(N_1 * gamma^(-l/(L-1))) images),
optionally relabels the classes first (`class_order`, so that others become the rare
ones), and splits it into a labeled/unlabeled fold, or DARP's fixed split. With
--unlabeled_distribution uniform or reversed, the unlabeled images follow a profile of
their own (lt.unlabeled_counts, head M_1 = `unlabeled_head`) instead of the long tail.
"""

import abc
import dataclasses

import numpy as np

from libml import folds, lt, records
from libml.datasets import base


@dataclasses.dataclass(frozen=True)
class Source:
    """A balanced data set in memory: uint8 images [N, H, W, C], int64 labels [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    origin: str = ''  # Where the images were read from.


def check_class_order(order: int | list[int], num_classes: int) -> None:
    """--class_order is a seed >= 0, or a list naming each of the `num_classes` classes
    once."""
    if not isinstance(order, list):
        # A seed of NumPy's RandomState, which takes it below 2^32.
        folds.require(0 <= order < 2**32, 'class_order', f'in [0, {2**32 - 1}]', order)
        return
    allowed = f'a permutation of 0..{num_classes - 1}'
    outside = [c for c in order if not 0 <= c < num_classes]
    folds.require(not outside, 'class_order', f'{allowed} (out of range: {outside})', order)
    repeated = sorted({c for c in order if order.count(c) > 1})
    folds.require(not repeated, 'class_order', f'{allowed} (repeated: {repeated})', order)
    missing = sorted(set(range(num_classes)) - set(order))
    folds.require(not missing, 'class_order', f'{allowed} (missing: {missing})', order)


class LongTailed(base.Dataset):
    """A balanced source of `num_classes` classes of `image_shape` images, made
    long-tailed with N_1 = `head_count` images kept in the largest class.

    With `darp_unlabeled_head` (M_1), DARP's protocol instead: N_1 is the labeled head,
    M_1 the unlabeled one; both sets follow the long-tail law separately and the split
    is fixed (lt.darp_split), --label_fraction and --fold unused.

    With `unlabeled_head` (M_1), --unlabeled_distribution uniform or reversed can be
    asked for: per class the fold's labeled count ceil(beta * N_l) as usual, and M_l
    unlabeled images of the flat or reversed profile (lt.profile_split).
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        image_shape: tuple[int, int, int],
        head_count: int,
        darp_unlabeled_head: int | None = None,
        unlabeled_head: int | None = None,
    ):
        self.name = name
        self.num_classes = num_classes
        self.image_shape = image_shape
        self.head_count = head_count
        self.darp_unlabeled_head = darp_unlabeled_head
        self.unlabeled_head = unlabeled_head

    @abc.abstractmethod
    def load(self, data_dir: str | None) -> Source:
        """The balanced source, from `data_dir` or the family's default place."""

    def check(self, spec: folds.FoldSpec, class_prior: str = 'labeled') -> None:
        check_class_order(spec.class_order, self.num_classes)
        # gamma = N_1 / N_L: beyond N_1 the smallest class keeps no image at all.
        folds.require(
            1 <= spec.imbalance <= self.head_count,
            'imbalance',
            f'in [1, {self.head_count}] for {self.name} (its largest class keeps '
            f'{self.head_count} images)',
            spec.imbalance,
        )
        folds.require(
            spec.image_size == 0,
            'image_size',
            f'0 for {self.name} (its images keep their size)',
            spec.image_size,
        )
        if self.darp_unlabeled_head:
            base.check_fixed_split(self.name, spec)
        else:
            self._check_label_fraction(spec)
        if spec.unlabeled_distribution != 'same':
            folds.require(
                bool(self.unlabeled_head) and not self.darp_unlabeled_head,
                'unlabeled_distribution',
                f"'same' for {self.name} (it has no unlabeled profile of its own)",
                spec.unlabeled_distribution,
            )

    def _check_label_fraction(self, spec: folds.FoldSpec) -> None:
        """Refuses a beta whose rounding, ceil(beta * N_l), labels every image (no
        unlabeled one left) or labels one image of every class (the long tail gone)."""
        counts = lt.longtail_counts(self.head_count, self.num_classes, spec.imbalance)
        labeled = lt.labeled_counts(counts, spec.label_fraction)
        where = f'for {self.name} at --imbalance={spec.imbalance:g}'
        folds.require(
            sum(labeled) < sum(counts),
            'label_fraction',
            f'<= {1 - 1 / counts[0]:.6g} {where} (above, ceil(beta * N_l) labels every '
            'image: no unlabeled image is left)',
            spec.label_fraction,
        )
        folds.require(
            len(set(labeled)) > 1 or len(set(counts)) == 1,
            'label_fraction',
            f'> {1 / counts[0]:.6g} {where} (below, ceil(beta * N_l) labels 1 image of '
            'every class: the labeled set loses the long tail)',
            spec.label_fraction,
        )

    def stored_spec(self, spec: folds.FoldSpec) -> dict:
        # A class order other than the source's (seed 0) is named only when used, so
        # that folds made before it existed still match.
        stored = dict(
            dataset=self.name,
            imbalance=spec.imbalance,
            label_fraction=spec.label_fraction,
            fold=spec.fold,
        )
        # Likewise the unlabeled distribution.
        if spec.class_order:
            stored['class_order'] = spec.class_order
        if spec.unlabeled_distribution != 'same':
            stored['unlabeled_distribution'] = spec.unlabeled_distribution
        return stored

    def describe(self, spec: folds.FoldSpec) -> str:
        if self.darp_unlabeled_head:
            how = "DARP's fixed split; --label_fraction unused"
        else:
            how = f'fold {spec.fold}'
        if spec.unlabeled_distribution != 'same':
            how += f', unlabeled {spec.unlabeled_distribution} (M_1 = {self.unlabeled_head})'
        return how + (f', class order {spec.class_order}' if spec.class_order else '')

    def splits(self, spec: folds.FoldSpec) -> tuple[dict[str, records.Records], dict]:
        """({split: Records}, counts.json entries) of the fold of `spec`, in memory.

        With `class_order` a seed k > 0 or a list the classes are first relabeled by
        that permutation (`lt.class_order`): label r is the source class of rank r, so
        that label 0 stays the head and the class names follow their images.
        """
        counts = lt.longtail_counts(self.head_count, self.num_classes, spec.imbalance)
        source = self.load(spec.data_dir)
        if source.train_images.shape[1:] != self.image_shape:
            raise records.DataError(
                f'{self.name}: images are {source.train_images.shape[1:]}, expected '
                f'{self.image_shape}'
            )
        if spec.class_order:
            order = lt.class_order(self.num_classes, spec.class_order)
            rank = np.argsort(order)  # rank[source class] = its new label
            source = dataclasses.replace(
                source,
                train_labels=rank[source.train_labels],
                test_labels=rank[source.test_labels],
                class_names=tuple(source.class_names[c] for c in order),
            )
        if self.darp_unlabeled_head:
            unlabeled_counts = lt.longtail_counts(
                self.darp_unlabeled_head, self.num_classes, spec.imbalance
            )
            labeled, unlabeled = lt.darp_split(source.train_labels, counts, unlabeled_counts)
            counts = [n + m for n, m in zip(counts, unlabeled_counts, strict=True)]
        elif spec.unlabeled_distribution != 'same':
            labeled_counts = lt.labeled_counts(counts, spec.label_fraction)
            unlabeled_counts = lt.unlabeled_counts(
                self.unlabeled_head, self.num_classes, spec.imbalance, spec.unlabeled_distribution
            )
            labeled, unlabeled = self._profile_split(
                source.train_labels, labeled_counts, unlabeled_counts, spec
            )
            counts = [n + m for n, m in zip(labeled_counts, unlabeled_counts, strict=True)]
            profile = dict(
                distribution=spec.unlabeled_distribution,
                head=self.unlabeled_head,
                labeled=labeled_counts,
                unlabeled=unlabeled_counts,
            )
        else:
            keep = lt.longtail_subset(source.train_labels, counts)
            labeled_pos, unlabeled_pos = lt.split_fold(
                source.train_labels[keep], spec.label_fraction, spec.fold
            )
            labeled, unlabeled = keep[labeled_pos], keep[unlabeled_pos]
        train_ids = np.arange(len(source.train_labels), dtype=np.int64)
        train = records.Records(source.train_images, source.train_labels, train_ids)
        splits = {
            'labeled': train.take(labeled),
            'unlabeled': train.take(unlabeled),
            'test': records.Records(
                source.test_images,
                source.test_labels,
                np.arange(len(source.test_labels), dtype=np.int64),
            ),
        }
        entries = dict(class_names=list(source.class_names), source=source.origin, longtail=counts)
        if spec.unlabeled_distribution != 'same':
            entries['unlabeled_profile'] = profile
        return splits, entries

    def _profile_split(self, labels, labeled_counts, unlabeled_counts, spec: folds.FoldSpec):
        """lt.profile_split, its shortfall said in terms of the flags."""
        have = np.bincount(labels, minlength=self.num_classes)
        for c, (n, m) in enumerate(zip(labeled_counts, unlabeled_counts, strict=True)):
            if n + m > have[c]:
                raise records.DataError(
                    f'{self.name}: --unlabeled_distribution={spec.unlabeled_distribution} '
                    f'needs {n} labeled (--label_fraction={spec.label_fraction:g}) + {m} '
                    f'unlabeled images of class {c}, the source has {have[c]}'
                )
        return lt.profile_split(labels, labeled_counts, unlabeled_counts, spec.fold)

    def make_fold(self, spec: folds.FoldSpec, output_dir: str, log) -> dict:
        splits, entries = self.splits(spec)
        if not self.darp_unlabeled_head:  # The long tail beta labels, with or without a profile.
            counts = lt.longtail_counts(self.head_count, self.num_classes, spec.imbalance)
            warn_rounded_up(counts, spec.label_fraction, entries['class_names'], log)
        written = folds.write_splits(output_dir, splits, len(entries['class_names']), log)
        return {**entries, **written}


def warn_rounded_up(counts: list[int], label_fraction: float, names, log) -> None:
    """Logs a warning naming the classes whose labeled count, ceil(beta * N_l), is over
    twice beta * N_l: rounding up flattens the labeled class distribution, the prior of
    the sampling rates and of the alignment."""
    labeled = lt.labeled_counts(counts, label_fraction)
    raised = [
        f'{names[c]} {n} ({label_fraction * counts[c]:.2g} implied)'
        for c, n in enumerate(labeled)
        if n > 2 * label_fraction * counts[c]
    ]
    if raised:
        log(
            f'warning: --label_fraction={label_fraction:g} rounds the labeled count of '
            f'{len(raised)} class(es) up to over twice beta * N_l: {", ".join(raised)}; the '
            'labeled class distribution (the prior of the rates mu) is flatter than the '
            'long tail'
        )
