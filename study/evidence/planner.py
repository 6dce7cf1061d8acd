"""The plan of the evidence study: which cells run, in which order, as far as the finished
ones decide it (base fold 1's FixMatch decides the hard tail; the precision run decides the
map's precision), so that a study stopped anywhere and started again goes on where it was;
and the second edition's measurements that chose the generation length."""

from collections.abc import Sequence

from study.evidence import design, progress, timing

# A doubling of the steps that gains less than this did not pay (the curve's rule).
MIN_EFFECT = 0.01
BF16_MIN_SPEEDUP = 1.3

# The second edition's measurements at the base setting, fold 1 (float32, AMD EPYC):
# FixMatch's balanced accuracy by steps, and at 19,200 steps by seed. Its run folders were
# lost with its machine; docs/archive/results_second_edition.md is its document.
SECOND_EDITION = {
    'curve': {2400: 0.757, 4800: 0.783, 9600: 0.799, 19200: 0.812, 38400: 0.823, 76800: 0.827},
    'seeds': {1: 0.812, 2: 0.806, 3: 0.809},
}


def seed_std() -> float:
    """The sample standard deviation of the second edition's FixMatch S runs over seeds."""
    values = list(SECOND_EDITION['seeds'].values())
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def hard_tail(root: str) -> design.Setting | None:
    """The base setting with the classes that FixMatch (S steps, base fold 1) recalls
    worst on the test set made the rarest: the classes sorted by that recall, best
    first (ties by index). None until that run has finished."""
    found = progress.results(
        root, design.setting_cells(design.BASE, 1, 'base', 'float32')['fixmatch_1gen']
    )
    if found is None:
        return None
    recall = found.generations[-1].test.recall
    order = tuple(sorted(range(len(recall)), key=lambda c: (-recall[c], c)))
    return design.Setting(design.BASE.imbalance, design.BASE.label_fraction, order, 'hard tail')


def map_settings(root: str) -> list[design.Setting]:
    """The map's settings known so far, in the order they run: the base (its fold 1
    cells are the base stage's), the hard tail once decided, then MAP_OTHERS."""
    hard = hard_tail(root)
    return [design.BASE, *([hard] if hard else []), *design.MAP_OTHERS]


def float32_steps(cell: design.Cell, steps: int, decided: dict | None) -> int:
    """`steps` of `cell` as float32 steps of the same time, for pricing at the ledger's
    float32 speed: a bf16 cell's divided by the speed-up the precision run measured
    (`decided`: `map_precision`'s answer, read once by the caller)."""
    return round(steps / decided['speedup']) if cell.precision == 'bf16' and decided else steps


def map_precision(root: str) -> dict | None:
    """The precision of the map's runs and why: bf16 when its FixMatch S run on base fold
    1 lands within two seed-to-seed standard deviations of the float32 one and trains
    BF16_MIN_SPEEDUP times as fast or more than the float32 FixMatch S runs of the base
    folds on average (the speed of one run moves with what runs beside it); None until
    all have finished."""
    f32 = [
        design.setting_cells(design.BASE, f, 'base', 'float32')['fixmatch_1gen']
        for f in design.FOLDS
    ]
    bf16 = design.precision_cell()
    a, b = progress.accuracy(root, f32[0]), progress.accuracy(root, bf16)
    speeds = [timing.steps_per_second(root, c) for c in f32]
    speed_b = timing.steps_per_second(root, bf16)
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


def base_cells() -> list[design.Cell]:
    """The base stage, FixMatch S on every fold first (CReST copies its generation 0)."""
    by_fold = [design.setting_cells(design.BASE, f, 'base', 'float32') for f in design.FOLDS]
    first = [cells['fixmatch_1gen'] for cells in by_fold]
    return first + [c for cells in by_fold for r, c in cells.items() if r != 'fixmatch_1gen']


def extra_cells() -> list[design.Cell]:
    return [
        design.Cell(design.BASE, 'fixmatch_da05', design.GENERATIONS * design.STEPS, f, 'extra')
        for f in design.FOLDS
    ]


def plan(root: str) -> tuple[list[design.Cell], str | None]:
    """Every cell known so far, in the order to run them (finished ones included), and
    what the rest waits for (None when the plan is complete)."""
    base = base_cells()
    cells = [
        design.check_cell(),
        *base[: len(design.FOLDS)],
        design.precision_cell(),
        *base[len(design.FOLDS) :],
    ]
    waiting = []
    precision = map_precision(root)
    if hard_tail(root) is None:
        waiting.append("base fold 1's FixMatch run (it decides the hard tail)")
    if precision is None:
        waiting.append("the bf16 run (it decides the map's precision)")
    else:
        for setting in map_settings(root)[1:]:
            cells += design.setting_cells(setting, 1, 'map', precision['precision']).values()
    if not waiting:
        cells += extra_cells()
    return cells, '; '.join(waiting) or None


def selected(cell: design.Cell, names: Sequence[str]) -> bool:
    """Whether a run limited to the settings `names` (all when empty) runs `cell`: how a
    short budget drops settings. The base setting's claims are never dropped; the extras,
    planned after the whole map, go with the map's dropped end."""
    if not names:
        return True
    if cell.stage == 'extra':
        return False
    return cell.setting == design.BASE or cell.setting.name in names
