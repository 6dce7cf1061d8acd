"""The records of finished cells, kept in the repository (docs/evidence/runs): what the
report reads of a run, copied from its run folder with the ledger; copied back to rebuild
the finished run folders on a new machine; and a re-run compared with them."""

import json
import os
import shutil

from crest.results import Results
from study.evidence import design, generation0, progress, timing

# A run folder's files the report reads (or a reader checks it by), none larger than a
# few tens of kB; checkpoints, TFRecords and test probabilities (400 kB per generation)
# stay behind.
RECORD_FILES = (
    'args.json',
    'results.json',
    generation0.COPIED,
    os.path.join('data', 'counts.json'),
)
GENERATION_RECORD_FILES = ('evals.json', 'picks.json')


def save_records(root: str, records: str, cell: design.Cell) -> list[str]:
    """Copies a finished cell's record files from its run folder under ROOT to the same
    place under RECORDS (each written whole under a temporary name, then renamed) and
    returns their paths there; [] while the cell is unfinished."""
    if progress.results(root, cell) is None:
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
    source = os.path.join(root, timing.LEDGER)
    if not os.path.exists(source):
        return None
    os.makedirs(records, exist_ok=True)
    path = os.path.join(records, timing.LEDGER)
    shutil.copyfile(source, path + '.partial')
    os.replace(path + '.partial', path)
    return path


def restore(records: str, root: str) -> tuple[list[str], int]:
    """Copies to ROOT what RECORDS hold and ROOT lacks, so that a runner on a new machine
    (or after ROOT was lost) knows the cells finished elsewhere and the hours they took:
    each finished cell's records become its run folder (written under a temporary name,
    then renamed), marked generation0.RESTORED; the ledger's lines missing from ROOT's go
    before ROOT's own. A run folder ROOT has, finished or not, is left as it is. Returns
    the run folders written and the number of ledger lines added."""
    written = []
    for folder, _, files in sorted(os.walk(records)):
        if 'results.json' not in files:
            continue
        target = os.path.join(root, os.path.relpath(folder, records))
        if os.path.exists(target):
            continue
        partial = target + '.restoring'
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder, partial)
        with open(os.path.join(partial, generation0.RESTORED), 'w') as f:
            json.dump({'restored_from': folder}, f)
        os.rename(partial, target)
        written.append(target)
    own = timing.ledger(root)
    missing = [line for line in timing.ledger(records) if line not in own]
    if missing:
        os.makedirs(root, exist_ok=True)
        path = os.path.join(root, timing.LEDGER)
        with open(path + '.partial', 'w') as f:
            f.writelines(json.dumps(line) + '\n' for line in missing + own)
        os.replace(path + '.partial', path)
    return written, len(missing)


# Fields of results.json that differ between two runs of the same cell by their nature.
_TIME_FIELDS = ('seconds',)
_RUN_FIELDS = ('workdir', 'cpu_threads')


def same_results(first: Results, second: Results) -> list[str]:
    """Where two results.json of one cell differ, but for wall time and where they ran
    (paths of the differing fields in their JSON; [] when the same)."""

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

    return _differing(strip(first.to_json()), strip(second.to_json()))


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
