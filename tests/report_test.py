"""study/report/claims.py: the paired-difference rule of the orderings, by hand; and a
preset read off another's runs."""

from study.report import claims, runs
from tests import fakes


def _results(accuracy, la=None):
    """A run of two classes with this balanced accuracy (and logit-adjusted one)."""
    return fakes.run_results(accuracy, [0.9, 0.1], [0.6, 1.0], [140, 10], [50, 5], 'ab', la=la)


def _runs(**accuracies):
    """{method: {fold: results}}, the folds differing in their balanced accuracy only."""
    return {
        m: {f: _results(a) for f, a in enumerate(accs, start=1)} for m, accs in accuracies.items()
    }


def _row(table, start):
    return next(line for line in table.splitlines() if line.startswith(start))


def test_beats_needs_the_mean_difference_above_its_spread_and_a_point():
    # Differences 3, 1, 2 points: mean 2.0 > std 1.0 and > 1 point.
    table = claims.orderings(_runs(fixmatch_rs=[0.53, 0.51, 0.52], fixmatch=[0.50] * 3))
    assert _row(table, '| FixMatch + RS beats FixMatch').endswith('| +2.0 ± 1.0 | held |')
    # Differences 4, -2, 1: mean 1.0 < std 3.0.
    table = claims.orderings(_runs(fixmatch_rs=[0.54, 0.48, 0.51], fixmatch=[0.50] * 3))
    assert _row(table, '| FixMatch + RS beats FixMatch').endswith('| +1.0 ± 3.0 | not held |')
    table = claims.orderings(_runs(fixmatch_rs=[0.60], fixmatch=[0.50]))
    assert _row(table, '| FixMatch + RS').endswith('| +10.0 ± 0.0 | undecided (1 paired fold) |')


def test_level_holds_when_neither_beats_the_other():
    # CB level with FixMatch (paper 67.6 vs 67.3): differences 0.5, -0.5, 0.
    level = claims.orderings(_runs(fixmatch_cb=[0.505, 0.495, 0.50], fixmatch=[0.50] * 3))
    assert _row(level, '| FixMatch + CB level with FixMatch').endswith('| held |')
    # FixMatch clearly ahead of CB by 3 points: not level.
    behind = claims.orderings(_runs(fixmatch_cb=[0.47, 0.46, 0.48], fixmatch=[0.50] * 3))
    assert _row(behind, '| FixMatch + CB level').endswith('| -3.0 ± 1.0 | not held |')


def test_orderings_without_a_pair_present():
    assert claims.orderings(_runs(fixmatch=[0.5])) == 'No two methods of an ordering are present.'


def test_a_run_made_with_an_la_preset_reads_as_its_adjusted_numbers(tmp_path):
    own = _results(0.5, la=0.6)
    own.generations[0].test.recall_la = [0.7, 0.5]
    fakes.write_results(tmp_path / 'fixmatch_la' / 'fold_1', own)
    found, _ = runs.load_runs(str(tmp_path))
    (run,) = found['fixmatch_la'].values()
    assert run.balanced_accuracy == 0.6 and runs.derived_from('fixmatch_la') == 'fixmatch'
    assert run.generations[0].test.recall == [0.7, 0.5]
    assert runs.own_runs(found) == {}  # Its picks and unlabeled numbers are not its own.
