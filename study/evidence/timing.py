"""The ledger of the study's runs that ended (finished, failed or stopped), how it is
written (a killed runner's runs included, their held time apart), and the speeds and
hours read from it."""

import dataclasses
import json
import os
import subprocess
import time

from libml import machine
from study.evidence import design

# ROOT/LEDGER: one JSON line per run that ended (finished, failed or stopped): its cell
# (the run folder's path under ROOT, the same in the records), machine, wall time, steps.
LEDGER = 'ledger.jsonl'


# ROOT/RUNNING: the ledger lines of the runs going, as the runner last saw them (every
# poll). A runner that ends, however it ends but killed outright (SIGKILL, or the machine
# stopped), removes it; the next one finds it left behind and puts those lines in the
# ledger.
RUNNING = 'running.json'


# A look at a run this many seconds overdue (the runner did not poll: stopped, Ctrl-Z in
# its terminal) counts as held if the run used next to no CPU meanwhile (stopped with it).
HELD_GAP = 60


@dataclasses.dataclass
class Run:
    """A run the runner started, and how long it was held: stopped (kill -STOP) while the
    machine did other work, or stopped with the runner (see HELD_GAP). Held time is not
    training time; the ledger keeps it apart. Times are monotonic: a machine asleep counts
    for nothing."""

    cell: design.Cell
    process: subprocess.Popen
    resumed: bool  # Its folder was there: it trains only part of its steps.
    steps: int  # The cell's steps but a copied generation 0's.
    began: float = dataclasses.field(default_factory=time.monotonic)
    held: float = 0.0
    seen: float = dataclasses.field(default_factory=time.monotonic)  # The last look at it.
    cpu: float = 0.0  # Its CPU seconds at the last look.

    def watch(self) -> None:
        """Counts the time since the last look as held if the run is stopped now (so
        within a poll of the truth at each end of a hold), or if the look is over HELD_GAP
        seconds late and the run used under a tenth of that in CPU time meanwhile."""
        now, state, cpu = time.monotonic(), *machine.process_state(self.process.pid)
        late = now - self.seen > HELD_GAP and cpu - self.cpu < 0.1 * (now - self.seen)
        if state == 'T' or late:
            self.held += now - self.seen
        self.seen, self.cpu = now, cpu

    def minutes(self) -> float:
        """Its training time so far, held time left out."""
        return (time.monotonic() - self.began - self.held) / 60


def append(root: str, lines: list[dict]) -> None:
    """Appends these lines to ROOT's ledger."""
    with open(os.path.join(root, LEDGER), 'a') as f:
        f.writelines(json.dumps(line) + '\n' for line in lines)


def save_running(root: str, lines: list[dict]) -> None:
    """Keeps the ledger lines of the runs going (each timed until now) in ROOT/RUNNING,
    marked as a killed runner's; none: removes it."""
    path = os.path.join(root, RUNNING)
    if not lines:
        if os.path.exists(path):
            os.remove(path)
        return
    # Until the runner last saw them, a lower bound of their time.
    killed = [{**line, 'returncode': None, 'stopped': True, 'killed': True} for line in lines]
    with open(path + '.tmp', 'w') as f:
        json.dump(killed, f, indent=1)
    os.replace(path + '.tmp', path)


def recover(root: str) -> int:
    """Puts the lines of the runs a killed runner left behind (RUNNING) in the ledger;
    how many. Removed before they are appended: a kill between the two loses them, never
    counts them twice. ValueError naming the file when it is not such a list (it stays)."""
    path = os.path.join(root, RUNNING)
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        try:
            lines = json.load(f)
        except ValueError:
            lines = None
    if not isinstance(lines, list) or not all(isinstance(r, dict) for r in lines):
        raise ValueError(f'{path}: not a list of ledger lines; look at it, then remove it')
    os.remove(path)
    append(root, lines)
    return len(lines)


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
