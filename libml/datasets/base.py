"""The interface every data set implements: what it is, the checks of the settings that
concern it, and how it writes a fold. Callers resolve a data set by name once
(`libml.datasets.get`) and then only call these; they never ask which kind it is.
"""

import abc
import os

from libml import folds


class Dataset(abc.ABC):
    """A registered data set.

    Attributes:
      name: its registry name, the value of --dataset.
      num_classes: None when read from the data.
      image_shape: (H, W, C) of its images; None when set by --image_size or the data
        (a fold then records it in counts.json).
    """

    name: str
    num_classes: int | None = None
    image_shape: tuple[int, int, int] | None = None

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The class names by label, when known before the data is read."""
        return None

    @abc.abstractmethod
    def check(self, spec: folds.FoldSpec, class_prior: str = 'labeled') -> None:
        """Raises ValueError, one line naming the flag, for a setting this data set
        cannot take. `class_prior` 'analytic' is the gamma law of a synthetic long tail
        (crest/rebalance.py)."""

    @abc.abstractmethod
    def stored_spec(self, spec: folds.FoldSpec) -> dict:
        """The settings that determine this data set's fold, as counts.json stores them
        (its first entries) and a reuse of the fold compares them."""

    @abc.abstractmethod
    def make_fold(self, spec: folds.FoldSpec, output_dir: str, log) -> dict:
        """Writes the fold's files to `output_dir`; returns counts.json's entries after
        `stored_spec`'s: class_names, source, longtail, then the files' digests and each
        split's per-class counts (`folds.write_splits`), and whatever else describes it."""

    @abc.abstractmethod
    def describe(self, spec: folds.FoldSpec) -> str:
        """How the fold of `spec` is made, for the run's log, e.g. 'fold 2'."""

    def folder_name_parts(self, data_dir: str | None) -> list[str]:
        """'name=value' parts a run folder's name adds for this data set (besides the
        settings that differ from their defaults)."""
        del data_dir
        return []


def check_data_dir(name: str, spec: folds.FoldSpec) -> None:
    """--data_dir is set and exists (or is remote): data read only from there."""
    folds.require(bool(spec.data_dir), 'data_dir', f'set for --dataset={name}', spec.data_dir)
    folds.require(
        '://' in spec.data_dir or os.path.exists(spec.data_dir),
        'data_dir',
        'an existing folder or file',
        spec.data_dir,
    )


def check_own_long_tail(name: str, spec: folds.FoldSpec, class_prior: str) -> None:
    """Settings that reshape a synthetic long tail do not apply to a natural one."""
    folds.require(
        class_prior == 'labeled',
        'class_prior',
        f"'labeled' for {name} (the analytic prior assumes a synthetic long tail)",
        class_prior,
    )
    folds.require(
        spec.class_order == 0,
        'class_order',
        f'0 for {name} (its classes keep their own frequencies)',
        spec.class_order,
    )
    folds.require(
        spec.unlabeled_distribution == 'same',
        'unlabeled_distribution',
        f"'same' for {name} (its unlabeled images are the ones it has)",
        spec.unlabeled_distribution,
    )


def check_fixed_split(name: str, spec: folds.FoldSpec) -> None:
    """A split given rather than drawn per fold has one fold only."""
    folds.require(
        spec.fold == 1,
        'fold',
        f'1 for {name}: its split is fixed, runs differ by --seed',
        spec.fold,
    )
