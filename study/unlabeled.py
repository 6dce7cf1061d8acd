"""The unlabeled-distribution study (docs/unlabeled.md): does CReST+ hold when the
unlabeled images do not follow the labeled long tail, and does aligning to an estimate
of their distribution help? Fashion-MNIST-LT at the CPU demo's scale, each unlabeled
distribution (same, uniform, reversed) x each method (CReST, CReST+ aligned to the
labeled distribution, CReST+ aligned to the EM estimate). FixMatch is every CReST run's
generation 0 (no alignment, no picks yet).

`scripts/unlabeled_study.py` runs the cells and writes the document from their
results.json, which it copies to docs/evidence/unlabeled/ (the records outlive the run
folders).
"""

import dataclasses
import os

import numpy as np

from crest import rebalance
from crest.results import Results

DISTRIBUTIONS = ('same', 'uniform', 'reversed')
COMMAND = 'python scripts/unlabeled_study.py --action=run'
GENERATIONS = 3
STEPS = 900

# The CPU demo's settings (scripts/demo.sh), with 3 generations: t = 1, 0.75, 0.5.
COMMON_FLAGS = (
    '--dataset=fashion_mnist_lt',
    '--imbalance=100',
    '--label_fraction=0.1',
    '--fold=1',
    '--arch=cnn_small',
    f'--generations={GENERATIONS}',
    f'--steps_per_generation={STEPS}',
    '--eval_every=90',
    '--batch_size=32',
    '--uratio=1',
    '--lr_decay_level=7',
    '--ema_warmup',
    '--seed=1',
)


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    label: str
    flags: tuple[str, ...]


METHODS = (
    Method('crest', 'CReST', ('--dist_align=none',)),
    Method('crest_plus', 'CReST+, labeled prior', ('--dist_align=progressive',)),
    Method(
        'crest_plus_em',
        'CReST+, estimated prior',
        ('--dist_align=progressive', '--unlabeled_prior=estimated'),
    ),
)


@dataclasses.dataclass(frozen=True)
class Cell:
    distribution: str
    method: Method

    @property
    def name(self) -> str:
        return f'{self.distribution}/{self.method.name}'

    def flags(self, threads: int = 1) -> list[str]:
        return [
            *COMMON_FLAGS,
            f'--unlabeled_distribution={self.distribution}',
            *self.method.flags,
            f'--cpu_threads={threads}',
        ]


def cells() -> list[Cell]:
    return [Cell(d, m) for d in DISTRIBUTIONS for m in METHODS]


def read(records_dir: str, cell: Cell) -> Results | None:
    path = os.path.join(records_dir, cell.name, 'results.json')
    return Results.read(path) if os.path.exists(path) else None


def _pct(x) -> str:
    return '' if x is None else f'{100 * x:.1f}'


def _rebalanced(result: Results, rates) -> float:
    """N_max / N_min of generation 0's labeled set plus the picks that `rates` would
    keep of its predictions on the unlabeled set (floor(n_c * mu_c) per predicted
    class)."""
    predicted = np.asarray(result.generations[0].picks.predicted)
    counts = np.asarray(result.labeled_counts) + np.floor(predicted * np.asarray(rates) + 1e-9)
    return float(counts.max() / counts.min())


def document(records_dir: str) -> str:
    """docs/unlabeled.md from the records."""
    lines = [
        '# Unlabeled images off the labeled long tail',
        '',
        '<!-- Written by scripts/unlabeled_study.py --action=report from the records in',
        'docs/evidence/unlabeled/: do not edit by hand. -->',
        '',
        "Fashion-MNIST-LT, imbalance 100, 10% labeled (fold 1), the CPU demo's model and",
        f'batch, {GENERATIONS} generations of {STEPS} steps (t = 1, 0.75, 0.5 for CReST+),',
        'seed 1, one run per cell. `uniform` and `reversed` keep the labeled counts of',
        '`same` per class (500 in the head class ... 5 in the tail) and draw the unlabeled',
        'images by a profile of their own: 4,000 of every class, or the long tail read',
        'from its end (40 of class 0 ... 4,000 of class 9). FixMatch is generation 0 of',
        'the CReST run (900 steps, no alignment). Balanced test accuracy (%), the mean of',
        'the last 5 evaluations; LA: after logit adjustment by the labeled distribution.',
        '',
        f'Command: `{COMMAND}` (then `--action=report`).',
        '',
        '| unlabeled | method | gen 0 | final | final, LA | EM estimate L1 error by '
        'generation (mean prediction; labeled distribution) |',
        '|---|---|---|---|---|---|',
    ]
    missing = []
    for cell in cells():
        result = read(records_dir, cell)
        if result is None:
            missing.append(cell.name)
            continue
        first, last = result.generations[0], result.generations[-1]
        errors = [g.unlabeled_prior for g in result.generations if g.unlabeled_prior]
        said = ', '.join(
            f'{e.error:.3f} ({e.error_of_predictions:.3f}; {e.error_of_labeled:.3f})'
            for e in errors
            if e.error is not None
        )
        if cell.method.name == 'crest':
            lines.append(
                f'| {cell.distribution} | FixMatch | {_pct(first.balanced_accuracy)} | | '
                f'{_pct(first.balanced_accuracy_la)} | |'
            )
        lines.append(
            f'| {cell.distribution} | {cell.method.label} | {_pct(first.balanced_accuracy)} | '
            f'{_pct(last.balanced_accuracy)} | {_pct(last.balanced_accuracy_la)} | {said} |'
        )
    lines += ['', '## Should mu follow the estimate too?', '']
    lines += [
        'CReST keeps floor(n_c * mu_c) of the n_c images predicted as class c, with mu',
        'ranked by the labeled counts. Ranked by the estimated unlabeled distribution',
        'instead, mu would keep few pseudo-labels of the classes the unlabeled set has',
        "many of. The labeled set's imbalance N_max / N_min after generation 0's picks,",
        "from that generation's predictions (CReST+ with the estimated prior):",
        '',
        '| unlabeled | labeled set alone | + picks, mu by labeled counts | + picks, mu by '
        'the estimate |',
        '|---|---|---|---|',
    ]
    for distribution in DISTRIBUTIONS:
        result = read(records_dir, Cell(distribution, METHODS[2]))
        if result is None or not result.generations[0].unlabeled_prior:
            continue
        alpha = result.args['alpha']
        by_labeled = rebalance.sampling_rates(result.labeled_counts, alpha)
        estimate = result.generations[0].unlabeled_prior.estimate
        by_estimate = rebalance.sampling_rates(estimate, alpha)
        counts = np.asarray(result.labeled_counts)
        lines.append(
            f'| {distribution} | {counts.max() / counts.min():.0f} | '
            f'{_rebalanced(result, by_labeled):.1f} | {_rebalanced(result, by_estimate):.1f} |'
        )
    if missing:
        lines += ['', f'Still to run: {", ".join(missing)}.']
    return '\n'.join(lines) + '\n'
