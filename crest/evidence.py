"""The evidence study: when does class-rebalancing pay off, at converged generations?

Three stages, each a list of training runs ("cells") of scripts/crest.py on
Fashion-MNIST-LT, every one a folder ROOT/<setting>/total_<steps>/<method>/fold_<f>
(ROOT/seed_<s>/... for a seed other than SEED):

1. The convergence curve. FixMatch on fold 1 of the base setting for 2,400, 4,800,
   9,600, ... steps, doubling until doubling gains less than MIN_EFFECT of balanced
   accuracy (a fall counts: more steps do not help). The first such length S is the
   length of every generation below. FixMatch is also run with other seeds
   (SPREAD_SEEDS) at one length, to measure how much single runs differ.
2. The regime map. For each setting (imbalance, label fraction, which classes are rare),
   fold 1: FixMatch for S steps (the paper's Table 1 rule compares G generations of S
   with one), FixMatch for G x S (its Table 2 rule: equal total budget), CReST+ and
   CReST for G generations of S. FixMatch's bias is read off its S-step run.
3. Table 2. At the setting where FixMatch is most biased, every preset of
   crest/methods.py at the total budget G x S on folds 1-3, most telling first.

CReST's generation 0 is FixMatch's run of the same length, seed and fold (the same
settings but the number of generations; training is deterministic), so a cell whose
generation 0 another planned cell trains starts from a copy of it
(`generation0_source`, `copy_generation0`) rather than training it twice.

`plan(root)` lists the cells in the order they should run, as far as the finished
ones decide it (the curve decides S; the map's FixMatch runs decide Table 2's setting),
so that a study stopped anywhere and started again goes on where it was. This module
imports nothing heavy: the runner and the report read it.
"""

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence

from crest import methods

