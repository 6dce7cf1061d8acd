"""How far a cell has come under ROOT: its results once finished, the steps it trains
itself and the steps it has left."""

import os

from crest.results import Results
from study.evidence import design, generation0


def results(root: str, cell: design.Cell) -> Results | None:
    """The cell's results.json, None while it is unfinished; OSError or ValueError naming
    the file if it cannot be read (`Results.read`)."""
    path = os.path.join(cell.workdir(root), 'results.json')
    if not os.path.exists(path):
        return None
    return Results.read(path)


def accuracy(root: str, cell: design.Cell) -> float | None:
    found = results(root, cell)
    return None if found is None else found.balanced_accuracy


def steps_to_train(root: str, cell: design.Cell, cells: list[design.Cell]) -> int:
    """The steps `cell` trains itself: all but a copied generation 0 (copied already, or
    to be copied from a planned run when the cell has not started, unless that run was
    rebuilt from its records)."""
    if os.path.exists(cell.workdir(root)):
        copied = os.path.exists(os.path.join(cell.workdir(root), generation0.COPIED))
    else:
        source = generation0.source(cell, cells)
        copied = source is not None and generation0.copyable(root, source)
    return cell.total_steps - (cell.steps_per_generation if copied else 0)


def steps_left(root: str, cell: design.Cell, cells: list[design.Cell]) -> int:
    """`steps_to_train` less what the run folder already holds: finished generations
    (their metrics.json is written last) and the latest checkpoint of the first unfinished
    one, where a resumed run goes on."""
    left = steps_to_train(root, cell, cells)
    workdir = cell.workdir(root)
    for g in range(cell.generations):
        gen_dir = os.path.join(workdir, f'gen_{g:02d}')
        if g == 0 and os.path.exists(os.path.join(workdir, generation0.COPIED)):
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
