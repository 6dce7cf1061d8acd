r"""The evidence study of docs/RESULTS.md: runs it, lists it, keeps its records, writes
its report.

  python scripts/evidence.py --action=list     # every cell known so far, done or to do
  python scripts/evidence.py --action=run      # runs what is left, JOBS at a time
  python scripts/evidence.py --action=sync     # copies finished cells' records
  python scripts/evidence.py --action=report   # writes docs/RESULTS.md from the records
  python scripts/evidence.py --action=check    # re-runs the check cell, compares

The cells (training runs of scripts/crest.py) and their order are study/evidence/planner.py's:
a check cell, the base setting on 3 folds, the bf16 test, the map, the extras. A run is
ROOT/[bf16/]<setting>/total_<steps>/<method>/fold_<f>, its log next to it as
fold_<f>.log. `run` is resumable: a finished cell is skipped and an unfinished one
resumes from its last checkpoint, so the study may be stopped (Ctrl-C, or the machine
going down) and started again at will; cells that the finished ones decide (the hard
tail, the map's precision) are added as soon as they are decided. A cell whose
generation 0 another cell trains (CReST's is FixMatch's run) waits for it and starts from
a copy; a cell whose folder another process is training in (started by hand) is left to
it and taken up if that process stops short.

Every run that ends (finished, failed, or stopped with the runner) appends its machine,
wall time and steps to ROOT/ledger.jsonl (the time it was held, stopped while the machine
did other work, apart); a planned cell finished by hand gets a line from its
results.json; the runs of a runner killed outright (SIGKILL, or the machine stopped) get
theirs from the next runner, timed until the killed one last saw them. Each finished
cell's small files and the ledger are copied to RECORDS (docs/evidence/runs, kept in the
repository: commit them), from which `report` alone writes the document, on any clone.
"""

import ctypes
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from crest.results import Picks, Results  # noqa: E402
from libml import locks, machine  # noqa: E402
from study.evidence import design, generation0, planner, progress, store, timing  # noqa: E402

flags.DEFINE_enum('action', 'list', ['list', 'run', 'sync', 'report', 'check'], 'What to do.')
flags.DEFINE_string('root', 'runs/evidence', 'Folder of the runs.')
flags.DEFINE_string(
    'records',
    'docs/evidence/runs',
    "Folder of the finished cells' records and the ledger, kept in the repository; "
    'report reads nothing else; run and list first rebuild from it the cells finished '
    'elsewhere.',
)
flags.DEFINE_integer('jobs', 2, 'Runs side by side, each with cores / jobs threads.')
flags.DEFINE_integer(
    'max_minutes', 0, 'run: start no new cell after this many minutes (0: no limit).'
)
flags.DEFINE_list(
    'settings',
    [],
    'run, list: only the base setting, its extras excepted, and these map settings (e.g. '
    "g200_b10_o0; default: all, extras included), to drop the map's end on a short budget.",
)
flags.DEFINE_string('document', 'docs/RESULTS.md', 'report: the document to write.')
flags.DEFINE_string('output', 'docs/evidence', 'report: folder of its plots.')
flags.DEFINE_string(
    'map',
    'study/evidence/regime_map.json',
    'report: the regime map (JSON) to write; crest-diagnose reads it, installed with the package.',
)
flags.DEFINE_string('notes', 'docs/evidence_notes.md', 'report: Markdown put above the numbers.')
FLAGS = flags.FLAGS
POLL_SECONDS = 5  # How often the runner looks at its runs.
RUNNER_LOCK = '.runner.lock'  # In ROOT: held by the runner going on it.


def status(root: str, cell: design.Cell) -> str:
    acc = progress.accuracy(root, cell)
    if acc is not None:
        return f'done {100 * acc:.1f}'
    return 'started' if os.path.isdir(cell.workdir(root)) else 'to do'


def list_cells(root: str, settings: Sequence[str]) -> None:
    cells, waiting = planner.plan(root)
    left, cost = [], []  # Steps left; the same as float32 steps of the same time.
    decided = planner.map_precision(root)
    for cell in cells:
        if not planner.selected(cell, settings):
            continue
        state, where = status(root, cell), ''
        if not state.startswith('done'):
            left.append(progress.steps_left(root, cell, cells))
            cost.append(planner.float32_steps(cell, left[-1], decided))
        if state == 'started':  # How far, by its finished generations and checkpoint.
            to_train = progress.steps_to_train(root, cell, cells)
            where = f'  {to_train - left[-1]:,}/{to_train:,} steps'
        print(f'{state:10} {cell.stage:9} {cell.workdir(root)}{where}')
    estimate = timing.hours(root, cost)
    speed = '' if estimate is None else ', about {:.1f} hours with {} runs side by side'
    print(
        f'{sum(left):,} steps left in the cells listed{speed.format(*(estimate or ()))}'
        + (f'; then more, waiting for {waiting}' if waiting else '')
    )


