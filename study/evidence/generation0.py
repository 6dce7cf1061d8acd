"""Sharing generation 0: CReST's generation 0 is FixMatch's run of the same settings,
fold, seed, precision and length (training is deterministic), so a CReST cell starts from
a copy of it rather than training it twice."""

import dataclasses
import json
import os
import shutil

from crest import presets
from study.evidence import design

COPIED = 'generation0.json'  # In a run folder: the run its generation 0 was copied from.
# In a run folder: rebuilt from the cell's records on another machine (store.restore). It
# holds no model, so it cannot give its generation 0.
RESTORED = 'restored.json'

# Flags in which a generation 0 and its copy's run differ.
_RUN_LENGTH_FLAGS = ('method', 'generations', 'total_steps', 'cpu_threads')


def source(cell: design.Cell, cells: list[design.Cell]) -> design.Cell | None:
    """The cell of `cells` whose run is `cell`'s generation 0, or None.

    That is the single-generation preset with the same settings (FixMatch for FixMatch +
    CReST), for one generation of the same length on the same fold: it trains the same
    steps from the same seed and picks pseudo-labels at the same rates."""
    if cell.generations == 1:
        return None
    own = presets.METHODS[presets.canonical(cell.method)].settings
    planned = {design.cells_key(c): c for c in cells}
    for name, method in presets.METHODS.items():
        candidate = dataclasses.replace(cell, method=name, total_steps=cell.steps_per_generation)
        if (
            presets.kind(name) == 'single'
            and method.settings == own
            and design.cells_key(candidate) in planned
        ):
            return planned[design.cells_key(candidate)]
    return None


def copyable(root: str, source: design.Cell) -> bool:
    """Whether `source`'s run folder under ROOT can give its generation 0: not one
    rebuilt from records, which hold no model."""
    return not os.path.exists(os.path.join(source.workdir(root), RESTORED))


def _differences(args: dict, cell: design.Cell) -> list[str]:
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


def copy(root: str, source: design.Cell, cell: design.Cell) -> None:
    """Starts `cell`'s run with the finished generation 0 of `source`'s run (checkpoint,
    evaluations, picks, export, metrics), written under a temporary name and renamed, so
    that an interruption leaves the run folder absent or complete. The loop then skips
    generation 0 as finished and checks its export against its picks. ValueError if the
    source's args.json differs from the cell's flags, the source holds no model or the
    cell has started."""
    source_dir = source.workdir(root)
    if not copyable(root, source):
        raise ValueError(f'{source_dir} was rebuilt from its records and holds no model')
    with open(os.path.join(source_dir, 'args.json')) as f:
        wrong = _differences(json.load(f), cell)
    if wrong:
        raise ValueError(f'{source_dir} was not trained with {", ".join(wrong)}')
    copy_files(source_dir, cell.workdir(root))


def copy_files(source_dir: str, workdir: str) -> None:
    """`copy` from run folder to run folder, unchecked but that WORKDIR must
    not exist."""
    if os.path.exists(workdir):
        raise ValueError(f'{workdir}: exists; generation 0 is copied only into a new run')
    partial = workdir + '.copying'
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(os.path.join(source_dir, 'gen_00'), os.path.join(partial, 'gen_00'))
    with open(os.path.join(partial, COPIED), 'w') as f:
        json.dump({'copied_from': source_dir}, f)
    os.rename(partial, workdir)
