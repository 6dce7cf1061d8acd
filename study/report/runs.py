"""Reading a tree of runs, RUNS/<method>/fold_<f>/results.json, and the small helpers
every part of a report shares (means over folds, percentages, Markdown tables)."""

import dataclasses
import glob
import os
import re

import numpy as np

from crest import presets
from crest.results import Results


def load_runs(root: str) -> tuple[dict[str, dict[int, Results]], list[str]]:
    """{method: {fold: results}} of the finished runs, and the unfinished run folders.

    Methods come in the registry's order; other folder names follow, sorted.
    A preset that trains nothing of its own (e.g. FixMatch + LA) is added wherever the
    runs it is read off hold its numbers (`logit_adjusted_view`). A results.json that
    cannot be read raises OSError or ValueError (`Results.read`), naming the file.
    """
    runs, unfinished = {}, []
    for fold_dir in sorted(glob.glob(os.path.join(root, '*', 'fold_*'))):
        method = os.path.basename(os.path.dirname(fold_dir))
        match = re.fullmatch(r'fold_(\d+)', os.path.basename(fold_dir))
        path = os.path.join(fold_dir, 'results.json')
        if not match:
            continue
        if not os.path.exists(path):
            unfinished.append(fold_dir)
            continue
        runs.setdefault(method, {})[int(match.group(1))] = Results.read(path)
    for name in presets.METHODS:
        source = derived_from(name)
        if source is None:
            continue
        # Its own runs (trained as the method it adjusts), or else that method's.
        found = runs.get(name) or runs.get(source, {})
        if found:
            runs[name] = {f: logit_adjusted_view(r) for f, r in found.items()}
    order = [m for m in presets.METHODS if m in runs] + sorted(set(runs) - set(presets.METHODS))
    return {m: runs[m] for m in order}, unfinished


def derived_from(method: str) -> str | None:
    """The method whose runs a preset's numbers are read off (`logit_adjusted_view`);
    None for a method whose runs trained models of their own. Its picks, unlabeled-set
    numbers and precision are that method's, so tables of those leave it out."""
    preset = presets.METHODS.get(method)
    return preset.trains_as if preset is not None and preset.logit_adjusted else None


def logit_adjusted_view(results: Results) -> Results:
    """A run's results with the logit-adjusted test numbers in place of the plain ones."""
    return dataclasses.replace(
        results,
        balanced_accuracy=results.balanced_accuracy_la,
        generations=[
            dataclasses.replace(
                gen,
                balanced_accuracy=gen.balanced_accuracy_la,
                test=dataclasses.replace(
                    gen.test,
                    balanced_accuracy=gen.test.balanced_accuracy_la,
                    recall=gen.test.recall_la,
                ),
            )
            for gen in results.generations
        ],
    )


def title(method: str) -> str:
    """The method's name in the paper's tables."""
    return presets.METHODS[method].title if method in presets.METHODS else method


def own_runs(runs: dict) -> dict:
    """The methods whose runs trained models of their own (not read off another's)."""
    return {m: f for m, f in runs.items() if derived_from(m) is None}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def fold_std(values: np.ndarray) -> np.ndarray:
    """Sample standard deviation over folds (axis 0), as in the tables."""
    return values.std(axis=0, ddof=1)


def nanmean(values) -> float:
    """Mean of the defined values; NaN when there is none."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float('nan')


def pct(mean: float, std: float | None = None) -> str:
    return f'{100 * mean:.1f}' if std is None else f'{100 * mean:.1f} ± {100 * std:.1f}'


def signed(fraction: float) -> str:
    """A difference in points with its sign; never "-0.0"."""
    return f'{round(100 * fraction, 1) + 0.0:+.1f}'


def per_class(runs: dict, key) -> np.ndarray:
    """[folds, classes] array of key(results) over the folds of one method."""
    return np.array([key(r) for r in runs.values()], np.float64)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)


def class_header(first: Results) -> tuple[list[str], list[int]]:
    names, counts = first.class_names, first.labeled_counts
    return [f'{n} ({c})' for n, c in zip(names, counts, strict=True)], counts


def first_run(runs: dict) -> Results:
    return next(iter(next(iter(runs.values())).values()))


# What tables and claims read from one run's results.


def test_recall(r: Results) -> list[float]:
    return r.generations[-1].test.recall


def test_precision(r: Results) -> list[float]:
    return r.generations[-1].test.precision


def test_predicted(r: Results) -> list[float]:
    return r.generations[-1].test.predicted


def unlabeled_recall(r: Results) -> list[float]:
    return r.generations[-1].unlabeled.recall


def by_generation(r: Results) -> list[float]:
    return [g.balanced_accuracy for g in r.generations]


def balanced(r: Results) -> float:
    return r.balanced_accuracy


def balanced_la(r: Results) -> float:
    return r.balanced_accuracy_la
