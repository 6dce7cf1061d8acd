"""The evidence study on made-up runs: its plan (curve, map, Table 2), FixMatch's bias,
the regime map and its prediction, the generated document, scripts/diagnose.py and the
runner; and, on tiny real runs, that a run started from a copied generation 0 ends as a
full one."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from crest import evidence
from crest.report import evidence_document, regime
from libml import locks
from tests import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ['a', 'b', 'c', 'd']
COUNTS = [100, 40, 16, 6]


def _report(recall, precision, predicted=(50, 20, 10, 5)):
    return {'recall': list(recall), 'precision': list(precision), 'predicted': list(predicted)}


def _results(acc, recall=(0.9, 0.8, 0.5, 0.3), precision=(0.6, 0.8, 0.9, 1.0), gens=1):
    gen = {
        'balanced_accuracy': acc,
        'balanced_accuracy_la': acc + 0.01,
        'test': {
            **_report(recall, precision),
            'balanced_accuracy': acc,
            'balanced_accuracy_la': acc + 0.01,
            'recall_la': list(recall),
        },
        'unlabeled': _report(recall, precision),
        'picks': {'picked': [4, 3, 2, 1], 'correct': [4, 3, 1, 1], 'total_picked': 10},
        'seconds': 60.0,
    }
    return {
        'args': {
            'dataset': 'fashion_mnist_lt',
            'imbalance': 100.0,
            'label_fraction': 0.1,
            'generations': gens,
            'steps_per_generation': 4800,
            'seed': 1,
        },
        'class_names': NAMES,
        'labeled_counts': COUNTS,
        'balanced_accuracy': acc,
        'balanced_accuracy_la': acc + 0.01,
        'generations': [gen] * gens,
    }


def _finish(root, cell, acc, **kwargs):
    path = cell.workdir(str(root))
    os.makedirs(path, exist_ok=True)
    gens = cell.generations
    with open(os.path.join(path, 'results.json'), 'w') as f:
        json.dump(_results(acc, gens=gens, **kwargs), f)


def _finish_curve(root, accs):
    for steps, acc in accs.items():
        _finish(root, evidence.curve_cell(steps), acc)


def test_curve_doubles_until_doubling_gains_less_than_a_point(tmp_path):
    cells, converged = evidence.curve(str(tmp_path))
    assert [c.total_steps for c in cells] == [2400, 4800] and converged is None
    _finish_curve(tmp_path, {2400: 0.75, 4800: 0.78})
    cells, converged = evidence.curve(str(tmp_path))
    assert [c.total_steps for c in cells] == [2400, 4800, 9600] and converged is None
    _finish_curve(tmp_path, {9600: 0.785})  # +0.5 point: 4,800 is enough.
    assert evidence.curve(str(tmp_path))[1] == 4800


def test_curve_stops_when_doubling_loses_and_says_when_it_never_converges(tmp_path):
    _finish_curve(tmp_path, {2400: 0.75, 4800: 0.70})
    assert evidence.curve(str(tmp_path))[1] == 2400
    steps, accs = 2400, {}
    while steps <= evidence.CURVE_MAX:  # Two points more at every doubling.
        accs[steps] = 0.5 + 0.02 * len(accs)
        steps *= 2
    _finish_curve(tmp_path / 'long', accs)
    cells, waiting = evidence.plan(str(tmp_path / 'long'))
    assert [c for c in cells if c.stage == 'curve'][-1].total_steps == evidence.CURVE_MAX
    assert 'raise CURVE_MAX' in waiting


def test_plan_waits_for_the_curve_then_for_every_bias_before_table2(tmp_path):
    root = str(tmp_path)
    cells, waiting = evidence.plan(root)
    assert waiting == 'the convergence curve'
    # The curve's first two lengths, then FixMatch with the other seeds.
    assert [c.stage for c in cells] == ['curve', 'curve'] + ['spread'] * 2
    _finish_curve(tmp_path, {2400: 0.75, 4800: 0.78, 9600: 0.785})
    cells, waiting = evidence.plan(root)
    assert 'Table 2' in waiting
    assert [c.stage for c in cells[:5]] == ['curve'] * 3 + ['spread'] * 2
    # The curve's runs at the base setting are the map's FixMatch runs, not run twice.
    folders = [c.workdir(root) for c in cells]
    assert len(folders) == len(set(folders))
    assert sum('g100_b10_o0/total_4800/fixmatch/' in f for f in folders) == 1
    # Every setting's S-step FixMatch comes before any CReST+ run.
    first_plus = next(i for i, c in enumerate(cells) if c.method == 'fixmatch_crest_plus')
    short = [i for i, c in enumerate(cells) if c.method == 'fixmatch' and c.total_steps == 4800]
    assert len(short) == len(evidence.SETTINGS) and max(short) < first_plus
    plus = cells[first_plus]
    assert plus.total_steps == 9600 and plus.steps_per_generation == 4800
    assert '--generations=2' in plus.flags(1) and '--eval_every=160' in plus.flags(1)

    # FixMatch recall on the minority half lowest at permutation 1: Table 2 goes there.
    for setting in evidence.SETTINGS:
        recall = (0.9, 0.8, 0.2, 0.1) if setting.class_order == 1 else (0.9, 0.8, 0.6, 0.5)
        _finish(tmp_path, evidence.Cell(setting, 'fixmatch', 4800), 0.78, recall=recall)
    cells, waiting = evidence.plan(root)
    assert waiting is None
    # The map now starts with the most biased setting; its fold-1 runs count for Table 2.
    plus = [c for c in cells if c.method == 'fixmatch_crest_plus']
    assert plus[0].setting.class_order == 1 and plus[0].stage == 'map'
    table2 = [c for c in cells if c.stage == 'table2']
    assert {c.setting.class_order for c in table2} == {1}
    # The whole map (CReST's one generation of its own included) before Table 2.
    crest = [i for i, c in enumerate(cells) if c.method == 'fixmatch_crest' and c.stage == 'map']
    assert len(crest) == len(evidence.SETTINGS) and max(crest) < cells.index(table2[0])
    assert {c.fold for c in table2} == {1, 2, 3}
    assert {'fixmatch', 'fixmatch_crest_plus', 'alpha0', 'mixmatch'} <= {c.method for c in table2}


def test_a_cell_of_another_seed_has_its_own_folder_flag_and_generation0(tmp_path):
    root = str(tmp_path)
    first, other = (evidence.Cell(evidence.BASE, 'fixmatch', 4800, 1, 'spread', s) for s in (1, 2))
    assert other.workdir(root) == os.path.join(root, 'seed_2', first.workdir(''))
    assert '--seed=2' in other.flags(1) and '--seed=1' not in other.flags(1)
    assert '--seed=1' in first.flags(1)
    assert evidence.cells_key(first) != evidence.cells_key(other)
    crest = evidence.Cell(evidence.BASE, 'fixmatch_crest', 9600, seed=2)
    assert evidence.generation0_source(crest, [first]) is None
    assert evidence.generation0_source(crest, [first, other]).seed == 2
    # A run of seed 1 never reads as the seed-2 cell's.
    _finish(tmp_path, first, 0.8)
    assert evidence.results(root, other) is None


def test_the_document_sets_the_last_doubling_against_the_seed_spread(tmp_path):
    root = str(tmp_path)
    steps = evidence.SPREAD_STEPS
    lengths = [evidence.CURVE_START * 2**k for k in range(5)]
    assert steps in lengths[:-1]
    # Still rising at the longest: its doubling is the last measured one.
    _finish_curve(tmp_path, dict(zip(lengths, (0.70, 0.73, 0.76, 0.78, 0.795), strict=True)))
    _finish(tmp_path, evidence.curve_cell(steps), 0.78)
    text = evidence_document.spread(root)
    assert '| 1 | 78.0 |' in text and '| 2 | not finished |' in text
    assert 'standard deviation' not in text  # One seed: no spread yet.
    for cell, acc in zip(evidence.spread_cells(), (0.80, 0.79), strict=True):
        _finish(tmp_path, cell, acc)
    text = evidence_document.spread(root)
    # Seeds 78, 80, 79: standard deviation 1.0 point; of a difference, 1.4.
    assert 'Across 3 seeds the standard deviation is 1.0 points' in text
    assert 'about 1.4 points' in text
    assert 'last measured doubling changed balanced accuracy by +1.5 points' in text


def test_a_cell_run_on_one_fold_is_rerun_against_the_seed_spread(tmp_path):
    root = str(tmp_path / 'evidence')
    first = evidence.curve_cell(evidence.CURVE_START)
    _finish(root, first, 0.75)
    _finish(root + '_rerun', first, 0.755)
    text = evidence_document.reruns(root)
    assert '| +0.5 |  | no spread measured |' in text  # One fold, no seeds yet.
    steps = evidence.SPREAD_STEPS
    for cell, acc in zip(
        [evidence.curve_cell(steps), *evidence.spread_cells()], (0.78, 0.80, 0.79), strict=True
    ):
        _finish(root, cell, acc)
    text = evidence_document.reruns(root)
    assert f'| 75.0 | 75.5 | +0.5 | 1.0 (seeds, {steps:,} steps) | yes |' in text
    _finish(root + '_rerun', first, 0.77)  # 2 points off: more than the seeds' 1.0.
    assert '| +2.0 | 1.0 (seeds' in evidence_document.reruns(root)
    assert '| no |' in evidence_document.reruns(root)


def _checkpoint(gen_dir, step):
    os.makedirs(os.path.join(gen_dir, 'ckpt'), exist_ok=True)
    with open(os.path.join(gen_dir, 'ckpt', 'checkpoint'), 'w') as f:
        f.write(f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-1"\n')


def test_steps_left_counts_what_a_run_folder_holds(tmp_path):
    root = str(tmp_path)
    plus = evidence.Cell(evidence.BASE, 'fixmatch_crest_plus', 9600)
    assert evidence.steps_left(root, plus, [plus]) == 9600  # Not started.
    _checkpoint(os.path.join(plus.workdir(root), 'gen_00'), 1280)
    assert evidence.steps_left(root, plus, [plus]) == 9600 - 1280
    # Generation 0 finished: its steps, and nothing of its stale checkpoint, count.
    with open(os.path.join(plus.workdir(root), 'gen_00', 'metrics.json'), 'w') as f:
        f.write('{}')
    assert evidence.steps_left(root, plus, [plus]) == 4800
    _checkpoint(os.path.join(plus.workdir(root), 'gen_01'), 640)
    assert evidence.steps_left(root, plus, [plus]) == 4800 - 640
    # A copied generation 0 is not among the steps to train in the first place.
    fixmatch = evidence.Cell(evidence.BASE, 'fixmatch', 4800)
    crest = evidence.Cell(evidence.BASE, 'fixmatch_crest', 9600)
    os.makedirs(crest.workdir(root))
    with open(os.path.join(crest.workdir(root), evidence.COPIED), 'w') as f:
        f.write('{}')
    _checkpoint(os.path.join(crest.workdir(root), 'gen_01'), 2560)
    assert evidence.steps_left(root, crest, [fixmatch, crest]) == 4800 - 2560


def test_minority_bias_is_precision_minus_recall_on_the_smaller_half():
    bias = evidence.minority_bias(_results(0.7))
    # Minority half: classes c and d (16 and 6 labeled).
    assert bias['minority_precision'] == pytest.approx(0.95)
    assert bias['minority_recall'] == pytest.approx(0.4)
    assert bias['bias'] == pytest.approx(0.55)
    assert bias['smallest_class'] == 'd' and bias['smallest_recall'] == 0.3
    never = _results(0.7)
    never['generations'][0]['unlabeled']['predicted'] = [60, 25, 0, 0]
    bias = evidence.minority_bias(never)
    assert bias['minority_precision'] is None and bias['never_predicted'] == ['c', 'd']
    assert bias['bias'] == pytest.approx(1 - 0.4)  # Precision counts as 1.


def _map_root(tmp_path, gains):
    """A finished curve (S = 4800) and map where CReST+ gains `gains[i]` at a bias
    set by the minority recall of setting i."""
    root = str(tmp_path)
    _finish_curve(tmp_path, {2400: 0.75, 4800: 0.78, 9600: 0.785})
    cells = evidence.map_cells(4800)
    for i, setting in enumerate(evidence.SETTINGS):
        low = 0.8 - 0.1 * i  # Lower minority recall: more bias.
        roles = cells[setting.name]
        for role in ('fixmatch_1gen', 'fixmatch'):
            _finish(tmp_path, roles[role], 0.78, recall=(0.9, 0.9, low, low))
        _finish(tmp_path, roles['fixmatch_crest_plus'], 0.78 + gains[i])
    return root


def test_map_gains_follow_the_bias_and_predict_from_it(tmp_path):
    gains = [-0.02, 0.0, 0.01, 0.03, 0.05]
    root = _map_root(tmp_path, gains)
    entries = regime.map_entries(root, 4800)
    assert [e['crest_plus_t2'] for e in entries] == pytest.approx(gains)
    assert entries[0]['crest_t2'] is None  # CReST not run: no gain, no crash.
    line = regime.fit(entries, 'crest_plus_t2')
    assert line['spearman'] == pytest.approx(1.0) and line['slope'] > 0
    assert regime.follows(line).startswith('yes')
    data = regime.write_map(str(tmp_path / 'map.json'), entries, 4800)
    most = max(e['fixmatch_bias']['bias'] for e in entries)
    least = min(e['fixmatch_bias']['bias'] for e in entries)
    assert regime.predict(data, most)[0].startswith('CReST+ is likely to help')
    assert 'cost accuracy' in regime.predict(data, least)[0]
    assert 'extrapolation' in regime.predict(data, most + 0.3)[0]
    # Ties share their ranks; a bias that never changes tells nothing.
    np.testing.assert_array_equal(regime.average_ranks(np.array([3, 1, 3, 2])), [2.5, 0, 2.5, 1])
    for e in entries:
        e['fixmatch_bias'] = {**e['fixmatch_bias'], 'bias': 0.2}
    assert regime.follows(regime.fit(entries, 'crest_plus_t2')).startswith('undetermined')


def test_document_is_generated_from_the_runs(tmp_path):
    root = _map_root(tmp_path, [-0.02, 0.0, 0.01, 0.03, 0.05])
    with open(os.path.join(root, 'ledger.jsonl'), 'w') as f:
        record = {'stage': 'map', 'steps': 9600, 'returncode': 0, 'seconds': 1800}
        f.write(json.dumps({**record, 'cpu': 'Test CPU', 'jobs': 2, 'threads': 1}) + '\n')
    # Table 2's FixMatch on folds 2 and 3, and fold 2 run again.
    chosen = evidence.SETTINGS[-1]
    for fold, acc in ((2, 0.77), (3, 0.79)):
        _finish(tmp_path, evidence.Cell(chosen, 'fixmatch', 9600, fold), acc)
    _finish(tmp_path / 'again', evidence.Cell(chosen, 'fixmatch', 9600, 2), 0.775)
    os.rename(tmp_path / 'again', root + '_rerun')
    # A run started by hand at a length the plan does not use: CReST+ 2 x 2,400.
    _finish(tmp_path, evidence.Cell(evidence.BASE, 'fixmatch_crest_plus', 4800), 0.80)
    out = tmp_path / 'docs'
    path = str(out / 'RESULTS.md')
    evidence_document.write(root, str(out), path, '# Notes\n')
    text = open(path).read()
    assert text.startswith('# Notes') and 'Test CPU' in text
    assert '| 4,800 | 78.0 | +3.0 | +15.0 | d 80.0 |' in text  # The curve, from its runs.
    assert '+5.0' in text and 'CReST+ is' not in text  # The map's gains, no advice.
    assert (out / 'regime_map.json').exists() and (out / 'gain_vs_bias.png').exists()
    # The most biased setting (the last) is Table 2's; its runs are the map's on fold 1.
    assert 'gamma 100, beta 3%, index order (the setting whose FixMatch is most biased)' in text
    assert '| FixMatch + CReST+ |' in text
    command = next(line for line in text.splitlines() if line.startswith('.venv/bin/python'))
    assert '--method=fixmatch --total_steps=9600 --fold=2' in command
    assert '--imbalance=100 --label_fraction=0.03 --class_order=0' in command
    assert command.endswith(f'--workdir={root}_rerun/g100_b3_o0/total_9600/fixmatch/fold_2')
    rerun = '| g100_b3_o0/total_9600/fixmatch/fold_2 | 77.0 | 77.5 | +0.5 | 1.0 (folds) | yes |'
    assert rerun in text
    # Compared with FixMatch under both rules, outside the plan's tables.
    row = '| gamma 100, beta 10%, index order | FixMatch + CReST+ | 2 x 2,400 | 1 | 80.0 | 81.0 |'
    row += '  | +5.0 (FixMatch 2,400: 75.0) | +2.0 (FixMatch 4,800: 78.0) |'
    assert text.split('## Runs outside the plan')[1].count(row) == 1


def test_diagnose_reads_a_run_and_the_map(tmp_path):
    root = _map_root(tmp_path, [-0.02, 0.0, 0.01, 0.03, 0.05])
    regime.write_map(str(tmp_path / 'map.json'), regime.map_entries(root, 4800), 4800)
    run = tmp_path / 'mine'
    run.mkdir()
    (run / 'results.json').write_text(json.dumps(_results(0.7, recall=(0.9, 0.9, 0.3, 0.3))))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'scripts', 'diagnose.py'),
            f'--run={run}',
            f'--map={tmp_path / "map.json"}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'unlabeled set' in out and 'bias +65.0 points' in out
    assert 'CReST+ is likely to help' in out
    # Unlabeled images without labels: the test set, whose predicted counts are means.
    blind = _results(0.7)
    blind['generations'][0]['unlabeled'] = None
    blind['generations'][0]['test']['predicted'] = [50.4, 20.2, 10.0, 0.0]
    (run / 'results.json').write_text(json.dumps(blind))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'diagnose.py'), f'--run={run}'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert 'test set (the unlabeled images carry no labels)' in result.stdout
    assert 'never predicted: d' in result.stdout
    missing = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'diagnose.py'), f'--run={tmp_path}'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0 and missing.stderr.strip().startswith('error:')


@pytest.fixture(scope='module')
def cli():
    """scripts/evidence.py, loaded once (its flags can be defined once per process)."""
    return fakes.load_script('scripts/evidence.py', 'evidence_cli')


def test_runner_runs_each_cell_once_side_by_side_and_keeps_a_ledger(tmp_path, monkeypatch, cli):
    cells = [evidence.Cell(s, 'fixmatch', 4800) for s in evidence.SETTINGS[:3]]
    monkeypatch.setattr(evidence, 'plan', lambda root: (cells, None))
    launched = []

    def fake_launch(root, cell, threads):
        """Writes the cell's results.json, or fails for the permutation-2 setting."""
        launched.append((cell, threads))
        path = os.path.join(cell.workdir(root), 'results.json')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        code = (
            'import sys; sys.exit(3)'
            if cell.setting.class_order == 2
            else f'import json; json.dump({{"balanced_accuracy": 0.5}}, open({path!r}, "w"))'
        )
        return subprocess.Popen([sys.executable, '-c', code])

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    root = str(tmp_path)
    assert cli.run(root, jobs=2, max_minutes=0) == 1  # One cell failed.
    assert [c for c, _ in launched] == cells  # Each once, the failed one not retried.
    records = evidence.ledger(root)
    assert sorted(r['returncode'] for r in records) == [0, 0, 3]
    assert all(r['steps'] == 4800 and r['cpu'] for r in records)
    # Started again, only the failed cell is left to run.
    launched.clear()
    cli.run(root, jobs=2, max_minutes=0)
    assert [c.setting.class_order for c, _ in launched] == [2]
    # Not while another runner holds the folder.
    with locks.hold(os.path.join(root, '.runner.lock'), 'held by the test'):
        with pytest.raises(SystemExit, match='another scripts/evidence.py is running'):
            cli.run(root, jobs=2, max_minutes=0)


