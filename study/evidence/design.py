"""What the evidence study trains: its settings (how long-tailed the data is) and cells
(one training run each: a preset at a setting, a budget, a fold, a seed and a precision),
with their scripts/crest.py flags and run folders."""

import dataclasses
import os

from crest import presets

STEPS = 19200  # S, every generation's length.
GENERATIONS = 2  # Of the self-training methods; the paper trains 6 of 2^16 steps each.
SEED = 1
FOLDS = (1, 2, 3)
CHECK_STEPS = 2400
EVALS_PER_GENERATION = 30  # eval_every = steps per generation / this.

# Flags every cell shares: the CPU benchmark's model and batch (32 labeled + 32 unlabeled
# images per step), the paper's other settings.
COMMON_FLAGS = (
    '--dataset=fashion_mnist_lt',
    '--arch=cnn_small',
    '--batch_size=32',
    '--uratio=1',
    '--lr_decay_level=7',
    '--ema_warmup',
)


@dataclasses.dataclass(frozen=True)
class Setting:
    """How long-tailed the data is: gamma, beta and which classes are rare (0: source
    order; k > 0: the permutation seeded by k; a tuple: the source class at each rank,
    the head first, see libml/lt.py). `label` names it in the document."""

    imbalance: int
    label_fraction: float
    class_order: int | tuple[int, ...] = 0
    label: str = dataclasses.field(default='', compare=False)

    @property
    def name(self) -> str:
        order = self.class_order
        order = '-'.join(map(str, order)) if isinstance(order, tuple) else order
        return f'g{self.imbalance}_b{round(100 * self.label_fraction)}_o{order}'

    @property
    def title(self) -> str:
        if isinstance(self.class_order, tuple):
            order = 'order ' + ','.join(map(str, self.class_order))
        elif self.class_order:
            order = f'permutation {self.class_order}'
        else:
            order = 'index order'
        title = f'gamma {self.imbalance}, beta {100 * self.label_fraction:g}%, {order}'
        return f'{self.label}: {title}' if self.label else title

    def flags(self) -> list[str]:
        order = self.class_order
        order = ','.join(map(str, order)) if isinstance(order, tuple) else order
        return [
            f'--imbalance={self.imbalance}',
            f'--label_fraction={self.label_fraction}',
            f'--class_order={order}',
        ]


BASE = Setting(100, 0.1, 0, 'base')

# The map's settings after the hard tail (`hard_tail`), one change each from the base,
# in the order they run; the last only if the budget allows.
MAP_OTHERS = (
    Setting(100, 0.03, 0, '3% labeled'),
    Setting(200, 0.1, 0, 'imbalance 200'),
    Setting(100, 0.1, 2, 'permutation 2'),
)

# The four cells of a setting: (role, preset, generations of S).
ROLES = (
    ('fixmatch_1gen', 'fixmatch', 1),
    ('fixmatch', 'fixmatch', GENERATIONS),
    ('fixmatch_crest_plus', 'fixmatch_crest_plus', GENERATIONS),
    ('fixmatch_crest', 'fixmatch_crest', GENERATIONS),
)

# Table 2's presets that this study does not run; 'Still to run' prices them.
TABLE2_OTHERS = (
    'fixmatch_da1',
    'fixmatch_rs',
    'fixmatch_cb',
    'mixmatch',
    'mixmatch_crest_plus',
    'mixmatch_crest',
    'supervised',
    'pseudo_label',
    'mean_teacher',
    'alpha0',
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run: a preset at a setting, a total budget, a fold, a seed and a
    precision."""

    setting: Setting
    method: str
    total_steps: int
    fold: int = 1
    stage: str = 'base'
    seed: int = SEED
    precision: str = 'float32'

    @property
    def generations(self) -> int:
        return GENERATIONS if presets.kind(self.method) == 'self_training' else 1

    @property
    def steps_per_generation(self) -> int:
        return self.total_steps // self.generations

    def workdir(self, root: str) -> str:
        # Out of the way of the float32 seed-1 runs: another seed's, another precision's.
        if self.seed != SEED:
            root = os.path.join(root, f'seed_{self.seed}')
        if self.precision != 'float32':
            root = os.path.join(root, self.precision)
        return os.path.join(
            root,
            self.setting.name,
            f'total_{self.total_steps}',
            self.method,
            f'fold_{self.fold}',
        )

    def flags(self, threads: int) -> list[str]:
        """scripts/crest.py's flags for this cell, but --workdir."""
        flags = [*COMMON_FLAGS, f'--seed={self.seed}', *self.setting.flags()]
        flags.append(f'--method={self.method}')
        flags += [f'--total_steps={self.total_steps}', f'--fold={self.fold}']
        if self.generations > 1:
            flags.append(f'--generations={self.generations}')
        if self.precision != 'float32':
            flags.append(f'--precision={self.precision}')
        eval_every = max(1, self.steps_per_generation // EVALS_PER_GENERATION)
        return flags + [f'--eval_every={eval_every}', f'--cpu_threads={threads}']


def setting_cells(setting: Setting, fold: int, stage: str, precision: str) -> dict[str, Cell]:
    """{role: cell} of the four cells of a setting on a fold."""
    return {
        role: Cell(setting, method, gens * STEPS, fold, stage, precision=precision)
        for role, method, gens in ROLES
    }


def check_cell() -> Cell:
    return Cell(BASE, 'fixmatch', CHECK_STEPS, 1, 'check')


def precision_cell() -> Cell:
    return Cell(BASE, 'fixmatch', STEPS, 1, 'precision', precision='bf16')


def cells_key(cell: Cell) -> tuple:
    """Cells that train the same run (the same folder) are one."""
    return (cell.setting, cell.method, cell.total_steps, cell.fold, cell.seed, cell.precision)
