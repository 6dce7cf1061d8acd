"""scripts/summarize.py (study/report/) on a hand-made results tree: numbers, claims, the
paper's orderings and plots."""

import json
import os
import subprocess
import sys

from tests import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ['big', 'mid', 'small', 'tiny']
COUNTS = [40, 20, 10, 5]


def _write(
    root,
    method,
    fold,
    balanced_by_gen,
    recall,
    precision,
    predicted,
    first_recall=None,
    la=None,
    **args,
):
    """One results.json; first_recall, if given, is generation 0's test recall; la, if
    given, every generation's logit-adjusted balanced accuracy (recall reversed), else
    the plain numbers."""
    folder = os.path.join(root, method, f'fold_{fold}')
    run = fakes.run_results(
        balanced_by_gen,
        recall,
        precision,
        predicted,
        COUNTS,
        NAMES,
        la=la,
        recall_la=None if la is None else recall[::-1],
        correct=[4, 3, 1, 1],
        args={
            'dataset': 'fashion_mnist_lt',
            'imbalance': 100.0,
            'label_fraction': 0.1,
            'generations': len(balanced_by_gen),
            'steps_per_generation': 300 // len(balanced_by_gen),
            'workdir': folder,
            **args,
        },
    )
    if first_recall is not None:
        run.generations[0].test.recall = first_recall
    fakes.write_results(folder, run)


