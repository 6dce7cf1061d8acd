"""The evidence study: does CReST pay off at near-converged generations, and where?

Every cell is a training run of scripts/crest.py on Fashion-MNIST-LT, in a folder
ROOT/[<precision>/]<setting>/total_<steps>/<method>/fold_<f>. Generations are S = STEPS
steps long: the convergence curve of the second edition (SECOND_EDITION) put FixMatch at
S 1.5 points under its plateau, and its doubling rule answered 2S; under the paper's
Table 2 rule FixMatch trains 2S, so shorter generations handicap self-training, not
FixMatch, and a gain found at S holds a fortiori. The stages, in the order they run:

1. check: FixMatch for CHECK_STEPS at the base setting, fold 1: the cell run again after
   a change to training code, to show its results unchanged (`same_results`).
2. base: at the base setting, folds 1-3, FixMatch for S (the Table 1 rule's baseline)
   and for 2S (the Table 2 rule's), CReST+ and CReST for 2 generations of S.
3. precision: FixMatch for S on base fold 1 in bf16. The map trains in bf16 if that run
   lands within two seed-to-seed standard deviations of the float32 one and trains at
   least BF16_MIN_SPEEDUP times as fast (`map_precision`).
4. map: fold 1 of each of `map_settings` (a hard tail, fewer labels, a longer tail,
   another permutation), the same four cells; FixMatch's bias is read off its S run.
5. extra: FixMatch + DA (t=0.5) for 2S on the base folds.

CReST's generation 0 is FixMatch's S run of the same setting, fold, seed and precision
(training is deterministic), so it starts from a copy of it (`generation0_source`,
`copy_generation0`) rather than training it twice.

`plan(root)` lists the cells in the order they should run, as far as the finished ones
decide it (base fold 1's FixMatch decides the hard tail; the precision run decides the
map's precision), so that a study stopped anywhere and started again goes on where it
was. A finished cell's small files are copied to the records folder (`save_records`),
which is kept in the repository and from which the report is written. This module
imports nothing heavy: the runner and the report read it.
"""

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence

from crest import methods

STEPS = 19200  # S, every generation's length.
GENERATIONS = 2  # Of the self-training methods; the paper trains 6 of 2^16 steps each.
SEED = 1
FOLDS = (1, 2, 3)
CHECK_STEPS = 2400
EVALS_PER_GENERATION = 30  # eval_every = steps per generation / this.
# A doubling of the steps that gains less than this did not pay (the curve's rule).
MIN_EFFECT = 0.01
BF16_MIN_SPEEDUP = 1.3
# ROOT/LEDGER: one JSON line per run that ended (finished, failed or stopped): machine,
# wall time, steps.
LEDGER = 'ledger.jsonl'

# The second edition's measurements at the base setting, fold 1 (float32, AMD EPYC):
# FixMatch's balanced accuracy by steps, and at 19,200 steps by seed. Its run folders were
# lost with its machine; docs/archive/results_second_edition.md is its document.
SECOND_EDITION = {
    'curve': {2400: 0.757, 4800: 0.783, 9600: 0.799, 19200: 0.812, 38400: 0.823, 76800: 0.827},
    'seeds': {1: 0.812, 2: 0.806, 3: 0.809},
}

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
        return GENERATIONS if methods.kind(self.method) == 'self_training' else 1

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
    of the finished float32 runs of the ledger (resumed ones left out); None before any.
    No less than the longest run takes alone."""
    done = [
        r
        for r in ledger(root)
        if r['returncode'] == 0
        and r['seconds'] > 0
        and not r.get('resumed')
        and r.get('precision', 'float32') == 'float32'
    ]
    if not done:
        return None
    rate = sum(r['steps'] for r in done) / sum(r['seconds'] for r in done)  # One run's.
    jobs = done[-1]['jobs']
    return max(sum(steps) / jobs, max(steps, default=0)) / rate / 3600, jobs


def steps_per_second(root: str, cell: Cell) -> float | None:
    """A finished cell's speed: the steps it trained over the wall time of all its
    stretches in the ledger (restarts included); None without a ledger line."""
    mine = [r for r in ledger(root) if r['workdir'] == cell.workdir(root)]
    finished = [r for r in mine if r['returncode'] == 0]
    seconds = sum(r['seconds'] for r in mine)
    if not finished or seconds <= 0:
        return None
    return finished[-1]['steps'] / seconds


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


def seed_std() -> float:
    """The sample standard deviation of the second edition's FixMatch S runs over seeds."""
    values = list(SECOND_EDITION['seeds'].values())
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def hard_tail(root: str) -> Setting | None:
    """The base setting with the classes that FixMatch (S steps, base fold 1) recalls
    worst on the test set made the rarest: the classes sorted by that recall, best
    first (ties by index). None until that run has finished."""
    found = results(root, setting_cells(BASE, 1, 'base', 'float32')['fixmatch_1gen'])
    if found is None:
        return None
    recall = found['generations'][-1]['test']['recall']
    order = tuple(sorted(range(len(recall)), key=lambda c: (-recall[c], c)))
    return Setting(BASE.imbalance, BASE.label_fraction, order, 'hard tail')