# Doubling the steps must gain less balanced accuracy than this (1 point).
MIN_EFFECT = 0.01
# Generations of the self-training methods; the paper trains 6, of 2^16 steps each.
GENERATIONS = 2
SEED = 1  # Every cell's, but the spread's.
CURVE_START = 2400
# Raised by one doubling when 38,400 steps still gained a point or more (docs/RESULTS.md).
CURVE_MAX = 76800
# The convergence rule compares single runs: FixMatch at the base setting, fold 1, is run
# again with these seeds (its initialisation, augmentation and batch order; the fold's
# images stay) at SPREAD_STEPS, so that the document can set a doubling's gain against
# the seed-to-seed spread. SPREAD_STEPS: one of the curve's lengths near its end, the
# generation length of the first self-training runs, and cheaper than the longer ones.
SPREAD_SEEDS = (2, 3)
SPREAD_STEPS = 19200
EVALS_PER_GENERATION = 30  # eval_every = steps per generation / this.
FOLDS = (1, 2, 3)
# ROOT/LEDGER: one JSON line per run that ended (finished, failed or stopped): machine,
# wall time, steps.
LEDGER = 'ledger.jsonl'

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
    order, k > 0: the permutation seeded by k, see libml/lt.py)."""

    imbalance: int
    label_fraction: float
    class_order: int = 0

    @property
    def name(self) -> str:
        return f'g{self.imbalance}_b{round(100 * self.label_fraction)}_o{self.class_order}'

    @property
    def title(self) -> str:
        order = 'index order' if not self.class_order else f'permutation {self.class_order}'
        return f'gamma {self.imbalance}, beta {100 * self.label_fraction:g}%, {order}'

    def flags(self) -> list[str]:
        return [
            f'--imbalance={self.imbalance}',
            f'--label_fraction={self.label_fraction}',
            f'--class_order={self.class_order}',
        ]


BASE = Setting(100, 0.1, 0)
# One change at a time from the base: which classes are rare, a longer tail, fewer labels.
SETTINGS = (
    BASE,
    Setting(100, 0.1, 1),
    Setting(100, 0.1, 2),
    Setting(200, 0.1, 0),
    Setting(100, 0.03, 0),
)

# Table 2's presets, the ones its claims and orderings need most first. The "+ LA" ones
# are read off these runs.
TABLE2_FIRST = ('fixmatch', 'fixmatch_crest_plus', 'fixmatch_crest')
TABLE2_THEN = (
    'fixmatch_da05',
    'fixmatch_da1',
    'fixmatch_rs',
    'fixmatch_cb',
    'mixmatch',
    'mixmatch_crest_plus',
    'mixmatch_crest',
    'supervised',
    'pseudo_label',
    'mean_teacher',
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run: a preset at a setting, a total budget, a fold and a seed."""

    setting: Setting
    method: str
    total_steps: int
    fold: int = 1
    stage: str = 'map'
    seed: int = SEED

    @property
    def generations(self) -> int:
        return GENERATIONS if methods.kind(self.method) == 'self_training' else 1

    @property
    def steps_per_generation(self) -> int:
        return self.total_steps // self.generations

    def workdir(self, root: str) -> str:
        # Runs of another seed: under ROOT/seed_<s>, out of the way of ROOT/<setting>.
        if self.seed != SEED:
            root = os.path.join(root, f'seed_{self.seed}')
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
        eval_every = max(1, self.steps_per_generation // EVALS_PER_GENERATION)
        return flags + [f'--eval_every={eval_every}', f'--cpu_threads={threads}']


def results(root: str, cell: Cell) -> dict | None:
    """The cell's results.json, None while it is unfinished."""
    path = os.path.join(cell.workdir(root), 'results.json')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def accuracy(root: str, cell: Cell) -> float | None:
    found = results(root, cell)
    return None if found is None else found['balanced_accuracy']


def ledger(root: str) -> list[dict]:
    """The runner's records of the runs that ended (finished, failed or stopped), oldest
    first."""
    path = os.path.join(root, LEDGER)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def hours(root: str, steps: list[int]) -> tuple[float, int] | None:
    """(Hours that runs of these numbers of steps take, runs side by side) at the speed
    of the finished runs of the ledger (resumed ones left out); None before any. No less
    than the longest run takes alone."""
    done = [
        r
        for r in ledger(root)
        if r['returncode'] == 0 and r['seconds'] > 0 and not r.get('resumed')
    ]
    if not done:
        return None
    rate = sum(r['steps'] for r in done) / sum(r['seconds'] for r in done)  # One run's.
    jobs = done[-1]['jobs']
    return max(sum(steps) / jobs, max(steps, default=0)) / rate / 3600, jobs


def curve_cell(steps: int) -> Cell:
    return Cell(BASE, 'fixmatch', steps, 1, 'curve')


def curve(root: str) -> tuple[list[Cell], int | None]:
    """The curve's cells so far and the converged length S (None until known).

    S is the first length whose doubling gains less than MIN_EFFECT of balanced accuracy
    (or loses); the curve grows by one doubling while that is not found, up to CURVE_MAX.
    """
    cells = [curve_cell(CURVE_START), curve_cell(2 * CURVE_START)]
    while True:
        short, long = cells[-2], cells[-1]
        a, b = accuracy(root, short), accuracy(root, long)
        if a is None or b is None:
            return cells, None
        if b - a < MIN_EFFECT:
            return cells, short.total_steps
        if long.total_steps >= CURVE_MAX:
            return cells, None
        cells.append(curve_cell(2 * long.total_steps))


def spread_cells() -> list[Cell]:
    return [Cell(BASE, 'fixmatch', SPREAD_STEPS, 1, 'spread', seed) for seed in SPREAD_SEEDS]


def curve_waiting(root: str, cells: list[Cell]) -> str:
    """What an unconverged curve waits for: its runs, or a longer CURVE_MAX."""
    if all(accuracy(root, c) is not None for c in cells):
        return (
            f'the convergence curve, which still gains a point or more at {CURVE_MAX:,} steps: '
            'raise CURVE_MAX in crest/evidence.py'
        )
    return 'the convergence curve'


def minority_bias(result: dict, split: str = 'unlabeled', generation: int = -1) -> dict | None:
    """FixMatch's bias as in the paper's Fig. 2, on the minority half of the classes
    (the smaller half by labeled count): mean precision, mean recall and their
    difference, from `split` ('unlabeled' or 'test') of a generation, the last by default.
    When no minority class is ever predicted, precision counts as 1 in the bias."""
    report = result['generations'][generation].get(split)
    if not report:
        return None
    counts = result['labeled_counts']
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    minority = order[len(order) - len(order) // 2 :]
    # Precision of a class never predicted is undefined, not 0: left out of the mean.
    predicted = [c for c in minority if report['predicted'][c] > 0]
    precision = sum(report['precision'][c] for c in predicted) / max(len(predicted), 1)
    recall = sum(report['recall'][c] for c in minority) / len(minority)
    smallest = order[-1]
    return {
        'split': split,
        'minority_precision': precision if predicted else None,
        'minority_recall': recall,
        'bias': (precision if predicted else 1.0) - recall,
        'never_predicted': [result['class_names'][c] for c in minority if c not in predicted],
        'smallest_class': result['class_names'][smallest],
        'smallest_recall': report['recall'][smallest],
        'smallest_precision': report['precision'][smallest] if smallest in predicted else None,
    }


def map_cells(converged: int) -> dict[str, dict[str, Cell]]:
    """{setting name: {role: cell}} of the regime map, for generations of `converged`."""
    s = converged
    return {
        setting.name: {
            'fixmatch_1gen': Cell(setting, 'fixmatch', s, 1, 'map'),
            'fixmatch': Cell(setting, 'fixmatch', GENERATIONS * s, 1, 'map'),
            'fixmatch_crest_plus': Cell(setting, 'fixmatch_crest_plus', GENERATIONS * s, 1, 'map'),
            'fixmatch_crest': Cell(setting, 'fixmatch_crest', GENERATIONS * s, 1, 'map'),
        }
        for setting in SETTINGS
    }


def most_biased(root: str, converged: int) -> Setting | None:
    """The setting whose FixMatch (S steps, fold 1) is most biased on the unlabeled set;
    None until every setting's run has finished, so that the choice never changes."""
    for setting in SETTINGS:
        if results(root, Cell(setting, 'fixmatch', converged)) is None:
            return None
    return by_bias(root, converged)[0]


def by_bias(root: str, converged: int) -> list[Setting]:
    """The settings, most biased FixMatch first, then the least biased, then the others
    from more to less; in SETTINGS order until every FixMatch S-step run has finished."""
    biases = {}
    for setting in SETTINGS:
        found = results(root, Cell(setting, 'fixmatch', converged))
        if found is None:
            return list(SETTINGS)
        biases[setting] = minority_bias(found)['bias']
    ranked = sorted(SETTINGS, key=lambda s: -biases[s])
    return [ranked[0], ranked[-1], *ranked[1:-1]]


def table2_cells(setting: Setting, converged: int) -> list[Cell]:
    """Every training preset at the total budget GENERATIONS x S, folds 1-3, the ones
    the claims need most first, and FixMatch for S steps on every fold (Table 1 rule)."""
    total = GENERATIONS * converged
    cells = []
    for f in FOLDS:
        for m in TABLE2_FIRST:
            if m == 'fixmatch_crest':  # Its generation 0 first: CReST copies it.
                cells.append(Cell(setting, 'fixmatch', converged, f, 'table2'))
            cells.append(Cell(setting, m, total, f, 'table2'))
    # Claim 4 (alpha = 0 gains nothing over generations) is read within each run: one
    # fold first, the others after every other preset.
    cells.append(Cell(setting, 'alpha0', total, FOLDS[0], 'table2'))
    cells += [Cell(setting, m, total, f, 'table2') for m in TABLE2_THEN for f in FOLDS]
    cells += [Cell(setting, 'alpha0', total, f, 'table2') for f in FOLDS[1:]]
    return cells


def plan(root: str) -> tuple[list[Cell], str | None]:
    """Every cell known so far, in the order to run them (finished ones included), and
    what the rest waits for (None when the plan is complete)."""
    cells, converged = curve(root)
    # The spread next: it tells whether the curve's last gains exceed seed-to-seed noise.
    if converged is None:
        return cells + spread_cells(), curve_waiting(root, cells)
    cells += spread_cells()
    by_setting = map_cells(converged)
    # FixMatch for S steps everywhere first: it decides Table 2's setting and the order
    # of the rest, the extremes of bias first, so that a partial map already spans it.
    cells += [roles['fixmatch_1gen'] for roles in by_setting.values()]
    order = [by_setting[s.name] for s in by_bias(root, converged)]
    cells += [roles[r] for roles in order for r in ('fixmatch', 'fixmatch_crest_plus')]
    # CReST trains one generation of its own (its first is FixMatch's S-step run).
    cells += [roles['fixmatch_crest'] for roles in order]
    waiting = None
    chosen = most_biased(root, converged)
    if chosen is None:
        waiting = "every setting's FixMatch run, which decides Table 2's setting"
    else:
        cells += table2_cells(chosen, converged)
    unique = list(dict.fromkeys(cells_key(c) for c in cells))
    first = {cells_key(c): c for c in reversed(cells)}
    return [first[k] for k in unique], waiting


def selected(cell: Cell, names: Sequence[str]) -> bool:
    """Whether a run limited to the settings `names` (all when empty) runs `cell`: how a
    short budget drops settings. The curve and the seed spread are never dropped."""
    return not names or cell.stage in ('curve', 'spread') or cell.setting.name in names


def cells_key(cell: Cell) -> tuple:
    """Cells that train the same run (the same folder) are one."""
    return (cell.setting, cell.method, cell.total_steps, cell.fold, cell.seed)


def generation0_source(cell: Cell, cells: list[Cell]) -> Cell | None:
    """The cell of `cells` whose run is `cell`'s generation 0, or None.

    That is the single-generation preset with the same settings (FixMatch for FixMatch +
    CReST), for one generation of the same length on the same fold: it trains the same
    steps from the same seed and picks pseudo-labels at the same rates."""
    if cell.generations == 1:
        return None
    own = methods.METHODS[methods.canonical(cell.method)].settings
    planned = {cells_key(c) for c in cells}
    for name, method in methods.METHODS.items():
        source = Cell(
            cell.setting, name, cell.steps_per_generation, cell.fold, cell.stage, cell.seed
        )
        if (
            methods.kind(name) == 'single'
            and method.settings == own
            and cells_key(source) in planned
        ):
            return source
    return None


def steps_to_train(root: str, cell: Cell, cells: list[Cell]) -> int:
    """The steps `cell` trains itself: all but a copied generation 0 (copied already, or
    to be copied from a planned run when the cell has not started)."""
    if os.path.exists(cell.workdir(root)):
        copied = os.path.exists(os.path.join(cell.workdir(root), COPIED))
    else:
        copied = generation0_source(cell, cells) is not None
    return cell.total_steps - (cell.steps_per_generation if copied else 0)


def steps_left(root: str, cell: Cell, cells: list[Cell]) -> int:
    """`steps_to_train` less what the run folder already holds: finished generations
    (their metrics.json is written last) and the latest checkpoint of the first unfinished
    one, where a resumed run goes on."""
    left = steps_to_train(root, cell, cells)
    workdir = cell.workdir(root)
    for g in range(cell.generations):
        gen_dir = os.path.join(workdir, f'gen_{g:02d}')
        if g == 0 and os.path.exists(os.path.join(workdir, COPIED)):
            continue  # Not counted in steps_to_train.
        if os.path.exists(os.path.join(gen_dir, 'metrics.json')):
            left -= cell.steps_per_generation
            continue
        return left - _checkpoint_step(os.path.join(gen_dir, 'ckpt'))
    return left


def _checkpoint_step(ckpt_dir: str) -> int:
    """The step of the latest checkpoint in CKPT_DIR (named ckpt-<step> in the text
    file `checkpoint` that TensorFlow keeps beside them), 0 without one."""
    try:
        with open(os.path.join(ckpt_dir, 'checkpoint')) as f:
            for line in f:
                name, _, value = line.partition(':')
                if name.strip() == 'model_checkpoint_path':
                    return int(value.strip().strip('"').rsplit('-', 1)[1])
    except (FileNotFoundError, IndexError, ValueError):
        pass
    return 0


COPIED = 'generation0.json'  # In a run folder: the run its generation 0 was copied from.
# Flags in which a generation 0 and its copy's run differ.
_RUN_LENGTH_FLAGS = ('method', 'generations', 'total_steps', 'cpu_threads')


def _differences(args: dict, cell: Cell) -> list[str]:
    """The flags of `cell` (but the run length) that a run's args.json does not hold."""
    wrong = []
    for flag in cell.flags(threads=1):
        name, _, value = flag[2:].partition('=')
        if name in _RUN_LENGTH_FLAGS or name not in args:
            continue
        have = args[name]
        if isinstance(have, bool):
            same = have == (value in ('', 'true', 'True', '1'))  # `--ema_warmup` alone: true.
        elif isinstance(have, int | float):
            same = float(value) == float(have)
        else:
            same = str(have) == value
        if not same:
            wrong.append(f'{flag} (the run has {have!r})')
    if args.get('steps_per_generation') != cell.steps_per_generation:
        wrong.append(f'{cell.steps_per_generation} steps per generation')
    return wrong


def copy_generation0(root: str, source: Cell, cell: Cell) -> None:
    """Starts `cell`'s run with the finished generation 0 of `source`'s run (checkpoint,
    evaluations, picks, export, metrics), written under a temporary name and renamed, so
    that an interruption leaves the run folder absent or complete. The loop then skips
    generation 0 as finished and checks its export against its picks. ValueError if the
    source's args.json differs from the cell's flags or the cell has started."""
    source_dir = source.workdir(root)
    with open(os.path.join(source_dir, 'args.json')) as f:
        wrong = _differences(json.load(f), cell)
    if wrong:
        raise ValueError(f'{source_dir} was not trained with {", ".join(wrong)}')
    copy_generation0_files(source_dir, cell.workdir(root))


def copy_generation0_files(source_dir: str, workdir: str) -> None:
    """`copy_generation0` from run folder to run folder, unchecked but that WORKDIR must
    not exist."""
    if os.path.exists(workdir):
        raise ValueError(f'{workdir}: exists; generation 0 is copied only into a new run')
    partial = workdir + '.copying'
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(os.path.join(source_dir, 'gen_00'), os.path.join(partial, 'gen_00'))
    with open(os.path.join(partial, COPIED), 'w') as f:
        json.dump({'copied_from': source_dir}, f)
    os.rename(partial, workdir)