def launch(root: str, cell: design.Cell, threads: int) -> subprocess.Popen:
    workdir = cell.workdir(root)
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    command = [sys.executable, 'scripts/crest.py', *cell.flags(threads), f'--workdir={workdir}']
    print(f'evidence: start {workdir}: {" ".join(command[1:])}', flush=True)
    with open(workdir + '.log', 'a') as log:
        return spawn(command, stdout=log, stderr=subprocess.STDOUT)


def spawn(command: list[str], **kwargs) -> subprocess.Popen:
    """Starts a run that ends with the runner (Linux: SIGKILL when the runner dies, even
    killed outright, which ends a held run too), so that no run trains on unseen by the
    ledger; it resumes later from its checkpoint."""
    runner = os.getpid()

    def die_with_runner():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # Not Linux: the runs outlive a killed runner.
            return
        if os.getppid() != runner:  # The runner died before prctl took hold.
            os._exit(143)

    return subprocess.Popen(command, preexec_fn=die_with_runner, **kwargs)


def run(
    root: str, jobs: int, max_minutes: int, settings: Sequence[str] = (), records: str = ''
) -> int:
    """Runs the plan's cells, `jobs` at a time, until none is left to start; 1 if one
    failed. One runner per ROOT: a second one stops at once. `settings`: see --settings.
    Each finished cell's records and the ledger are copied to RECORDS (if given)."""
    os.makedirs(root, exist_ok=True)
    busy = f'another scripts/evidence.py is running on {root}'
    machine_info = _machine(jobs)
    running = {}
    try:
        with locks.hold(os.path.join(root, RUNNER_LOCK), busy):
            try:
                killed = timing.recover(root)
            except ValueError as e:
                sys.exit(f'error: {e}')
            if killed:
                print(
                    f'evidence: the last runner was killed with {killed} run(s) going; their '
                    'time until it last saw them is in the ledger',
                    flush=True,
                )
            try:
                return _run(root, max_minutes, settings, running, machine_info, records)
            finally:  # Ctrl-C or an error: stop the runs (they resume from checkpoints).
                for entry in running.values():
                    entry.watch()  # Held until now? (The runner may have been stopped too.)
                    entry.process.terminate()
                    entry.process.send_signal(signal.SIGCONT)  # A held run takes it too.
                for key, entry in list(running.items()):
                    entry.process.wait()
                    # As in the poll: out of timing.RUNNING first, never counted twice.
                    del running[key]
                    _save_running(root, running, machine_info)
                    _record(root, entry, machine_info, stopped=True)
    except locks.Busy as e:
        sys.exit(f'error: {e}')