def map_settings(root: str) -> list[Setting]:
    """The map's settings known so far, in the order they run: the base (its fold 1
    cells are the base stage's), the hard tail once decided, then MAP_OTHERS."""
    hard = hard_tail(root)
    return [BASE, *([hard] if hard else []), *MAP_OTHERS]


def map_precision(root: str) -> dict | None:
    """The precision of the map's runs and why: bf16 when its FixMatch S run on base fold
    1 lands within two seed-to-seed standard deviations of the float32 one and trains
    BF16_MIN_SPEEDUP times as fast or more than the float32 FixMatch S runs of the base
    folds on average (the speed of one run moves with what runs beside it); None until
    all have finished."""
    f32 = [setting_cells(BASE, f, 'base', 'float32')['fixmatch_1gen'] for f in FOLDS]
    bf16 = precision_cell()
    a, b = accuracy(root, f32[0]), accuracy(root, bf16)
    speeds = [steps_per_second(root, c) for c in f32]
    speed_b = steps_per_second(root, bf16)
    if None in (a, b, speed_b, *speeds):
        return None
    speed_a = sum(speeds) / len(speeds)
    limit = 2 * seed_std()
    speedup = speed_b / speed_a
    close, fast = abs(b - a) <= limit, speedup >= BF16_MIN_SPEEDUP
    return {
        'precision': 'bf16' if close and fast else 'float32',
        'float32': a,
        'bf16': b,
        'limit': limit,
        'speedup': speedup,
        'close': close,
        'fast': fast,
    }


def base_cells() -> list[Cell]:
    """The base stage, FixMatch S on every fold first (CReST copies its generation 0)."""
    by_fold = [setting_cells(BASE, f, 'base', 'float32') for f in FOLDS]
    first = [cells['fixmatch_1gen'] for cells in by_fold]
    return first + [c for cells in by_fold for r, c in cells.items() if r != 'fixmatch_1gen']


def extra_cells() -> list[Cell]:
    return [Cell(BASE, 'fixmatch_da05', GENERATIONS * STEPS, f, 'extra') for f in FOLDS]


def plan(root: str) -> tuple[list[Cell], str | None]:
    """Every cell known so far, in the order to run them (finished ones included), and
    what the rest waits for (None when the plan is complete)."""
    base = base_cells()
    cells = [check_cell(), *base[: len(FOLDS)], precision_cell(), *base[len(FOLDS) :]]
    waiting = []
    precision = map_precision(root)
    if hard_tail(root) is None:
        waiting.append("base fold 1's FixMatch run (it decides the hard tail)")
    if precision is None:
        waiting.append("the bf16 run (it decides the map's precision)")
    else:
        for setting in map_settings(root)[1:]:
            cells += setting_cells(setting, 1, 'map', precision['precision']).values()
    if not waiting:
        cells += extra_cells()
    return cells, '; '.join(waiting) or None


