"""Long-tail counts and folds, as the paper's CIFAR-LT protocol."""

import numpy as np
import pytest

from libml import lt


def test_cifar10_counts_gamma_100():
    counts = lt.longtail_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


@pytest.mark.parametrize('gamma,total', [(50, 13996), (200, 11203)])
def test_cifar10_totals(gamma, total):
    assert sum(lt.longtail_counts(5000, 10, gamma)) == total


@pytest.mark.parametrize('gamma,total', [(50, 12608), (100, 10847)])
def test_cifar100_totals(gamma, total):
    assert sum(lt.longtail_counts(500, 100, gamma)) == total


def test_labeled_counts_beta_10_percent():
    counts = lt.longtail_counts(5000, 10, 100)
    labeled = lt.labeled_counts(counts, 0.1)
    assert labeled == [500, 300, 180, 108, 65, 39, 24, 14, 9, 5]
    assert sum(labeled) == 1244


def test_bad_imbalance_and_fraction():
    with pytest.raises(ValueError, match='imbalance'):
        lt.longtail_counts(5000, 10, 0.5)
    with pytest.raises(ValueError, match='label_fraction'):
        lt.labeled_counts([10], 1.5)
    with pytest.raises(ValueError, match='label_fraction'):
        lt.labeled_counts([10], 0)


def _balanced_labels(per_class=100, num_classes=10):
    return np.repeat(np.arange(num_classes), per_class)


def test_subset_has_the_counts_and_is_deterministic():
    labels = _balanced_labels()
    counts = lt.longtail_counts(80, 10, 20)
    keep = lt.longtail_subset(labels, counts)
    assert np.bincount(labels[keep], minlength=10).tolist() == counts
    np.testing.assert_array_equal(keep, lt.longtail_subset(labels, counts))
    assert not np.array_equal(keep, lt.longtail_subset(labels, counts, seed=1))
    with pytest.raises(ValueError, match='class 0'):
        lt.longtail_subset(labels, [101] + counts[1:])


def test_fold_split_determinism():
    labels = np.random.RandomState(3).permutation(_balanced_labels(50))
    l1, u1 = lt.split_fold(labels, 0.1, fold=1)
    l1b, u1b = lt.split_fold(labels, 0.1, fold=1)
    l2, _ = lt.split_fold(labels, 0.1, fold=2)
    np.testing.assert_array_equal(l1, l1b)
    np.testing.assert_array_equal(u1, u1b)
    assert not np.array_equal(l1, l2)
    # A partition of all positions, with ceil(0.1 * 50) = 5 labeled per class.
    np.testing.assert_array_equal(np.sort(np.concatenate([l1, u1])), np.arange(len(labels)))
    assert np.bincount(labels[l1]).tolist() == [5] * 10
    with pytest.raises(ValueError, match='fold'):
        lt.split_fold(labels, 0.1, fold=0)


def test_fold_follows_reference_procedure():
    # Reference: np.random.seed(fold); per class ascending, shuffle its indices in record
    # order, the first ceil(beta * N_c) are labeled.
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 0])
    rng = np.random.RandomState(4)
    expected = []
    for c, n in ((0, 3), (1, 2)):  # ceil(.5 * 5) = 3, ceil(.5 * 3) = 2
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        expected += members[:n].tolist()
    labeled, _ = lt.split_fold(labels, 0.5, fold=4)
    np.testing.assert_array_equal(labeled, np.sort(expected))


# DARP's protocol: N_1 = 1500 labeled, M_1 = 3000 unlabeled, the same law for both.
def test_darp_counts_gamma_100():
    assert lt.longtail_counts(1500, 10, 100) == [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]
    assert lt.longtail_counts(3000, 10, 100) == [3000, 1798, 1078, 646, 387, 232, 139, 83, 50, 30]


@pytest.mark.parametrize('gamma, labeled, unlabeled', [(50, 4196, 8397), (150, 3496, 6996)])
def test_darp_totals(gamma, labeled, unlabeled):
    assert sum(lt.longtail_counts(1500, 10, gamma)) == labeled
    assert sum(lt.longtail_counts(3000, 10, gamma)) == unlabeled


def test_darp_split_takes_the_first_images_of_each_class_in_record_order():
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 1, 0, 1])
    labeled, unlabeled = lt.darp_split(labels, [2, 1], [1, 2])
    # Class 0 at 1, 2, 4, 6, 8: labeled 1, 2, unlabeled 4. Class 1 at 0, 3, 5, 7, 9:
    # labeled 0, unlabeled 3, 5.
    assert labeled.tolist() == [0, 1, 2]
    assert unlabeled.tolist() == [3, 4, 5]
    again = lt.darp_split(labels, [2, 1], [1, 2])  # nothing random
    assert [a.tolist() for a in again] == [labeled.tolist(), unlabeled.tolist()]
    with pytest.raises(ValueError, match='class 0 has 5 images, the split needs 6'):
        lt.darp_split(labels, [3, 1], [3, 1])


def test_class_order_is_a_seed_or_the_order_itself():
    np.testing.assert_array_equal(lt.class_order(4, 0), [0, 1, 2, 3])
    np.testing.assert_array_equal(lt.class_order(4, 1), np.random.RandomState(1).permutation(4))
    np.testing.assert_array_equal(lt.class_order(4, [2, 0, 3, 1]), [2, 0, 3, 1])
    for bad in ([2, 0, 1], [2, 0, 3, 3], [2, 0, 3, 4], [0, 1, 2, 3, 4]):
        with pytest.raises(ValueError, match=r'permutation of 0\.\.3'):
            lt.class_order(4, bad)