def _machine(jobs: int) -> dict:
    """What the ledger says of where runs ran."""
    return {
        'cpu': machine.cpu_model(),
        'jobs': jobs,
        'threads': max(1, (os.cpu_count() or 1) // jobs),
    }


def _line(root: str, entry: timing.Run, machine_info: dict) -> dict:
    """A run's ledger line as of now."""
    held = round(entry.held)
    return {
        'workdir': entry.cell.workdir(root),
        'cell': entry.cell.workdir(''),
        'stage': entry.cell.stage,
        'precision': entry.cell.precision,
        'steps': entry.steps,
        'returncode': entry.process.returncode,
        'seconds': round(60 * entry.minutes()),  # Held time left out.
        **({'held': held} if held else {}),
        # A resumed run trained only part of its steps in these seconds.
        'resumed': entry.resumed,
        'finished': datetime.datetime.now().isoformat(timespec='seconds'),
        **machine_info,
    }


def _record(root: str, entry: timing.Run, machine_info: dict, stopped: bool = False) -> None:
    """Appends a run's line to the ledger: it finished, failed or was stopped."""
    record = _line(root, entry, machine_info)
    if stopped:  # Its time counts; the run resumes at its last checkpoint.
        record['stopped'] = True
    timing.append(root, [record])


def _save_running(root: str, running: dict, machine_info: dict) -> None:
    """The lines of the runs going, as of now, for the next runner if this one is killed."""
    timing.save_running(root, [_line(root, entry, machine_info) for entry in running.values()])


def adopt(root: str, cells: list[design.Cell], machine_info: dict) -> list[design.Cell]:
    """Gives each planned cell that finished outside the runner (started by hand) and has
    no ledger line one: its training time from results.json (each generation's seconds,
    start-up left out; a resumed run's last stretch only, so a lower bound). Returns them."""
    known = {r['cell'] for r in timing.ledger(root)}
    adopted = []
    for cell in cells:
        found = progress.results(root, cell)
        if found is None or cell.workdir('') in known:
            continue
        copied = os.path.exists(os.path.join(cell.workdir(root), generation0.COPIED))
        generations = found.generations[1:] if copied else found.generations
        record = {
            'workdir': cell.workdir(root),
            'cell': cell.workdir(''),
            'stage': cell.stage,
            'precision': cell.precision,
            'steps': progress.steps_to_train(root, cell, cells),
            'returncode': 0,
            'seconds': round(sum(g.seconds for g in generations)),
            'resumed': False,
            'finished': datetime.datetime.fromtimestamp(
                os.path.getmtime(os.path.join(cell.workdir(root), 'results.json'))
            ).isoformat(timespec='seconds'),
            **machine_info,
            'by_hand': True,  # Timed by the run itself, not by the runner.
        }
        timing.append(root, [record])
        adopted.append(cell)
    return adopted


def sync(root: str, records: str, cells: list[design.Cell]) -> list[str]:
    """Copies the records of every finished cell of `cells` and the ledger to RECORDS;
    the files written."""
    written = [p for cell in cells for p in store.save_records(root, records, cell)]
    ledger = store.save_ledger(root, records)
    return written + ([ledger] if ledger else [])


def _run(
    root: str,
    max_minutes: int,
    settings: Sequence[str],
    running: dict,
    machine_info: dict,
    records: str = '',
) -> int:
    jobs, threads = machine_info['jobs'], machine_info['threads']
    start, failed = time.time(), set()
    while True:
        cells, waiting = planner.plan(root)
        # Not its own runs: one may have written results.json and not exited yet.
        by_hand = [c for c in cells if design.cells_key(c) not in running]
        for cell in adopt(root, by_hand, machine_info):
            print(f'evidence: {cell.workdir(root)} finished by hand; in the ledger', flush=True)
            if records:
                sync(root, records, [cell])
        pending, elsewhere = [], 0
        for c in cells:
            if progress.results(root, c) is not None or design.cells_key(c) in running:
                continue
            if not planner.selected(c, settings):
                continue
            if design.cells_key(c) in failed:
                continue
            if locks.held(os.path.join(c.workdir(root), locks.RUN)):
                elsewhere += 1  # Started by hand or by another runner: left to it.
                continue
            source = generation0.source(c, cells)
            if (
                source is not None
                and not os.path.exists(c.workdir(root))
                and progress.results(root, source) is None
                and design.cells_key(source) not in failed
            ):
                continue  # Waits for its generation 0, trained by another cell.
            pending.append(c)
        late = max_minutes and time.time() - start > 60 * max_minutes  # Holds included.
        # A planned run busy elsewhere on this machine takes one of the JOBS slots too.
        while pending and len(running) + elsewhere < jobs and not late:
            cell = pending.pop(0)
            resumed = os.path.isdir(cell.workdir(root))
            source = generation0.source(cell, cells)
            if not resumed and source and progress.results(root, source) is not None:
                try:
                    generation0.copy(root, source, cell)
                except (OSError, ValueError) as e:
                    print(f'evidence: generation 0 not copied, trained: {e}', flush=True)
                else:
                    print(
                        f'evidence: {cell.workdir(root)}: generation 0 copied from '
                        f'{source.workdir(root)}',
                        flush=True,
                    )
            # No folder yet: nothing was copied, the run trains all its steps.
            started = os.path.exists(cell.workdir(root))
            steps = progress.steps_to_train(root, cell, cells) if started else cell.total_steps
            process = launch(root, cell, threads)
            running[design.cells_key(cell)] = timing.Run(cell, process, resumed, steps)
        _save_running(root, running, machine_info)
        if not running and not (elsewhere and not late):
            break
        time.sleep(POLL_SECONDS)
        for key, entry in list(running.items()):
            cell, process = entry.cell, entry.process
            entry.watch()
            if process.poll() is None:
                continue
            del running[key]
            # Out of timing.RUNNING first: a kill between the two loses seconds, never twice.
            _save_running(root, running, machine_info)
            _record(root, entry, machine_info)
            if process.returncode:
                failed.add(key)
                print(f'evidence: FAILED {cell.workdir(root)}, see its .log', flush=True)
            else:
                acc = progress.accuracy(root, cell)
                held = f' (and {entry.held / 60:.0f} min held)' if entry.held >= 60 else ''
                print(
                    f'evidence: done {cell.workdir(root)} in {entry.minutes():.0f} min{held}: '
                    f'balanced accuracy {100 * acc:.1f}',
                    flush=True,
                )
            if records:
                written = sync(root, records, [cell])
                if written:
                    print(
                        f'evidence: records in {cell.workdir(records)}: commit them with '
                        'what --action=report writes (the document, the map, the plots)',
                        flush=True,
                    )
    if waiting and not failed and not late:
        print(f'evidence: nothing runnable; waiting for {waiting}')
    print('evidence: ' + ('stopped (--max_minutes)' if late else 'no cell left to start'))
    return 1 if failed else 0


def check(root: str, records: str) -> int:
    """Trains the check cell again into a new folder and compares it with its records:
    results.json but wall time and where it ran, the fold's counts.json (digests of its
    TFRecords) and each generation's picks.json (the digest of the exported TFRecord). 0
    when all are the same, 1 otherwise."""
    cell = design.check_cell()
    first_dir = cell.workdir(records)
    if progress.results(records, cell) is None:
        sys.exit(f'error: {first_dir}: no results.json to compare with; run the study first')
    # As many threads as it had (the ledger's), which may change the float arithmetic.
    threads = next((r['threads'] for r in timing.lines_of(records, cell)), 1)
    workdir = cell.workdir(root.rstrip('/') + '_check')
    shutil.rmtree(workdir, ignore_errors=True)
    command = [sys.executable, 'scripts/crest.py', *cell.flags(threads), f'--workdir={workdir}']
    print(f'evidence: {" ".join(command[1:])}', flush=True)
    if subprocess.run(command).returncode:
        sys.exit(f'error: the check run failed; see {workdir}')
    again = Results.read(os.path.join(workdir, 'results.json'))
    differences = store.same_results(progress.results(records, cell), again)
    differences = [f'results.json{d}' for d in differences]
    name = 'data/counts.json'
    a, b = _read(os.path.join(first_dir, name)), _read(os.path.join(workdir, name))
    strip = {'data_dir'}  # The fold's source folder, an absolute path.
    if {k: v for k, v in a.items() if k not in strip} != {
        k: v for k, v in b.items() if k not in strip
    }:
        differences.append(name)
    name = 'gen_00/picks.json'
    a, b = (
        Picks.from_json(_read(os.path.join(d, name)), os.path.join(d, name))
        for d in (first_dir, workdir)
    )
    if a != b:
        differences.append(name)
    if differences:
        print(f'evidence: {workdir} differs from {first_dir}: {", ".join(differences)}')
        return 1
    print(
        f'evidence: {workdir} is the same as {first_dir}: results.json but wall time, the '
        "fold's and the export's digests"
    )
    return 0


def restore(root: str, records: str) -> None:
    """Rebuilds under ROOT the cells finished elsewhere, from RECORDS, and says so: on a
    new machine the runner would otherwise train them again. Left to a runner going on
    ROOT, which did it when it started."""
    os.makedirs(root, exist_ok=True)
    try:
        with locks.hold(os.path.join(root, RUNNER_LOCK), ''):
            folders, lines = store.restore(records, root)
    except locks.Busy:
        return
    if folders or lines:
        print(
            f'evidence: {len(folders)} finished cell(s) and {lines} ledger line(s) restored '
            f'from {records} to {root} (records only: a CReST cell trains its generation 0 '
            'itself rather than copy it from one of them)',
            flush=True,
        )


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if FLAGS.jobs < 1:
        sys.exit(f'error: --jobs must be >= 1, got {FLAGS.jobs}')
    if FLAGS.action in ('list', 'run') and FLAGS.records:
        restore(FLAGS.root, FLAGS.records)
    known = [s.name for s in planner.map_settings(FLAGS.root)]
    unknown = [name for name in FLAGS.settings if name not in known]
    if unknown:
        sys.exit(f'error: --settings: unknown {", ".join(unknown)}; known: {", ".join(known)}')
    if FLAGS.action == 'list':
        list_cells(FLAGS.root, FLAGS.settings)
    elif FLAGS.action == 'run':
        # `kill` as Ctrl-C: the runs stop with the runner, at their last checkpoint.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        code = run(FLAGS.root, FLAGS.jobs, FLAGS.max_minutes, FLAGS.settings, FLAGS.records)
        sys.exit(code)
    elif FLAGS.action == 'sync':
        cells, _ = planner.plan(FLAGS.root)
        adopt(FLAGS.root, cells, _machine(FLAGS.jobs))
        written = sync(FLAGS.root, FLAGS.records, cells)
        print(f'evidence: {len(written)} record file(s) in {FLAGS.records}')
    elif FLAGS.action == 'check':
        sys.exit(check(FLAGS.root, FLAGS.records))
    else:
        from study.evidence import document

        notes = open(FLAGS.notes).read().rstrip() + '\n\n' if FLAGS.notes else ''
        written = document.write(FLAGS.records, FLAGS.output, FLAGS.document, notes, FLAGS.map)
        print(f'wrote {", ".join(written)}')


if __name__ == '__main__':
    app.run(main)
