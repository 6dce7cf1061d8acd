r"""Summarizes a tree of runs into Markdown tables and PNG plots (paper Tables 1, 2, 5,
Figs. 1d, 2, 4).

  python scripts/summarize.py --runs=runs/bench --output=docs/results

reads RUNS/<method>/fold_<f>/results.json (the layout scripts/run_folds.sh writes) and
writes OUTPUT/summary.md and OUTPUT/*.png: balanced accuracy mean +- std over folds per
method, plain and with logit adjustment, next to the paper's; per-class test recall
(plain and adjusted) and unlabeled-set recall per method; FixMatch's per-class precision
and recall; the per-class precision of the picks in each generation; the balanced
accuracy by generation; the paper's four claims and its Table 2 orderings checked. With
--notes=FILE, FILE (Markdown) is copied above the generated part, and --document=PATH
writes the whole to PATH too. With --rerun=FOLDER, runs in FOLDER that repeat a cell of
RUNS (same method and fold) are compared with it, against the method's fold-to-fold
spread. Unfinished runs (no results.json) are listed and left out; a results.json that
cannot be read (cut short, or written by an earlier version) stops it with a one-line
error naming the file. Takes a few seconds.
The report itself is study/report/.
"""

import os
import sys

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from study.report import document, plots, runs  # noqa: E402

flags.DEFINE_string('runs', 'runs/bench', 'Folder of <method>/fold_<f>/results.json.')
flags.DEFINE_string('output', 'docs/results', 'Folder for summary.md and the PNG plots.')
flags.DEFINE_string('notes', None, 'Markdown file placed above the generated tables.')
flags.DEFINE_string('document', None, 'Also write notes + tables to this Markdown file.')
flags.DEFINE_string(
    'rerun', None, 'Folder of runs repeating cells of --runs (same layout), to compare.'
)
FLAGS = flags.FLAGS


def check_paths() -> str:
    """Checks every path flag before anything is read or written; returns the notes."""
    for flag in ('runs', 'rerun'):
        path = FLAGS[flag].value
        if path and not os.path.isdir(path):
            raise ValueError(f'--{flag} {path}: not a folder')
    if os.path.exists(FLAGS.output) and not os.path.isdir(FLAGS.output):
        raise ValueError(f'--output {FLAGS.output}: exists and is not a folder')
    if FLAGS.document:
        if os.path.isdir(FLAGS.document):
            raise ValueError(f'--document {FLAGS.document}: a folder; give a Markdown file')
        parent = os.path.dirname(os.path.abspath(FLAGS.document))
        if not os.path.isdir(parent):
            raise ValueError(f'--document {FLAGS.document}: no folder {parent}')
    if not FLAGS.notes:
        return ''
    try:
        with open(FLAGS.notes) as f:
            return f.read().rstrip() + '\n\n'
    except OSError as e:
        raise ValueError(f'--notes {FLAGS.notes}: cannot read it ({e.strerror})') from e
    except UnicodeDecodeError as e:
        raise ValueError(f'--notes {FLAGS.notes}: not a text file ({e.reason})') from e


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
        notes = check_paths()
        found, unfinished = runs.load_runs(FLAGS.runs)
        again = runs.load_runs(FLAGS.rerun)[0] if FLAGS.rerun else None
    except (OSError, ValueError) as e:
        sys.exit(f'error: {e}')
    if not found:
        sys.exit(f'error: no finished run (RUNS/<method>/fold_<f>/results.json) in {FLAGS.runs}')
    os.makedirs(FLAGS.output, exist_ok=True)
    files = plots.plots(found, FLAGS.output)
    body = document.markdown(found, unfinished)
    if FLAGS.rerun:
        body += '\n### Re-running cells\n\n' + document.reruns(found, again, FLAGS.rerun)
    with open(os.path.join(FLAGS.output, 'summary.md'), 'w') as f:
        f.write(body)
    if FLAGS.document:
        document.write_document(FLAGS.document, notes, body, FLAGS.output, files)
    print(body)
    print(f'wrote {FLAGS.output}/summary.md and {", ".join(files)}')


def run():
    """The `crest-report` command of the installed package (pyproject.toml)."""
    from . import run_as_program

    run_as_program(sys.modules[__name__])


if __name__ == '__main__':
    app.run(main)
