r"""The unlabeled-distribution study of docs/unlabeled.md (study/unlabeled.py): 9 runs of
Fashion-MNIST-LT at the CPU demo's scale, about an hour on 2 cores.

  python scripts/unlabeled_study.py --action=run      # runs what is missing, 2 at a time
  python scripts/unlabeled_study.py --action=report   # writes docs/unlabeled.md

A run goes to runs/unlabeled/<distribution>/<method> and resumes there (stop it any
time); when it finishes, its results.json is copied to
docs/evidence/unlabeled/<distribution>/<method>/ (commit them), from which the report
is written.
"""

import os
import shutil
import subprocess
import sys
import time

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from study import unlabeled  # noqa: E402

flags.DEFINE_enum('action', 'report', ['run', 'report'], 'What to do.')
flags.DEFINE_integer('jobs', 2, 'Runs side by side (each on one CPU thread).', lower_bound=1)
flags.DEFINE_string('root', 'runs/unlabeled', 'Where the runs go.')
flags.DEFINE_string('records', 'docs/evidence/unlabeled', 'Where their results.json are kept.')
flags.DEFINE_string('output', 'docs/unlabeled.md', 'The document.')
FLAGS = flags.FLAGS


def run_all() -> None:
    todo = [c for c in unlabeled.cells() if unlabeled.read(FLAGS.records, c) is None]
    running = {}
    try:
        while todo or running:
            while todo and len(running) < FLAGS.jobs:
                cell = todo.pop(0)
                workdir = os.path.join(FLAGS.root, cell.name)
                os.makedirs(workdir, exist_ok=True)
                command = [
                    sys.executable,
                    'scripts/crest.py',
                    *cell.flags(),
                    f'--workdir={workdir}',
                ]
                print(f'unlabeled study: start {cell.name}: {" ".join(command[1:])}', flush=True)
                log = open(os.path.join(workdir, 'log.txt'), 'a')
                running[cell] = (subprocess.Popen(command, stdout=log, stderr=log), log)
            time.sleep(5)
            for cell, (process, log) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[cell]
                if process.returncode:
                    sys.exit(f'error: {cell.name} failed; see {FLAGS.root}/{cell.name}/log.txt')
                kept = os.path.join(FLAGS.records, cell.name)
                os.makedirs(kept, exist_ok=True)
                shutil.copy(os.path.join(FLAGS.root, cell.name, 'results.json'), kept)
                print(f'unlabeled study: done {cell.name}; commit {kept}', flush=True)
    finally:  # Ctrl-C or an error: stop the runs, which resume from their checkpoints.
        for process, _ in running.values():
            process.terminate()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if FLAGS.action == 'run':
        run_all()
    try:
        text = unlabeled.document(FLAGS.records)
    except (OSError, ValueError) as e:
        sys.exit(f'error: {e}')
    with open(FLAGS.output, 'w') as f:
        f.write(text)
    print(f'wrote {FLAGS.output}')


if __name__ == '__main__':
    app.run(main)