def test_runner_limited_to_settings_drops_the_others_but_never_the_curve(
    tmp_path, monkeypatch, cli
):
    base, other, dropped = evidence.SETTINGS[:3]
    cells = [
        evidence.curve_cell(4800),
        evidence.Cell(dropped, 'fixmatch', 4800),
        evidence.Cell(other, 'fixmatch', 4800),
        evidence.Cell(base, 'fixmatch_crest_plus', 9600),
    ]
    monkeypatch.setattr(evidence, 'plan', lambda root: (cells, None))
    launched = []

    def fake_launch(root, cell, threads):
        launched.append(cell)
        path = os.path.join(cell.workdir(root), 'results.json')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        code = f'import json; json.dump({{"balanced_accuracy": 0.5}}, open({path!r}, "w"))'
        return subprocess.Popen([sys.executable, '-c', code])

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    assert cli.run(str(tmp_path), jobs=1, max_minutes=0, settings=[base.name, other.name]) == 0
    assert launched == [cells[0], cells[2], cells[3]]


def test_an_unknown_setting_is_refused_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'scripts', 'evidence.py'),
            '--action=list',
            f'--root={tmp_path}',
            '--settings=g100_b10_o0,g300_b10_o0',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        'error: --settings: unknown g300_b10_o0; known: '
        + ', '.join(s.name for s in evidence.SETTINGS)
    )


