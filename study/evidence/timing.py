"""The ledger of the study's runs that ended (finished, failed or stopped), and the speeds
and hours read from it."""

import json
import os

from study.evidence import design

# ROOT/LEDGER: one JSON line per run that ended (finished, failed or stopped): its cell
# (the run folder's path under ROOT, the same in the records), machine, wall time, steps.
LEDGER = 'ledger.jsonl'


def lines_of(root: str, cell: design.Cell) -> list[dict]:
    """The ledger lines of `cell`'s run, oldest first."""
    return [r for r in ledger(root) if r['cell'] == cell.workdir('')]


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


def steps_per_second(root: str, cell: design.Cell) -> float | None:
    """A finished cell's speed: the steps it trained over the wall time of all its
    stretches in the ledger (restarts included); None without a ledger line."""
    mine = lines_of(root, cell)
    finished = [r for r in mine if r['returncode'] == 0]
    seconds = sum(r['seconds'] for r in mine)
    if not finished or seconds <= 0:
        return None
    return finished[-1]['steps'] / seconds
