r"""Is class-rebalancing likely to pay off on your data? Ask a finished FixMatch run.

  python scripts/diagnose.py --run=runs/my_fixmatch_run

reads RUN/results.json (any run; a self-training one is read at its first generation,
the model before any pseudo-label, which for CReST+ is FixMatch with alignment at t = 1)
and prints, per class, the model's recall and precision on the
unlabeled set (on the test set when the unlabeled images carry no labels), then its bias
on the minority half of the classes (precision minus recall, the paper's Fig. 2), and
what the regime map of docs/RESULTS.md measured at settings of similar bias: whether
CReST+ gained there, and whether it did better than CReST (alignment to t_min = 0.5
against none; the map measured alpha = 1/3 only). The map is a generated file
installed with the package (study/evidence/regime_map.json; another with --map), written by
`scripts/evidence.py --action=report` from the study's runs.
"""

import json
import os
import sys

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from crest.results import Results  # noqa: E402
from study.evidence import regime  # noqa: E402

flags.DEFINE_string('run', None, 'A finished run folder (holds results.json).')
flags.DEFINE_integer('generation', 0, 'Which generation to read (0: the FixMatch model).')
flags.DEFINE_string(
    'map',
    None,
    'The regime map to compare with. Default: the one installed with the package '
    '(scripts/evidence.py --action=report writes it).',
)
flags.mark_flag_as_required('run')
FLAGS = flags.FLAGS


def load_results(path: str) -> Results:
    try:
        return Results.read(path)
    except FileNotFoundError:
        sys.exit(f'error: {path} not found (is the run finished?)')
    except (OSError, ValueError) as e:  # Unreadable, not JSON, or of an earlier version.
        sys.exit(f'error: {e}')


def load_map(path: str) -> dict:
    try:
        with open(path) as f:
            regime_map = json.load(f)
    except json.JSONDecodeError as e:
        sys.exit(f'error: {path} is not JSON: {e}')
    except OSError as e:
        sys.exit(f'error: --map {path}: cannot read it ({e.strerror})')
    if not isinstance(regime_map, dict) or not set(regime.MAP_FIELDS) <= set(regime_map):
        sys.exit(
            f'error: --map {path}: not a regime map (scripts/evidence.py --action=report '
            'writes one)'
        )
    return regime_map


def diagnose(result: Results, generation: int, regime_map: dict | None) -> list[str]:
    """The report's lines."""
    generations = result.generations
    if not 0 <= generation < len(generations):
        raise ValueError(
            f'--generation={generation}: the run has {len(generations)} (0..{len(generations) - 1})'
        )
    gen = generations[generation]
    split = 'unlabeled' if gen.unlabeled is not None else 'test'
    report = getattr(gen, split)
    names, counts = result.class_names, result.labeled_counts
    lines = [
        f'Generation {generation}, {split} set'
        + ('' if split == 'unlabeled' else ' (the unlabeled images carry no labels)')
        + ': per class, most labeled first'
    ]
    width = max(len(n) for n in names)
    lines.append(f'  {"class":{width}}  labeled  recall  precision  predicted')
    for c in sorted(range(len(names)), key=lambda c: (-counts[c], c)):
        predicted = report.predicted[c]  # On the test set: a mean over evaluations.
        precision = f'{100 * report.precision[c]:8.1f}%' if predicted else '    never'
        lines.append(
            f'  {names[c]:{width}}  {counts[c]:7d}  {100 * report.recall[c]:5.1f}%  '
            f'{precision}  {round(predicted):9d}'
        )
    bias = result.minority_bias(split, generation)
    precision = bias['minority_precision']
    precision = 'undefined' if precision is None else f'{100 * precision:.1f}%'
    lines.append(
        f'Minority half: precision {precision}'
        f', recall {100 * bias["minority_recall"]:.1f}%: bias {100 * bias["bias"]:+.1f} points'
        + (
            f'; never predicted: {", ".join(bias["never_predicted"])}'
            if bias['never_predicted']
            else ''
        )
    )
    if regime_map is None:
        lines.append('No regime map to compare with (see --map).')
    else:
        lines.append(
            f'The regime map (Fashion-MNIST-LT, {regime_map["generations"]} generations of '
            f'{regime_map["steps_per_generation"]:,} steps) says:'
        )
        lines += regime.predict(regime_map, bias['bias'])
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if FLAGS.generation < 0:
        sys.exit(f'error: --generation must be >= 0 (0: the first), got {FLAGS.generation}')
    if os.path.isfile(FLAGS.run):
        sys.exit(f'error: --run {FLAGS.run}: a file; give the run folder (it holds results.json)')
    if FLAGS.map is not None and not os.path.exists(FLAGS.map):
        sys.exit(f'error: --map {FLAGS.map}: not found')
    result = load_results(os.path.join(FLAGS.run, 'results.json'))
    path = regime.MAP_PATH if FLAGS.map is None else FLAGS.map
    regime_map = load_map(path) if os.path.exists(path) else None
    try:
        lines = diagnose(result, FLAGS.generation, regime_map)
    except ValueError as e:
        sys.exit(f'error: {e}')
    print('\n'.join(lines))


def run():
    """The `crest-diagnose` command of the installed package (pyproject.toml)."""
    from . import run_as_program

    run_as_program(sys.modules[__name__])


if __name__ == '__main__':
    app.run(main)