def _fake_args(cell):
    """The args.json scripts/crest.py writes for `cell` (the settings its flags give)."""
    args = {'steps_per_generation': cell.steps_per_generation}
    for flag in cell.flags(threads=1):
        name, _, value = flag[2:].partition('=')
        try:
            args[name] = float(value) if '.' in value else int(value)
        except ValueError:
            args[name] = value or True
    return args


# argv: a run folder. A fake run: after a moment, its generation 0 and results.json.
_FAKE_RUN = """
import json, os, sys, time
time.sleep(0.3)
os.makedirs(sys.argv[1] + '/gen_00', exist_ok=True)
with open(sys.argv[1] + '/gen_00/metrics.json', 'w') as f:
    json.dump({'trained_by': sys.argv[2]}, f)
with open(sys.argv[1] + '/results.json', 'w') as f:
    json.dump({'balanced_accuracy': 0.5}, f)
"""


def test_runner_waits_for_generation0_then_copies_it(tmp_path, monkeypatch, cli):
    base = evidence.BASE
    fixmatch = evidence.Cell(base, 'fixmatch', 4800)
    crest = evidence.Cell(base, 'fixmatch_crest', 9600)
    cells = [fixmatch, crest]
    root = str(tmp_path)
    # CReST's generation 0 is FixMatch's run; CReST+'s (alignment on) and alpha = 0's
    # (other picks) are their own, as is CReST's when no FixMatch run is planned.
    assert evidence.generation0_source(crest, cells) == fixmatch
    for method in ('fixmatch_crest_plus', 'alpha0'):
        assert evidence.generation0_source(evidence.Cell(base, method, 9600), cells) is None
    assert evidence.steps_to_train(root, crest, cells) == 4800
    assert evidence.steps_to_train(root, crest, [crest]) == 9600
    monkeypatch.setattr(evidence, 'plan', lambda root: (cells, None))
    launched = []

    def fake_launch(root, cell, threads):
        gen0 = os.path.join(cell.workdir(root), 'gen_00', 'metrics.json')
        copied = None
        if os.path.exists(gen0):
            with open(gen0) as f:
                copied = json.load(f)
        launched.append((cell, copied, evidence.results(root, fixmatch) is not None))
        os.makedirs(cell.workdir(root), exist_ok=True)
        with open(os.path.join(cell.workdir(root), 'args.json'), 'w') as f:
            json.dump(_fake_args(cell), f)
        return subprocess.Popen([sys.executable, '-c', _FAKE_RUN, cell.workdir(root), cell.method])

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    assert cli.run(root, jobs=2, max_minutes=0) == 0
    # A free slot did not start CReST beside FixMatch: it waited for FixMatch's run to
    # finish, then started from its generation 0.
    assert [(c, copied, after) for c, copied, after in launched] == [
        (fixmatch, None, False),
        (crest, {'trained_by': 'fixmatch'}, True),
    ]
    with open(os.path.join(crest.workdir(root), evidence.COPIED)) as f:
        assert json.load(f) == {'copied_from': fixmatch.workdir(root)}
    steps = {r['workdir']: r['steps'] for r in evidence.ledger(root)}
    assert steps[crest.workdir(root)] == 4800  # Generation 1 only.
    assert evidence.steps_to_train(root, crest, cells) == 4800  # Started, from a copy.
    # Generation 0 of another setting's run is refused, the flag named.
    other = evidence.Cell(evidence.SETTINGS[1], 'fixmatch_crest', 9600)
    with pytest.raises(ValueError, match='--class_order=1 .the run has 0.'):
        evidence.copy_generation0(root, fixmatch, other)


