"""Long-tailed subsets and labeled/unlabeled folds, as pure NumPy index arithmetic.

Follows the CIFAR-LT protocol of the paper: class l (0-indexed, the
source's label order) keeps N_l = floor(N_1 * gamma^(-l/(L-1))) images; a fold splits
each class into ceil(beta * N_l) labeled images and the rest unlabeled. `class_order`
can first reorder the classes (by a seed, or as listed), so that others become the rare
ones.

With unlabeled images that do not follow the labeled long tail (`--unlabeled_distribution`
uniform or reversed, as in later work on this setting: DASO, ACR), the labeled and
unlabeled per-class counts come from two profiles instead: the labeled one as above, the
unlabeled one with a head of its own, M_1, flat or with the tail reversed
(`unlabeled_counts`, `profile_split`).

DARP's protocol (the paper's Table 3) instead draws N_l labeled and M_l unlabeled images
with the same law from two head sizes, N_1 = 1500 and M_1 = 3000, without randomness
(`darp_split`).

Both random choices use NumPy's legacy `RandomState`, whose streams NumPy keeps frozen
across versions and platforms: the same flags select the same images everywhere.
"""

import math

import numpy as np

# Which images each class keeps does not depend on the fold: one fixed seed.
LONGTAIL_SEED = 0


def longtail_counts(head_count: int, num_classes: int, imbalance: float) -> list[int]:
    """N_l = floor(N_1 * gamma^(-l / (L - 1))) for l = 0 .. L-1 (class 0 is the head).

    The 1e-9 keeps exact integers (e.g. 5000 / 100 = 50) from flooring to one less
    when the power is computed a hair low.
    """
    if imbalance < 1:
        raise ValueError(f'imbalance must be >= 1, got {imbalance}')
    if num_classes == 1:
        return [head_count]
    return [
        math.floor(head_count * imbalance ** (-l / (num_classes - 1)) + 1e-9)
        for l in range(num_classes)
    ]


def class_order(num_classes: int, order: int | list[int]) -> np.ndarray:
    """The source class at each rank of the long tail: rank r (0 is the head) is class
    order[r]. `order` is that list itself, or a seed: 0 keeps the source's label order,
    k > 0 draws a permutation with RandomState(k), which decides which classes become
    the rare ones."""
    if isinstance(order, list):
        if sorted(order) != list(range(num_classes)):
            raise ValueError(
                f'class order must be a permutation of 0..{num_classes - 1}, got {order}'
            )
        return np.asarray(order, dtype=np.int64)
    if order < 0:
        raise ValueError(f'class order seed must be >= 0, got {order}')
    if order == 0:
        return np.arange(num_classes)
    return np.random.RandomState(order).permutation(num_classes)


def labeled_counts(counts: list[int], label_fraction: float) -> list[int]:
    """ceil(beta * N_l) per class; rounding to 9 decimals avoids ceil(30.000000000000004)."""
    if not 0 < label_fraction <= 1:
        raise ValueError(f'label_fraction must be in (0, 1], got {label_fraction}')
    return [math.ceil(round(label_fraction * n, 9)) for n in counts]


def longtail_subset(labels: np.ndarray, counts: list[int], seed: int = LONGTAIL_SEED):
    """Indices (ascending) of a seeded random subset keeping counts[c] images of class c."""
    rng = np.random.RandomState(seed)
    keep = []
    for c, n in enumerate(counts):
        members = np.flatnonzero(labels == c)
        if len(members) < n:
            raise ValueError(f'class {c} has {len(members)} images, the long tail needs {n}')
        keep.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(keep))


UNLABELED_DISTRIBUTIONS = ('same', 'uniform', 'reversed')


def unlabeled_counts(head_count: int, num_classes: int, imbalance: float, distribution: str):
    """The unlabeled profile M_l with head M_1 = `head_count`: 'uniform' keeps M_1 in
    every class; 'reversed' is the long-tail law read from the tail,
    M_l = floor(M_1 * gamma^(-(L-1-l)/(L-1))), so that the labeled set's rarest class is
    the unlabeled set's largest. ('same' is not a profile: it is the fold of
    `split_fold`, whose unlabeled images are the rest of the long tail.)"""
    if distribution == 'uniform':
        return [head_count] * num_classes
    if distribution == 'reversed':
        return longtail_counts(head_count, num_classes, imbalance)[::-1]
    raise ValueError(f"unlabeled profile must be 'uniform' or 'reversed', got {distribution!r}")


def profile_split(labels: np.ndarray, labeled: list[int], unlabeled: list[int], fold: int):
    """(labeled, unlabeled) index arrays of a balanced train set drawn by two profiles:
    seed the RNG with the fold once, then for each class in ascending order shuffle its
    positions (in record order), label the first labeled[c] and leave the next
    unlabeled[c] unlabeled."""
    if fold < 1:
        raise ValueError(f'fold must be >= 1, got {fold}')
    rng = np.random.RandomState(fold)
    labeled_idx, unlabeled_idx = [], []
    for c, (n, m) in enumerate(zip(labeled, unlabeled, strict=True)):
        members = np.flatnonzero(labels == c)
        if len(members) < n + m:
            raise ValueError(
                f'class {c} has {len(members)} images, the two profiles need {n} labeled + '
                f'{m} unlabeled'
            )
        rng.shuffle(members)
        labeled_idx.append(members[:n])
        unlabeled_idx.append(members[n : n + m])
    return np.sort(np.concatenate(labeled_idx)), np.sort(np.concatenate(unlabeled_idx))


def darp_split(labels: np.ndarray, labeled: list[int], unlabeled: list[int]):
    """DARP's fixed split of a balanced train set: (labeled, unlabeled) index arrays.

    Class c's first labeled[c] images in record order are labeled, its next
    unlabeled[c] unlabeled; nothing is random, so runs of this protocol differ by seed.
    """
    labeled_idx, unlabeled_idx = [], []
    for c, (n, m) in enumerate(zip(labeled, unlabeled, strict=True)):
        members = np.flatnonzero(labels == c)
        if len(members) < n + m:
            raise ValueError(f'class {c} has {len(members)} images, the split needs {n + m}')
        labeled_idx.append(members[:n])
        unlabeled_idx.append(members[n : n + m])
    return np.sort(np.concatenate(labeled_idx)), np.sort(np.concatenate(unlabeled_idx))


def split_fold(labels: np.ndarray, label_fraction: float, fold: int):
    """Splits positions 0..len(labels)-1 into (labeled, unlabeled) index arrays.

    As the reference: seed the RNG with the fold once, then for each class in ascending
    order shuffle its positions (in record order) and label the first ceil(beta * N_c).
    """
    if fold < 1:
        raise ValueError(f'fold must be >= 1, got {fold}')
    rng = np.random.RandomState(fold)
    num_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=num_classes).tolist()
    labeled, unlabeled = [], []
    for c, n_labeled in enumerate(labeled_counts(counts, label_fraction)):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        labeled.append(members[:n_labeled])
        unlabeled.append(members[n_labeled:])
    return np.sort(np.concatenate(labeled)), np.sort(np.concatenate(unlabeled))