def selected(cell: Cell, names: Sequence[str]) -> bool:
    """Whether a run limited to the settings `names` (all when empty) runs `cell`: how a
    short budget drops settings. The base setting is never dropped."""
    return not names or cell.setting == BASE or cell.setting.name in names


def cells_key(cell: Cell) -> tuple:
    """Cells that train the same run (the same folder) are one."""
    return (cell.setting, cell.method, cell.total_steps, cell.fold, cell.seed, cell.precision)


def generation0_source(cell: Cell, cells: list[Cell]) -> Cell | None:
    """The cell of `cells` whose run is `cell`'s generation 0, or None.

    That is the single-generation preset with the same settings (FixMatch for FixMatch +
    CReST), for one generation of the same length on the same fold: it trains the same
    steps from the same seed and picks pseudo-labels at the same rates."""
    if cell.generations == 1:
        return None
    own = methods.METHODS[methods.canonical(cell.method)].settings
    planned = {cells_key(c): c for c in cells}
    for name, method in methods.METHODS.items():
        source = dataclasses.replace(cell, method=name, total_steps=cell.steps_per_generation)
        if (
            methods.kind(name) == 'single'
            and method.settings == own
            and cells_key(source) in planned
        ):
            return planned[cells_key(source)]
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
        elif isinstance(have, list):  # An explicit class order.
            same = ','.join(map(str, have)) == value
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


# --------------------------------------------------------------------------------------
# Records: what the report reads of a finished run, kept in the repository.

# A run folder's files the report reads (or a reader checks it by), none larger than a
# few tens of kB; checkpoints, TFRecords and test probabilities (400 kB per generation)
# stay behind.
RECORD_FILES = ('args.json', 'results.json', COPIED, os.path.join('data', 'counts.json'))
GENERATION_RECORD_FILES = ('evals.json', 'picks.json')


def save_records(root: str, records: str, cell: Cell) -> list[str]:
    """Copies a finished cell's record files from its run folder under ROOT to the same
    place under RECORDS (each written whole under a temporary name, then renamed) and
    returns their paths there; [] while the cell is unfinished."""
    if results(root, cell) is None:
        return []
    source, target = cell.workdir(root), cell.workdir(records)
    names = list(RECORD_FILES)
    for g in range(cell.generations):
        names += [os.path.join(f'gen_{g:02d}', n) for n in GENERATION_RECORD_FILES]
    written = []
    for name in names:
        if os.path.exists(os.path.join(source, name)):
            path = os.path.join(target, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copyfile(os.path.join(source, name), path + '.partial')
            os.replace(path + '.partial', path)
            written.append(path)
    return written


def save_ledger(root: str, records: str) -> str | None:
    """Copies ROOT's ledger to RECORDS; its path there, None when ROOT has none."""
    source = os.path.join(root, LEDGER)
    if not os.path.exists(source):
        return None
    os.makedirs(records, exist_ok=True)
    path = os.path.join(records, LEDGER)
    shutil.copyfile(source, path + '.partial')
    os.replace(path + '.partial', path)
    return path


# Fields of results.json that differ between two runs of the same cell by their nature.
_TIME_FIELDS = ('seconds',)
_RUN_FIELDS = ('workdir', 'cpu_threads')


def same_results(first: dict, second: dict) -> list[str]:
    """Where two results.json of one cell differ, but for wall time and where they ran
    (paths of the differing fields; [] when the same)."""

    def strip(value, path=()):
        if isinstance(value, dict):
            return {
                k: strip(v, (*path, k))
                for k, v in value.items()
                if k not in _TIME_FIELDS and not (path == ('args',) and k in _RUN_FIELDS)
            }
        if isinstance(value, list):
            return [strip(v, path) for v in value]
        return value

    return _differing(strip(first), strip(second))


def _differing(a, b, path: str = '') -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _differing(a.get(key), b.get(key), f'{path}/{key}')
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differing(x, y, f'{path}[{i}]')
        ]
    return [] if a == b else [path or '/']