def test_runner_trains_generation0_itself_when_the_source_was_trained_otherwise(
    tmp_path, monkeypatch, cli
):
    fixmatch = evidence.Cell(evidence.BASE, 'fixmatch', 4800)
    crest = evidence.Cell(evidence.BASE, 'fixmatch_crest', 9600)
    root = str(tmp_path)
    _finish(tmp_path, fixmatch, 0.78)
    with open(os.path.join(fixmatch.workdir(root), 'args.json'), 'w') as f:
        json.dump({**_fake_args(fixmatch), 'seed': 2}, f)
    monkeypatch.setattr(evidence, 'plan', lambda root: ([fixmatch, crest], None))
    launched = []

    def fake_launch(root, cell, threads):
        launched.append((cell, os.path.exists(cell.workdir(root))))
        os.makedirs(cell.workdir(root), exist_ok=True)
        return subprocess.Popen([sys.executable, '-c', _FAKE_RUN, cell.workdir(root), cell.method])

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    assert cli.run(root, jobs=1, max_minutes=0) == 0
    assert launched == [(crest, False)]  # Nothing copied into its folder.
    assert [r['steps'] for r in evidence.ledger(root)] == [9600]


@pytest.mark.parametrize('jobs', [1, 2])
def test_runner_leaves_a_run_busy_elsewhere_to_it_within_its_jobs(tmp_path, monkeypatch, cli, jobs):
    first, busy = (evidence.Cell(s, 'fixmatch', 4800) for s in evidence.SETTINGS[:2])
    monkeypatch.setattr(evidence, 'plan', lambda root: ([first, busy], None))
    root = str(tmp_path)
    # Another process trains `busy` (holds its folder's lock) until told to stop, then
    # stops before it has finished.
    os.makedirs(busy.workdir(root))
    lock = os.path.join(busy.workdir(root), locks.RUN)
    holder = subprocess.Popen(
        [sys.executable, '-c', _HOLD_LOCK, ROOT, lock],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == 'held'
    launched = []

    def fake_launch(root, cell, threads):
        launched.append((cell, locks.held(lock)))
        if cell == first:
            holder.stdin.close()  # The busy run stops once `first` has started.
        os.makedirs(cell.workdir(root), exist_ok=True)
        return subprocess.Popen([sys.executable, '-c', _FAKE_RUN, cell.workdir(root), cell.method])

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    if jobs == 1:  # Its one slot is the busy run's: nothing starts until that stops.
        threading.Timer(1.0, holder.stdin.close).start()
    assert cli.run(root, jobs=jobs, max_minutes=0) == 0
    holder.wait()
    # With a free slot, `first` started beside the busy run; with none, only after it.
    # The busy run was taken up once its process had let go, not before.
    assert launched == [(first, jobs == 2), (busy, False)]


# argv: repository, lock file. Holds the lock, says so, waits for its stdin to close.
_HOLD_LOCK = """
import sys
sys.path.insert(0, sys.argv[1])
from libml import locks
with locks.hold(sys.argv[2], 'busy'):
    print('held', flush=True)
    sys.stdin.read()
"""


def test_hours_left_at_the_ledger_speed(tmp_path):
    assert evidence.hours(str(tmp_path), [1000]) is None
    records = [
        {'steps': 3600, 'seconds': 1800, 'returncode': 0, 'jobs': 2},  # 2 steps/s per run.
        {'steps': 3600, 'seconds': 100, 'returncode': 0, 'jobs': 2, 'resumed': True},
        {'steps': 3600, 'seconds': 10, 'returncode': 1, 'jobs': 2},
    ]
    with open(tmp_path / evidence.LEDGER, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)
    # Two runs side by side: 4 x 3,600 steps in 2 hours; one alone no faster than itself.
    assert evidence.hours(str(tmp_path), [3600] * 4) == (pytest.approx(1.0), 2)
    assert evidence.hours(str(tmp_path), [7200])[0] == pytest.approx(1.0)


def test_killing_the_runner_stops_its_runs(tmp_path):
    """In a process of its own: the runner, as `--action=run` sets it up, two fake runs,
    SIGTERM; both runs must end with it."""
    import signal
    import time

    source = f"""
import os, signal, subprocess, sys
sys.path.insert(0, {ROOT!r})
from crest import evidence
from tests import fakes
cli = fakes.load_script('scripts/evidence.py', 'cli')
cells = [evidence.Cell(s, 'fixmatch', 4800) for s in evidence.SETTINGS[:2]]
evidence.plan = lambda root: (cells, None)
def launch(root, cell, threads):
    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    with open(os.path.join(root, 'pids'), 'a') as f:
        f.write(str(p.pid) + chr(10))
    return p
cli.launch = launch
cli.POLL_SECONDS = 0.05
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
cli.run({str(tmp_path)!r}, 2, 0)
"""
    runner = subprocess.Popen([sys.executable, '-c', source])
    pids = tmp_path / 'pids'
    deadline = time.time() + 60
    while time.time() < deadline and len(pids.read_text().split() if pids.exists() else []) < 2:
        time.sleep(0.1)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 143
    for pid in map(int, pids.read_text().split()):
        with pytest.raises(ProcessLookupError):  # Ended and reaped by the runner.
            os.kill(pid, 0)
    # Their time is in the ledger: the machine worked for it.
    records = evidence.ledger(str(tmp_path))
    assert len(records) == 2 and all(r['stopped'] and r['returncode'] for r in records)


# argv: a temporary folder. Tiny runs: FixMatch for 6 steps, FixMatch + CReST for 2 x 6,
# and CReST again from a copy of FixMatch's generation 0; then a second run of a folder
# in use.
_COPY_SCRIPT = """
import json, sys
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
from crest import config as config_lib, evidence, loop, methods
from libml import datasets, locks
from tests import fakes

tmp = sys.argv[1]
datasets.DATASETS['tiny'] = fakes.tiny_fashion_mnist(tmp + '/src', 30, 3, 24)

def cfg(method, total, name):
    return config_lib.Config(
        workdir=tmp + '/' + name, dataset='tiny', data_dir=tmp + '/src', imbalance=8,
        label_fraction=0.3, arch='cnn_small', eval_every=2, batch_size=8, uratio=2,
        ema_warmup=True, seed=3, **methods.settings(method, total, generations=2))

quiet = lambda _: None
loop.run(cfg('fixmatch', 6, 'fixmatch'), log=quiet)
loop.run(cfg('fixmatch_crest', 12, 'crest'), log=quiet)
evidence.copy_generation0_files(tmp + '/fixmatch', tmp + '/copied')
lines = []
loop.run(cfg('fixmatch_crest', 12, 'copied'), log=lines.append)
with locks.hold(tmp + '/crest/' + locks.RUN, 'held by the test'):
    try:
        loop.run(cfg('fixmatch_crest', 12, 'crest'), log=quiet)
        busy = None
    except ValueError as e:
        busy = str(e)
print('RESULT ' + json.dumps({'log': lines, 'busy': busy}))
"""


@pytest.mark.slow
def test_a_run_from_a_copied_generation0_ends_as_a_full_run(tmp_path):
    found = fakes.run_python(_COPY_SCRIPT, str(tmp_path))
    assert any('[gen 0/1] finished earlier, skipped' in line for line in found['log'])
    full, copied = (fakes.run_outcome(tmp_path / run) for run in ('crest', 'copied'))
    assert full['results']['args']['generations'] == 2
    assert copied == full
    # Copying into a started run would mix two runs.
    with pytest.raises(ValueError, match='exists'):
        evidence.copy_generation0_files(str(tmp_path / 'fixmatch'), str(tmp_path / 'crest'))
    # A second run of a folder in use stops at once, in one line.
    assert found['busy'].startswith(f'--workdir {tmp_path}/crest: another run is using')