def _summarize(*flags):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'summarize.py'), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_summary_tables_claims_and_plots(tmp_path):
    runs = str(tmp_path / 'runs')
    # FixMatch: the tiny class is never predicted, the small one precise but rarely found.
    fm_recall, fm_precision = [0.9, 0.8, 0.2, 0.0], [0.7, 0.8, 0.9, 0.0]
    # With logit adjustment 55 and 57: FixMatch + LA is read off these runs.
    _write(runs, 'fixmatch', 1, [0.50], fm_recall, fm_precision, [1300, 1000, 220, 0], la=0.55)
    _write(runs, 'fixmatch', 2, [0.54], fm_recall, fm_precision, [1300, 1000, 220, 0], la=0.57)
    crest_recall = [0.85, 0.8, 0.5, 0.3]
    crest = (crest_recall, [0.8] * 4, [1000] * 4)  # Recall, precision, predicted.
    for fold, accs in [(1, [0.50, 0.60, 0.62]), (2, [0.54, 0.62, 0.64])]:
        _write(runs, 'fixmatch_crest', fold, accs, *crest, [0.9, 0.8, 0.3, 0.1])
        _write(runs, 'fixmatch_crest_plus', fold, [a + 0.02 for a in accs], *crest)
    _write(runs, 'alpha0', 1, [0.50, 0.50, 0.49], fm_recall, fm_precision, [1300, 1000, 220, 0])
    # MixMatch + CReST+ gains 3 and 1 points over MixMatch: 2.0 +- 1.4, held.
    for fold, acc, gain in [(1, 0.40, 0.03), (2, 0.42, 0.01)]:
        _write(runs, 'mixmatch', fold, [acc], fm_recall, fm_precision, [1300, 1000, 220, 0])
        plus = [acc, acc + gain]
        _write(runs, 'mixmatch_crest_plus', fold, plus, *crest)
    os.makedirs(os.path.join(runs, 'fixmatch_crest', 'fold_3'))  # unfinished: no results.json

    out = str(tmp_path / 'out')
    notes = tmp_path / 'notes.md'
    notes.write_text('# Reading\n\nHand-written part.\n')
    document = str(tmp_path / 'RESULTS.md')
    proc = _summarize(
        f'--runs={runs}', f'--output={out}', f'--notes={notes}', f'--document={document}'
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = open(os.path.join(out, 'summary.md')).read()
    lines = summary.splitlines()

    def row(prefix):
        return next(line for line in lines if line.startswith(prefix))

    # Mean +- sample std over folds: (0.62 + 0.64) / 2 = 63.0, std 0.0141 -> 1.4; its LA
    # numbers are the plain ones here; the paper's Table 2 number last.
    assert row('| FixMatch + CReST |') == (
        '| FixMatch + CReST | 63.0 ± 1.4 | 63.0 ± 1.4 | 62.0, 64.0 | 1, 2 | 3 x 100 = 300 | 6 '
        '| 74.8 |'
    )
    assert row('| FixMatch + CReST+ |').startswith('| FixMatch + CReST+ | 65.0 ± 1.4 |')
    # 23 generations of 60 s: FixMatch 2 x 1, CReST and CReST+ 2 x 3 each, alpha=0 3,
    # MixMatch 2 x 1, MixMatch + CReST+ 2 x 2; the LA row trains nothing.
    assert 'summed over runs, 23 in all' in summary
    assert row('| MixMatch + CReST+ |').startswith('| MixMatch + CReST+ | 43.0 ± 0.0 |')
    assert row('| FixMatch |').startswith('| FixMatch | 52.0 ± 2.8 | 56.0 ± 1.4 |')
    assert row('| FixMatch + LA |') == (
        "| FixMatch + LA | 56.0 ± 1.4 | - | 55.0, 57.0 | 1, 2 | 1 x 300 = 300 | FixMatch's | 70.4 |"
    )
    # Per-class recall with LA: FixMatch's recall_la is its recall reversed.
    la_table = summary.split('with logit adjustment\n')[1].split('###')[0]
    assert '| FixMatch | 0.0 | 20.0 | 80.0 | 90.0 |' in la_table
    # Pick precision per class: correct / picked summed over folds, -> 100, 100, 50, 100.
    assert '| FixMatch + CReST | 0 | 10 | 90.0 | 100.0 | 100.0 | 50.0 | 100.0 |' in summary
    assert '| FixMatch + CReST | 2 |' not in summary  # the last picks train nothing
    # Generation table: CReST gen 1 = (0.60 + 0.62) / 2.
    assert row('| FixMatch + CReST | 52.0 ± 2.8 |').startswith(
        '| FixMatch + CReST | 52.0 ± 2.8 | 61.0 ± 1.4 | 63.0 ± 1.4 |'
    )

    # Recall change of CReST from generation 0 to 2, alpha=0's is none; FixMatch has 1 gen.
    assert '| FixMatch + CReST | -5.0 | +0.0 | +20.0 | +20.0 |' in summary
    assert '| Self-training (alpha=0) | +0.0 | +0.0 | +0.0 | +0.0 |' in summary
    assert '| FixMatch | -' not in summary and '| FixMatch | +' not in summary

    claims = {
        line.split(' | ')[0][2:]: line
        for line in lines
        if line.startswith('| ') and '. ' in line[:6]
    }
    claim1 = claims['1. FixMatch: minority precision high, recall low']
    # Minority half = small, tiny; tiny never predicted -> precision of small only: 90.
    assert 'precision 90.0, recall 10.0 (majority half recall 85.0)' in claim1
    assert 'never predicted: tiny' in claim1 and claim1.endswith('| held |')
    # CReST - FixMatch: 12 and 10 points -> 11.0 +- 1.4; recall gain minority 30, majority -2.5.
    claim2 = claims['2. CReST beats FixMatch, gain on minority classes']
    assert '11.0 ± 1.4 points' in claim2 and 'minority half 30.0, majority half -2.5' in claim2
    assert claim2.endswith('| held |')
    # CReST's own last - first generation: (12 + 10) / 2.
    assert '(same steps per model): 11.0 points' in claim2
    assert claims['3. CReST+ beats CReST'].endswith('| 2.0 ± 0.0 points | held |')
    claim4 = claims['4. alpha=0 gives no gain over generations']
    assert 'last - first generation -1.0 points over 1 fold(s)' in claim4
    assert claim4.endswith('| held |')

    # The paper's Table 2 orderings between the methods present.
    orderings = summary.split('Table 2 orderings on these runs\n')[1]
    assert '| FixMatch + CReST+ beats FixMatch + CReST | 78.1 vs 74.8 | +2.0 ± 0.0 | held |' in (
        orderings
    )
    assert '| FixMatch + CReST beats FixMatch | 74.8 vs 67.3 | +11.0 ± 1.4 | held |' in orderings
    assert '| FixMatch + LA beats FixMatch | 70.4 vs 67.3 | +4.0 ± 1.4 | held |' in orderings
    assert '| MixMatch + CReST+ beats MixMatch | 66.1 vs 60.4 | +2.0 ± 1.4 | held |' in orderings
    # FixMatch 50 / 54 against MixMatch 40 / 42: +11.0 +- 1.4.
    assert '| FixMatch beats MixMatch | 67.3 vs 60.4 | +11.0 ± 1.4 | held |' in orderings
    assert 'Mean Teacher' not in orderings  # no run
    assert 'fold_3' in summary  # the unfinished run is named

    for png in ('per_class_recall.png', 'fixmatch_precision_recall.png', 'generations.png'):
        with open(os.path.join(out, png), 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    document_text = open(document).read()
    assert document_text.startswith('# Reading\n\nHand-written part.')
    assert '![generations.png](out/generations.png)' in document_text


def test_rerun_cells_are_compared_with_the_fold_spread(tmp_path):
    runs, again, out = (str(tmp_path / d) for d in ('runs', 'again', 'out'))
    recall, precision, predicted = [0.5] * 4, [0.5] * 4, [100] * 4
    for fold, acc in [(1, 0.60), (2, 0.64), (3, 0.62)]:  # fold std 2.0 points
        _write(runs, 'fixmatch_crest', fold, [0.5, acc], recall, precision, predicted)
    # FixMatch, with its own settings; one fold only.
    fixmatch = (1, [0.55], recall, precision, predicted)
    hparams = {'threshold': 0.95, 'wu': 1.0}
    _write(runs, 'fixmatch', *fixmatch, algorithm='fixmatch', hparams=hparams)
    _write(again, 'fixmatch_crest', 1, [0.5, 0.615], recall, precision, predicted)  # +1.5: within
    _write(again, 'fixmatch_crest', 2, [0.5, 0.61], recall, precision, predicted)  # -3.0: outside
    _write(again, 'fixmatch_crest', 3, [0.5, 0.62], recall, precision, predicted, imbalance=50.0)
    _write(again, 'fixmatch', *fixmatch, algorithm='fixmatch', hparams=hparams)
    # Not in the table:
    _write(again, 'fixmatch_crest', 4, [0.5, 0.62], recall, precision, predicted)
    proc = _summarize(f'--runs={runs}', f'--output={out}', f'--rerun={again}')
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = open(os.path.join(out, 'summary.md')).read()
    section = summary.split('### Re-running cells')[1]
    assert '| FixMatch + CReST | 1 | 60.0 | 61.5 | +1.5 | 2.0 | yes |' in section
    assert '| FixMatch + CReST | 2 | 64.0 | 61.0 | -3.0 | 2.0 | no |' in section
    assert (
        '| FixMatch + CReST | 3 | 62.0 | 62.0 | +0.0 | 2.0 | '
        'not comparable: settings differ (imbalance) |' in section
    )
    assert '| FixMatch | 1 | 55.0 | 55.0 | +0.0 | 0.0 | no fold spread to compare with |' in section
    assert '| FixMatch + CReST | 4 |' not in section


def test_no_finished_run_is_an_error(tmp_path):
    proc = _summarize(f'--runs={tmp_path}')
    assert proc.returncode != 0
    assert 'no finished run' in proc.stderr


def test_a_results_file_it_cannot_read_is_a_one_line_error(tmp_path):
    _write(str(tmp_path), 'fixmatch', 1, [0.5], [0.5] * 4, [0.5] * 4, [100] * 4)
    path = tmp_path / 'fixmatch' / 'fold_1' / 'results.json'
    old = json.loads(path.read_text())
    del old['balanced_accuracy_la']  # As written before runs reported it.
    for content, says in [
        (path.read_text()[:200], 'not valid JSON'),
        (json.dumps(old), 'written by an earlier version of this code'),
    ]:
        path.write_text(content)
        proc = _summarize(f'--runs={tmp_path}', f'--output={tmp_path / "out"}')
        assert proc.returncode == 1
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f'error: {path}: {says}'), line


def test_bad_paths_and_files_are_one_line_errors_before_anything_is_written(tmp_path):
    runs = tmp_path / 'runs'
    _write(str(runs), 'fixmatch', 1, [0.5], [0.5] * 4, [0.5] * 4, [100] * 4)
    results = runs / 'fixmatch' / 'fold_1' / 'results.json'
    (tmp_path / 'file').write_text('')
    empty = tmp_path / 'empty'
    _write(str(empty), 'fixmatch', 1, [0.5], [0.5] * 4, [0.5] * 4, [100] * 4)
    no_generation = json.loads(results.read_text())
    no_generation['generations'] = []
    (empty / 'fixmatch' / 'fold_1' / 'results.json').write_text(json.dumps(no_generation))
    out = tmp_path / 'out'
    for argv, message in [
        ([f'--runs={results}'], f'error: --runs {results}: not a folder'),
        ([f'--rerun={tmp_path / "nowhere"}'], f'error: --rerun {tmp_path / "nowhere"}: not a'),
        ([f'--output={tmp_path / "file"}'], f'error: --output {tmp_path / "file"}: exists and'),
        (
            [f'--notes={tmp_path / "missing.md"}', f'--document={tmp_path / "doc.md"}'],
            f'error: --notes {tmp_path / "missing.md"}: cannot read it (No such file',
        ),
        ([f'--notes={tmp_path / "missing.md"}'], f'error: --notes {tmp_path / "missing.md"}'),
        ([f'--document={tmp_path}'], f'error: --document {tmp_path}: a folder'),
        ([f'--document={tmp_path / "no" / "doc.md"}'], f'error: --document {tmp_path / "no"}'),
        (
            [f'--runs={empty}'],
            f'error: {empty / "fixmatch" / "fold_1" / "results.json"}: holds no generation',
        ),
    ]:
        argv = [f'--runs={runs}', f'--output={out}', *argv]
        proc = _summarize(*argv)
        assert proc.returncode == 1, (argv, proc.stderr[-1000:])
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(message), (argv, line)
        assert not out.exists() and not (tmp_path / 'doc.md').exists()
