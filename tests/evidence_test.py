"""The evidence study on made-up runs: its plan (base, precision, map, extras), the
regime map and its prediction, the document generated from the records (and
the committed one from the committed records), scripts/diagnose.py and the runner; and,
on tiny real runs, that a run started from a copied generation 0 ends as a full one."""

import contextlib
import copy
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from libml import locks, machine
from study.evidence import design, document, generation0, planner, progress, regime, store, timing
from tests import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ['a', 'b', 'c', 'd']
COUNTS = [100, 40, 16, 6]


def _results(acc, recall=(0.9, 0.8, 0.5, 0.3), precision=(0.6, 0.8, 0.9, 1.0), gens=1):
    """A run of `gens` generations, each with balanced accuracy `acc` (`acc` + 1 point
    with logit adjustment), these test and unlabeled-set numbers and 60 s of training."""
    return fakes.run_results(
        [acc] * gens,
        recall,
        precision,
        (50, 20, 10, 5),
        COUNTS,
        NAMES,
        la=acc + 0.01,
        correct=[4, 3, 1, 1],
        args={
            'dataset': 'fashion_mnist_lt',
            'imbalance': 100.0,
            'label_fraction': 0.1,
            'generations': gens,
            'steps_per_generation': 4800,
            'seed': 1,
        },
    )


def _finish(root, cell, acc, **kwargs):
    fakes.write_results(cell.workdir(str(root)), _results(acc, gens=cell.generations, **kwargs))


def _results_text():
    """A finished run's results.json, as a fake run writes it."""
    return json.dumps(_results(0.5).to_json(), indent=1)


# How a fake run writes a file: whole or not at all, as real runs do, since the runner
# reads results.json while the run goes on (an empty file, just opened, is no JSON).
_PUT = """
import os
def put(path, text):
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)
"""


def _writes_results(root, cell, before=0.0, after=0.0) -> subprocess.Popen:
    """A fake run of `cell`: writes its results.json after `before` seconds and exits
    `after` seconds later."""
    path = os.path.join(cell.workdir(root), 'results.json')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    code = (
        f'{_PUT}\nimport time\ntime.sleep({before})\nput({path!r}, {_results_text()!r})\n'
        f'time.sleep({after})\n'
    )
    return subprocess.Popen([sys.executable, '-c', code])


def _ledger(root, cell, seconds, **extra):
    """Appends a finished run's line to ROOT's ledger."""
    record = {
        'workdir': cell.workdir(str(root)),
        'cell': cell.workdir(''),
        'stage': cell.stage,
        'precision': cell.precision,
        'steps': cell.total_steps,
        'returncode': 0,
        'seconds': seconds,
        'cpu': 'Test CPU',
        'jobs': 2,
        'threads': 1,
        **extra,
    }
    with open(os.path.join(str(root), timing.LEDGER), 'a') as f:
        f.write(json.dumps(record) + '\n')


def _evidence(*flags: str) -> subprocess.CompletedProcess:
    """scripts/evidence.py run with these flags from the repository's folder."""
    return subprocess.run(
        [sys.executable, 'scripts/evidence.py', *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


S = design.STEPS
BASE_S = design.Cell(design.BASE, 'fixmatch', S)  # Base fold 1's FixMatch S.
# Base fold 1's FixMatch S recalls class 1 worst, then 2, 3, 0 (its minority half, 2 and
# 3, at 80%).
BASE_RECALL = (0.9, 0.5, 0.75, 0.85)


def _decide(root, bf16_acc=0.78, bf16_seconds=1000):
    """Finishes the base folds' FixMatch S (float32, 0.78 on fold 1, 1,800 to 2,200 s:
    2,000 s on average) and its bf16 twin on fold 1."""
    for fold, seconds in ((1, 2000), (2, 1800), (3, 2200)):
        cell = dataclasses.replace(BASE_S, fold=fold)
        _finish(root, cell, 0.78, recall=BASE_RECALL)
        _ledger(root, cell, seconds)
    _finish(root, design.precision_cell(), bf16_acc)
    _ledger(root, design.precision_cell(), bf16_seconds)


def test_bf16_cells_are_priced_at_the_measured_speed_up(tmp_path):
    root = str(tmp_path)
    cell = design.Cell(design.MAP_OTHERS[0], 'fixmatch', 4800, precision='bf16')
    assert planner.float32_steps(cell, 4800, planner.map_precision(root)) == 4800  # Not measured.
    _decide(tmp_path, 0.781, 1000)  # bf16 1,000 s; float32 1,800-2,200 s: 1.99x.
    assert planner.float32_steps(cell, 4800, planner.map_precision(root)) == round(4800 / 1.987)
    f32 = dataclasses.replace(cell, precision='float32')
    assert planner.float32_steps(f32, 4800, planner.map_precision(root)) == 4800


def test_plan_runs_the_base_first_and_adds_the_map_once_decided(tmp_path):
    root = str(tmp_path)
    cells, waiting = planner.plan(root)
    assert 'decides the hard tail' in waiting and "decides the map's precision" in waiting
    # The check cell, FixMatch S on every base fold (CReST copies it), the bf16 run,
    # then the rest of the base setting; nothing of the map yet.
    assert [c.stage for c in cells] == ['check'] + ['base'] * 3 + ['precision'] + ['base'] * 9
    assert [(c.method, c.total_steps, c.fold) for c in cells[1:4]] == [
        ('fixmatch', S, f) for f in (1, 2, 3)
    ]
    assert {c.setting for c in cells} == {design.BASE}
    plus = next(c for c in cells if c.method == 'fixmatch_crest_plus')
    assert plus.total_steps == 2 * S and plus.steps_per_generation == S
    assert '--generations=2' in plus.flags(1) and f'--eval_every={S // 30}' in plus.flags(1)
    assert cells[0].total_steps == design.CHECK_STEPS
    bf16 = cells[4]
    assert '--precision=bf16' in bf16.flags(1) and '--precision' not in ' '.join(plus.flags(1))
    assert bf16.workdir(root) == os.path.join(root, 'bf16', BASE_S.workdir(''))

    _decide(tmp_path)
    cells, waiting = planner.plan(root)
    assert waiting is None
    folders = [c.workdir(root) for c in cells]
    assert len(folders) == len(set(folders))
    # The map after the base: the hard tail first, four cells per setting, fold 1, in the
    # precision decided; the extras last.
    map_cells = [c for c in cells if c.stage == 'map']
    hard = map_cells[0].setting
    assert hard.class_order == (0, 3, 2, 1) and hard.label == 'hard tail'
    assert hard.name == 'g100_b10_o0-3-2-1' and '--class_order=0,3,2,1' in hard.flags()
    assert [s.label for s in dict.fromkeys(c.setting for c in map_cells)] == [
        'hard tail',
        '3% labeled',
        'imbalance 200',
        'permutation 2',
    ]
    assert len(map_cells) == 16 and {c.fold for c in map_cells} == {1}
    assert {c.precision for c in map_cells} == {'bf16'}
    assert cells.index(map_cells[0]) > max(i for i, c in enumerate(cells) if c.stage == 'base')
    assert [c.method for c in cells[-3:]] == ['fixmatch_da05'] * 3
    assert [c.fold for c in cells[-3:]] == [1, 2, 3]
    crest = next(c for c in map_cells if c.method == 'fixmatch_crest')
    assert generation0.source(crest, cells) == map_cells[0]


@pytest.mark.parametrize(
    ('bf16_acc', 'bf16_seconds', 'chosen'),
    [
        (0.785, 1500, 'bf16'),  # 0.5 points off (allowed: 0.6), 1.32x as fast.
        (0.790, 1000, 'float32'),  # 1.0 point off.
        (0.780, 1600, 'float32'),  # 1.24x as fast only.
    ],
)
def test_the_map_trains_in_bf16_only_if_as_accurate_and_faster(
    tmp_path, bf16_acc, bf16_seconds, chosen
):
    assert planner.seed_std() == pytest.approx(0.003)  # Seeds at 81.2, 80.6, 80.9.
    assert planner.map_precision(str(tmp_path)) is None
    _decide(tmp_path, bf16_acc, bf16_seconds)
    assert timing.steps_per_second(str(tmp_path), BASE_S) == pytest.approx(S / 2000)
    decided = planner.map_precision(str(tmp_path))
    assert decided['precision'] == chosen
    mean_f32 = (S / 2000 + S / 1800 + S / 2200) / 3  # The three base folds' speed.
    assert decided['speedup'] == pytest.approx(S / bf16_seconds / mean_f32)
    assert decided['limit'] == pytest.approx(0.006)


def test_speed_counts_every_stretch_of_a_run(tmp_path):
    cell = design.precision_cell()
    assert timing.steps_per_second(str(tmp_path), cell) is None
    _ledger(tmp_path, cell, 600, returncode=-15, stopped=True, steps=S)
    assert timing.steps_per_second(str(tmp_path), cell) is None  # Not finished.
    _ledger(tmp_path, cell, 1000, resumed=True)
    assert timing.steps_per_second(str(tmp_path), cell) == pytest.approx(S / 1600)


def test_a_cell_of_another_precision_or_seed_has_its_own_folder_flag_and_generation0(
    tmp_path,
):
    root = str(tmp_path)
    first, other = (design.Cell(design.BASE, 'fixmatch', 4800, 1, 'base', s) for s in (1, 2))
    assert other.workdir(root) == os.path.join(root, 'seed_2', first.workdir(''))
    assert '--seed=2' in other.flags(1) and '--seed=1' not in other.flags(1)
    assert design.cells_key(first) != design.cells_key(other)
    bf16 = dataclasses.replace(first, precision='bf16')
    assert design.cells_key(first) != design.cells_key(bf16)
    crest = design.Cell(design.BASE, 'fixmatch_crest', 9600, seed=2)
    assert generation0.source(crest, [first]) is None
    assert generation0.source(crest, [first, other]).seed == 2
    crest = design.Cell(design.BASE, 'fixmatch_crest', 9600, precision='bf16')
    assert generation0.source(crest, [first, other]) is None
    assert generation0.source(crest, [first, bf16]) == bf16
    # A run of seed 1 in float32 never reads as another cell's.
    _finish(tmp_path, first, 0.8)
    assert progress.results(root, other) is None and progress.results(root, bf16) is None


def test_same_results_ignores_wall_time_and_where_a_run_ran():
    first = _results(0.7, gens=2)
    first.args['workdir'], first.args['cpu_threads'] = 'a', 1
    again = copy.deepcopy(first)
    again.args['workdir'], again.args['cpu_threads'] = 'b', 2
    again.generations[1].seconds = 99.0
    assert store.same_results(first, again) == []
    again.generations[1].test.recall = [0] * 4
    again.args['seed'] = 2
    assert store.same_results(first, again) == [
        '/args/seed',
        '/generations[1]/test/recall[0]',
        '/generations[1]/test/recall[1]',
        '/generations[1]/test/recall[2]',
        '/generations[1]/test/recall[3]',
    ]


def _checkpoint(gen_dir, step):
    os.makedirs(os.path.join(gen_dir, 'ckpt'), exist_ok=True)
    with open(os.path.join(gen_dir, 'ckpt', 'checkpoint'), 'w') as f:
        f.write(f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-1"\n')


def test_steps_left_counts_what_a_run_folder_holds(tmp_path):
    root = str(tmp_path)
    plus = design.Cell(design.BASE, 'fixmatch_crest_plus', 9600)
    assert progress.steps_left(root, plus, [plus]) == 9600  # Not started.
    _checkpoint(os.path.join(plus.workdir(root), 'gen_00'), 1280)
    assert progress.steps_left(root, plus, [plus]) == 9600 - 1280
    # Generation 0 finished: its steps, and nothing of its stale checkpoint, count.
    with open(os.path.join(plus.workdir(root), 'gen_00', 'metrics.json'), 'w') as f:
        f.write('{}')
    assert progress.steps_left(root, plus, [plus]) == 4800
    _checkpoint(os.path.join(plus.workdir(root), 'gen_01'), 640)
    assert progress.steps_left(root, plus, [plus]) == 4800 - 640
    # A copied generation 0 is not among the steps to train in the first place.
    fixmatch = design.Cell(design.BASE, 'fixmatch', 4800)
    crest = design.Cell(design.BASE, 'fixmatch_crest', 9600)
    os.makedirs(crest.workdir(root))
    with open(os.path.join(crest.workdir(root), generation0.COPIED), 'w') as f:
        f.write('{}')
    _checkpoint(os.path.join(crest.workdir(root), 'gen_01'), 2560)
    assert progress.steps_left(root, crest, [fixmatch, crest]) == 4800 - 2560


def _map_root(tmp_path, gains):
    """Decided precision (bf16) and the map's five settings (base first), where CReST+
    gains `gains[i]` at a bias set by the minority recall of setting i."""
    root = str(tmp_path)
    _decide(tmp_path, 0.781, 1000)
    for i, setting in enumerate(planner.map_settings(root)):
        low = 0.8 - 0.1 * i  # Lower minority recall: more bias.
        precision = 'float32' if setting == design.BASE else 'bf16'
        cells = design.setting_cells(setting, 1, 'map', precision)
        for role in ('fixmatch_1gen', 'fixmatch'):
            recall = BASE_RECALL if i == 0 else (0.9, 0.9, low, low)
            _finish(tmp_path, cells[role], 0.78, recall=recall)
        _finish(tmp_path, cells['fixmatch_crest_plus'], 0.78 + gains[i])
    return root


def test_map_gains_follow_the_bias_and_predict_from_it(tmp_path):
    gains = [-0.02, 0.0, 0.01, 0.03, 0.05]
    root = _map_root(tmp_path, gains)
    entries = regime.map_entries(root)
    assert [e['precision'] for e in entries] == ['float32'] + ['bf16'] * 4
    assert entries[1]['class_order'] == [0, 3, 2, 1]
    assert [e['crest_plus_t2'] for e in entries] == pytest.approx(gains)
    assert entries[0]['crest_t2'] is None  # CReST not run: no gain, no crash.
    line = regime.fit(entries, 'crest_plus_t2')
    assert line['spearman'] > 0.7 and line['slope'] > 0
    assert regime.follows(line).startswith('yes')
    data = regime.write_map(str(tmp_path / 'map.json'), entries)
    assert data['steps_per_generation'] == S
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


def test_document_is_generated_from_the_records(tmp_path):
    root = _map_root(tmp_path, [-0.02, 0.0, 0.01, 0.03, 0.05])
    # The base setting: FixMatch S 78/77/79, FixMatch 2S 79/78/80, CReST+ 81/81/82.
    for fold, (short, long, plus) in enumerate(
        ((0.78, 0.79, 0.81), (0.77, 0.78, 0.81), (0.79, 0.80, 0.82)), start=1
    ):
        cells = design.setting_cells(design.BASE, fold, 'base', 'float32')
        _finish(tmp_path, cells['fixmatch_1gen'], short, recall=BASE_RECALL)
        _finish(tmp_path, cells['fixmatch'], long)
        _finish(tmp_path, cells['fixmatch_crest_plus'], plus)
    cells = design.setting_cells(design.BASE, 1, 'base', 'float32')
    _finish(tmp_path, cells['fixmatch_crest'], 0.795)  # Fold 1 only.
    out = tmp_path / 'docs'
    path = str(out / 'RESULTS.md')
    written = document.write(root, str(out), path, '# Notes\n', str(out / 'regime_map.json'))
    text = open(path).read()
    assert text.startswith('# Notes') and 'Test CPU' in text
    # The second edition's curve and the choice of S.
    assert '| 76,800 | 82.7 | +0.4 |  |' in text and 'answers 38,400 steps' in text
    assert '| 19,200 | 81.2 | +1.3 | 78.0 |' in text  # This edition's run of that cell.
    # The base table and its claims: CReST+ - FixMatch 2S = +2, +3, +2 points.
    assert '| FixMatch, 2S | 79.0 | 78.0 | 80.0 | 79.0 ± 1.0 |' in text
    assert '| FixMatch, 2S + LA | 80.0 | 79.0 | 81.0 | 80.0 ± 1.0 |' in text
    row = '| CReST+ beats FixMatch | Table 2 | +2.0 (fold 1), +3.0 (fold 2), +2.0 (fold 3) |'
    assert row + ' +2.3 ± 0.6 | held |' in text
    # One paired fold: no spread shown, no verdict.
    row = '| CReST beats FixMatch (claim 2) | Table 1 | +1.5 (fold 1) | +1.5 | undecided (1 paired'
    assert row in text
    # LA adds 1 point to every run here: LA alone is not a 1-point gain.
    assert '| FixMatch + LA beats FixMatch | Table 2 | +1.0 (fold 1), +1.0 (fold 2)' in text
    # The map: precision decided, the gains, the plots.
    assert 'scored 78.1 in bf16 against 78.0 in float32' in text and '**bf16**' in text
    assert '+5.0' in text and 'CReST+ is' not in text  # The map's gains, no advice.
    assert 'hard tail: gamma 100, beta 10%, order 0,3,2,1 | bf16 |' in text
    # The hard tail's per-class table, with CReST+'s pseudo-labels: 1 of 2 right for c.
    (row,) = [line for line in text.splitlines() if line.startswith('| c (16) |')]
    assert row.endswith('| 1 / 2 |'), row
    for name in ('regime_map.json', 'gain_vs_bias.png', 'hard_tail_recall.png'):
        assert str(out / name) in written and (out / name).exists()
    assert "Table 2's other presets at the base setting, 3 folds" in text
    assert 'machine hours with 2 runs side by side' in text
    assert 'side by side (bf16 at its measured speed-up)' in text  # The map's price.
    # A verdict on fewer folds than planned says so.
    runs = document.base_runs(root)
    del runs['CReST+, 2 x S'][3]
    two = document.base_claims(runs)
    assert '| +2.0 (fold 1), +3.0 (fold 2) | +2.5 ± 0.7 | held so far (2 of 3 folds) |' in two
    assert '| +1.5 (fold 1) | +1.5 | undecided (1 paired fold) |' in two
    # Written twice from the same records: the same document.
    document.write(root, str(out), str(out / 'again.md'), '# Notes\n', str(out / 'map.json'))
    assert open(out / 'again.md').read() == text


def test_the_committed_document_is_what_the_committed_records_give(tmp_path):
    """docs/RESULTS.md and the map crest-diagnose reads, written again from
    docs/evidence/runs alone."""
    notes = open(os.path.join(ROOT, 'docs', 'evidence_notes.md')).read().rstrip() + '\n\n'
    path = str(tmp_path / 'RESULTS.md')
    cwd = os.getcwd()
    os.chdir(ROOT)  # The document's links are relative to the repository.
    try:
        document.write(
            'docs/evidence/runs',
            str(tmp_path / 'evidence'),
            path,
            notes,
            str(tmp_path / 'map.json'),
        )
    finally:
        os.chdir(cwd)
    text = open(path).read().replace(os.path.relpath(tmp_path / 'evidence', tmp_path), 'evidence')
    assert text == open(os.path.join(ROOT, 'docs', 'RESULTS.md')).read()
    # Its plots are committed too (on a clean clone, a missing one is a broken picture).
    pictures = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
    missing = [p for p in pictures if not os.path.exists(os.path.join(ROOT, 'docs', p))]
    assert not missing, f'docs/RESULTS.md shows pictures not in the repository: {missing}'
    with (
        open(tmp_path / 'map.json') as f,
        open(regime.MAP_PATH) as g,
    ):
        assert f.read() == g.read()


def test_diagnose_reads_a_run_and_the_map(tmp_path):
    root = _map_root(tmp_path, [-0.02, 0.0, 0.01, 0.03, 0.05])
    regime.write_map(str(tmp_path / 'map.json'), regime.map_entries(root))
    run = tmp_path / 'mine'
    run.mkdir()
    fakes.write_results(run, _results(0.7, recall=(0.9, 0.9, 0.3, 0.3)))
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
    blind.generations[0].unlabeled = None
    blind.generations[0].test.predicted = [50.4, 20.2, 10.0, 0.0]
    fakes.write_results(run, blind)
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
    # A results.json cut short, or of an earlier version: one line naming the file.
    old = _results(0.7).to_json()
    del old['generations'][0]['picks']
    for content in (_results_text()[:300], json.dumps(old), '[]', '{}'):
        (run / 'results.json').write_text(content)
        broken = subprocess.run(
            [sys.executable, os.path.join(ROOT, 'scripts', 'diagnose.py'), f'--run={run}'],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert broken.returncode == 1
        (line,) = broken.stderr.strip().splitlines()
        assert line.startswith(f'error: {run / "results.json"}'), line


def test_diagnose_refuses_bad_flags_and_files_in_one_line(tmp_path):
    run = tmp_path / 'mine'
    run.mkdir()
    fakes.write_results(run, _results(0.7))
    (tmp_path / 'list.json').write_text('[]')
    (tmp_path / 'empty.json').write_text('{}')
    results = run / 'results.json'
    for argv, message in [
        ([f'--run={results}'], f'--run {results}: a file; give the run folder'),
        (['--generation=-1'], '--generation must be >= 0 (0: the first), got -1'),
        (['--generation=1'], '--generation=1: the run has 1 (0..0)'),
        ([f'--map={results}'], f'--map {results}: not a regime map'),
        ([f'--map={tmp_path / "list.json"}'], f'--map {tmp_path / "list.json"}: not a regime'),
        ([f'--map={tmp_path / "empty.json"}'], f'--map {tmp_path / "empty.json"}: not a'),
        ([f'--map={tmp_path}'], f'--map {tmp_path}: cannot read it (Is a directory)'),
        ([f'--map={tmp_path / "none.json"}'], f'--map {tmp_path / "none.json"}: not found'),
    ]:
        argv = [f'--run={run}', *argv]
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, 'scripts', 'diagnose.py'), *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, (argv, proc.stderr[-1000:])
        (line,) = proc.stderr.strip().splitlines()
        assert line == f'error: {message}' or line.startswith(f'error: {message}'), (argv, line)


@pytest.fixture(scope='module')
def cli():
    """scripts/evidence.py, loaded once (its flags can be defined once per process)."""
    return fakes.load_script('scripts/evidence.py', 'evidence_cli')


@pytest.mark.parametrize(
    ('change', 'said'),
    [
        (None, 'is the same as {}: results.json but wall time'),
        ('picks', 'differs from {}: gen_00/picks.json\n'),
        ('accuracy', 'differs from {}: results.json/balanced_accuracy\n'),
    ],
)
def test_check_compares_the_rerun_with_the_records_but_wall_time(
    tmp_path, monkeypatch, capsys, cli, change, said
):
    records = tmp_path / 'records'
    first_dir = design.check_cell().workdir(str(records))
    first = _results(0.6)
    first.args.update(workdir='a')
    fakes.write_results(first_dir, first)
    # It ran with 2 threads, as its ledger line says: so does the check run.
    root = str(tmp_path / 'runs')
    line = {
        'workdir': design.check_cell().workdir(root),
        'cell': design.check_cell().workdir(''),
        'threads': 2,
    }
    _write(os.path.join(records, timing.LEDGER), json.dumps(line) + '\n')
    _write(os.path.join(first_dir, 'args.json'), json.dumps(first.args))
    _write(os.path.join(first_dir, 'data', 'counts.json'), json.dumps({'data_dir': 'a'}))
    picks = first.generations[0].picks
    _write(os.path.join(first_dir, 'gen_00', 'picks.json'), json.dumps(picks.to_json()))

    def rerun(command):
        """The check run, in its own folder, on another machine, at another speed."""
        workdir = command[-1].partition('=')[2]
        assert '--cpu_threads=2' in command
        again = copy.deepcopy(first)
        again.args.update(workdir='b')
        again.generations[0].seconds = 1.0
        again_picks = copy.deepcopy(picks)
        if change == 'picks':
            again_picks.picked[0] += 1
        if change == 'accuracy':
            again.balanced_accuracy += 0.01
        fakes.write_results(workdir, again)
        _write(os.path.join(workdir, 'data', 'counts.json'), json.dumps({'data_dir': 'b'}))
        _write(os.path.join(workdir, 'gen_00', 'picks.json'), json.dumps(again_picks.to_json()))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(cli.subprocess, 'run', rerun)
    assert cli.check(root, str(records)) == (0 if change is None else 1)
    assert said.format(first_dir) in capsys.readouterr().out


def test_runner_runs_each_cell_once_side_by_side_and_keeps_a_ledger(tmp_path, monkeypatch, cli):
    cells = [design.Cell(s, 'fixmatch', 4800) for s in design.MAP_OTHERS]
    monkeypatch.setattr(planner, 'plan', lambda root: (cells, None))
    launched = []

    def fake_launch(root, cell, threads):
        """Writes the cell's results.json, or fails for the permutation-2 setting."""
        launched.append((cell, threads))
        path = os.path.join(cell.workdir(root), 'results.json')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        code = (
            'import sys; sys.exit(3)'
            if cell.setting.class_order == 2
            else f'{_PUT}\nput({path!r}, {_results_text()!r})\n'
        )
        return subprocess.Popen([sys.executable, '-c', code])

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    root = str(tmp_path)
    assert cli.run(root, jobs=2, max_minutes=0) == 1  # One cell failed.
    assert [c for c, _ in launched] == cells  # Each once, the failed one not retried.
    records = timing.ledger(root)
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


def _write(path, content='{}'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(content)


def test_runner_keeps_the_records_of_finished_cells_and_times_runs_made_by_hand(
    tmp_path, monkeypatch, cli
):
    by_hand, by_runner = (design.Cell(s, 'fixmatch', 4800) for s in design.MAP_OTHERS[:2])
    monkeypatch.setattr(planner, 'plan', lambda root: ([by_hand, by_runner], None))
    root, records = str(tmp_path / 'runs'), str(tmp_path / 'records')
    # A run finished by hand: its small files beside a checkpoint, TFRecords, test
    # probabilities and a TensorBoard log, none of which are records.
    _finish(root, by_hand, 0.7)
    folder = by_hand.workdir(root)
    for name in ('args.json', 'data/counts.json', 'gen_00/evals.json', 'gen_00/picks.json'):
        _write(os.path.join(folder, name), json.dumps({'name': name}))
    for name in ('data/test.tfrecord', 'gen_00/labeled.tfrecord', 'gen_00/test_probs.npy'):
        _write(os.path.join(folder, name), 'bytes')
    _write(os.path.join(folder, 'gen_00', 'ckpt', 'checkpoint'), 'x')
    _write(os.path.join(folder, 'gen_00', 'tb', 'events'), 'x')

    def fake_launch(root, cell, threads):
        return _writes_results(root, cell)

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    assert cli.run(root, jobs=2, max_minutes=0, records=records) == 0
    kept = sorted(
        os.path.relpath(os.path.join(d, f), records)
        for d, _, files in os.walk(records)
        for f in files
    )
    hand = os.path.relpath(by_hand.workdir(records), records)
    runner = os.path.relpath(by_runner.workdir(records), records)
    assert kept == sorted(
        [
            timing.LEDGER,
            *(
                os.path.join(hand, n)
                for n in (
                    'args.json',
                    'results.json',
                    'data/counts.json',
                    'gen_00/evals.json',
                    'gen_00/picks.json',
                )
            ),
            os.path.join(runner, 'results.json'),
        ]
    )
    with open(os.path.join(hand, 'gen_00/picks.json').join([records + os.sep, ''])) as f:
        assert json.load(f) == {'name': 'gen_00/picks.json'}
    # The run made by hand is timed by its results.json (one generation of 60 s).
    lines = {r['workdir']: r for r in timing.ledger(records)}
    assert lines[by_hand.workdir(root)]['seconds'] == 60
    assert (
        lines[by_hand.workdir(root)]['by_hand'] and 'by_hand' not in lines[by_runner.workdir(root)]
    )
    assert timing.ledger(records) == timing.ledger(root)
    # Adopted once only.
    assert cli.adopt(root, [by_hand, by_runner], {}) == []


def test_a_run_of_the_runner_that_has_written_its_results_is_not_taken_as_by_hand(
    tmp_path, monkeypatch, cli
):
    cells = [design.Cell(s, 'fixmatch', 4800) for s in design.MAP_OTHERS[:2]]
    monkeypatch.setattr(planner, 'plan', lambda root: (cells, None))

    def fake_launch(root, cell, threads):
        """Writes results.json, then takes a while to exit (as TensorFlow does)."""
        return _writes_results(root, cell, after=1)

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    assert cli.run(str(tmp_path), jobs=2, max_minutes=0) == 0
    records = timing.ledger(str(tmp_path))
    assert len(records) == 2 and not any(r.get('by_hand') for r in records)


# A runner in its own process whose one cell runs `sleep` (pid written to argv[2]).
_KILLED_RUNNER = """
import os, subprocess, sys
from tests import fakes
from study.evidence import design, planner
cli = fakes.load_script('scripts/evidence.py', 'cli')
cell = design.Cell(design.BASE, 'fixmatch', 4800)
planner.plan = lambda root: ([cell], None)
def launch(root, cell, threads):
    process = cli.spawn(['sleep', '60'])
    open(sys.argv[2], 'w').write(str(process.pid))
    return process
cli.launch = launch
cli.POLL_SECONDS = 0.05
cli.run(sys.argv[1], jobs=1, max_minutes=0)
"""


def _hold(pid: int) -> None:
    """Stops process PID (SIGSTOP) and waits until it is stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.time() + 10
    while machine.process_state(pid)[0] != 'T':
        assert time.time() < deadline, f'process {pid} did not stop'
        time.sleep(0.01)


def _ends_within(pid: int, seconds: float) -> bool:
    """Whether process PID is gone (or a zombie no one reaps) within SECONDS."""
    deadline = time.time() + seconds
    while machine.process_state(pid)[0] not in ('Z', ''):
        if time.time() >= deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_runner_killed_outright_leaves_its_runs_time_to_the_next(tmp_path, cli):
    """The machine stops: no finally runs. The next runner puts the time its runs had
    had, as the killed one last saw it, in the ledger. Its runs end with it, even held."""
    pid_file = tmp_path / 'sleep.pid'
    env = {**os.environ, 'PYTHONPATH': ROOT}
    runner = subprocess.Popen(
        [sys.executable, '-c', _KILLED_RUNNER, str(tmp_path / 'root'), str(pid_file)],
        cwd=ROOT,
        env=env,
    )
    running = tmp_path / 'root' / timing.RUNNING
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if running.exists() and json.loads(running.read_text() or '[]'):
                # 2, not 1: a last look at the held run may take back up to a second.
                if json.loads(running.read_text())[0]['seconds'] >= 2:
                    break
            time.sleep(0.05)
        _hold(int(pid_file.read_text()))  # Held: a SIGTERM would wait for SIGCONT.
        runner.kill()
        runner.wait()
        # Its run ends with it (SIGKILL from the kernel), not trains on unseen.
        assert _ends_within(int(pid_file.read_text()), 10), 'the run outlived its runner'
    finally:
        if pid_file.exists() and not _ends_within(int(pid_file.read_text()), 0):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert timing.ledger(str(tmp_path / 'root')) == []  # Nothing recorded by the killed one.
    assert timing.recover(str(tmp_path / 'root')) == 1
    (line,) = timing.ledger(str(tmp_path / 'root'))
    assert line['cell'] == design.Cell(design.BASE, 'fixmatch', 4800).workdir('')
    assert line['killed'] and line['stopped'] and line['returncode'] is None
    assert line['seconds'] >= 1 and line['steps'] == 4800
    assert not running.exists() and timing.recover(str(tmp_path / 'root')) == 0
    # A file that is not such a list stays, and the runner says so in one line.
    running.write_text('{}')
    proc = _evidence(
        '--action=run', f'--root={tmp_path / "root"}', f'--records={tmp_path / "records"}'
    )
    assert proc.returncode == 1 and running.exists()
    assert (
        proc.stderr.strip()
        == f'error: {running}: not a list of ledger lines; look at it, then remove it'
    )
    # The document counts it with the others, and says how it was timed.
    text = document.machine_time(str(tmp_path / 'root'))
    assert '1 stretch(es) whose runner was killed outright' in text and 'of them' not in text
    with open(tmp_path / 'root' / timing.LEDGER, 'a') as f:
        f.write(json.dumps({**line, 'reconstructed': 'from its event file'}) + '\n')
    text = document.machine_time(str(tmp_path / 'root'))
    assert '2 stretch(es) whose runner was killed outright' in text
    assert '(1 of them, lost before the runner kept such stretches, from their' in text


def test_a_runner_that_ends_leaves_nothing_running_behind(tmp_path, monkeypatch, cli):
    cells = [design.Cell(design.BASE, 'fixmatch', 4800)]
    monkeypatch.setattr(planner, 'plan', lambda root: (cells, None))

    def fake_launch(root, cell, threads):
        return _writes_results(root, cell, before=0.3)

    saved, save_running = [], timing.save_running

    def watched(root, lines):  # What the runner left for a next one, poll by poll.
        save_running(root, lines)
        saved.append([line['cell'] for line in lines])

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    monkeypatch.setattr(timing, 'save_running', watched)
    assert cli.run(str(tmp_path), jobs=1, max_minutes=0) == 0
    assert [cells[0].workdir('')] in saved and saved[-1] == []  # Kept while it ran.
    assert not (tmp_path / timing.RUNNING).exists()
    (line,) = timing.ledger(str(tmp_path))
    assert line['returncode'] == 0 and 'killed' not in line and 'held' not in line


def test_time_a_run_is_held_stopped_is_kept_apart_from_its_training_time(
    tmp_path, monkeypatch, cli
):
    """The runs are stopped (SIGSTOP) while the machine does other work: that time is
    not the study's, and the ledger and the document say how much it was."""
    cells = [design.Cell(design.BASE, 'fixmatch', 4800)]
    monkeypatch.setattr(planner, 'plan', lambda root: (cells, None))
    timers, sent = [], {}

    def send(pid, sig):  # When it was sent: a loaded machine may fire a timer late.
        os.kill(pid, sig)
        sent[sig] = time.monotonic()

    def fake_launch(root, cell, threads):  # Runs 3 s of wall time, about 2 of them stopped.
        process = _writes_results(root, cell, before=3)
        for delay, sig in [(0.5, signal.SIGSTOP), (2.5, signal.SIGCONT)]:
            timers.append(threading.Timer(delay, send, (process.pid, sig)))
            timers[-1].start()
        return process

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    began = time.monotonic()
    try:
        assert cli.run(str(tmp_path), jobs=1, max_minutes=0) == 0
    finally:
        for timer in timers:
            timer.join()
    wall = time.monotonic() - began
    (line,) = timing.ledger(str(tmp_path))
    stopped = sent[signal.SIGCONT] - sent[signal.SIGSTOP]  # 2 s on an idle machine.
    # Within a poll of the truth at each end (longer than 0.05 s on a loaded machine),
    # then rounded to whole seconds; the rest of the run's wall time is its own (both
    # rounded, and the runner's own start and end: within 1.5 s; held time counted in
    # `seconds` too would be 2 s over).
    assert abs(line['held'] - stopped) < 1 and line['held'] >= 1, (line, stopped)
    assert abs(line['seconds'] + line['held'] - wall) < 1.5, (line, wall)
    text = document.machine_time(str(tmp_path))
    assert '1 stretch(es) were held (stopped while the machine did other work) for 0.0' in text
    assert 'in all, not counted in the run-hours above.' in text and 'of them' not in text
    with open(tmp_path / timing.LEDGER, 'a') as f:  # One corrected by hand, as it says.
        f.write(json.dumps({**line, 'held': 2700, 'held_from': 'noted when made'}) + '\n')
    text = document.machine_time(str(tmp_path))
    assert 'held (stopped while the machine did other work) for 0.8 run-hours in all' in text
    assert '(1 of them held before the runner timed holds: from the holds noted' in text


def test_a_look_at_a_run_long_overdue_is_held_time_unless_the_run_trained_meanwhile():
    """The runner stopped with its runs (Ctrl-Z in its terminal): held. The runner alone
    stopped: its runs trained on, and that time counts."""
    cell = design.Cell(design.BASE, 'fixmatch', 4800)
    me = types.SimpleNamespace(pid=os.getpid())
    gap = 2 * timing.HELD_GAP
    with_it = timing.Run(cell, me, resumed=False, steps=4800, cpu=machine.process_state(me.pid)[1])
    with_it.began -= gap
    with_it.seen -= gap
    with_it.watch()
    assert with_it.held >= gap and 0 <= with_it.minutes() < 0.1
    alone = timing.Run(
        cell, me, resumed=False, steps=4800, cpu=machine.process_state(me.pid)[1] - gap
    )
    alone.began -= gap
    alone.seen -= gap
    alone.watch()
    assert alone.held == 0 and alone.minutes() >= gap / 60
    on_time = timing.Run(cell, me, resumed=False, steps=4800)
    on_time.watch()
    assert on_time.held == 0


def test_process_state_reads_stopped_and_gone():
    sleeper = subprocess.Popen(['sleep', '30'])
    try:
        assert machine.process_state(sleeper.pid)[0] not in ('T', '')
        _hold(sleeper.pid)
        assert machine.process_state(sleeper.pid)[0] == 'T'
    finally:
        sleeper.kill()
        sleeper.wait()
    assert machine.process_state(sleeper.pid) == ('', 0.0)
    assert machine.process_state(os.getpid())[1] > 0  # This process has used some CPU.


def test_runner_limited_to_settings_drops_the_others_but_never_the_base(tmp_path, monkeypatch, cli):
    base, (other, dropped) = design.BASE, design.MAP_OTHERS[:2]
    cells = [
        design.check_cell(),
        design.Cell(dropped, 'fixmatch', 4800),
        design.Cell(other, 'fixmatch', 4800),
        design.Cell(base, 'fixmatch_crest_plus', 9600),
        design.Cell(base, 'fixmatch_da05', 9600, stage='extra'),  # After the map: dropped.
    ]
    monkeypatch.setattr(planner, 'plan', lambda root: (cells, None))
    launched = []

    def fake_launch(root, cell, threads):
        launched.append(cell)
        return _writes_results(root, cell)

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    assert cli.run(str(tmp_path), jobs=1, max_minutes=0, settings=[other.name]) == 0
    assert launched == [cells[0], cells[2], cells[3]]
    assert cli.run(str(tmp_path), jobs=1, max_minutes=0) == 0  # Unlimited: all of them.
    assert launched == [cells[0], cells[2], cells[3], cells[1], cells[4]]


def test_list_shows_how_far_a_started_cell_has_come(tmp_path, monkeypatch, cli, capsys):
    cells = [design.check_cell(), design.Cell(design.BASE, 'fixmatch', 4800)]
    monkeypatch.setattr(planner, 'plan', lambda root: (cells, None))
    ckpt = os.path.join(cells[1].workdir(str(tmp_path)), 'gen_00', 'ckpt')
    os.makedirs(ckpt)
    with open(os.path.join(ckpt, 'checkpoint'), 'w') as f:
        f.write('model_checkpoint_path: "ckpt-1280"\nall_model_checkpoint_paths: "ckpt-1280"\n')
    cli.list_cells(str(tmp_path), [])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'to do      check     {cells[0].workdir(str(tmp_path))}'
    assert lines[1] == f'started    base      {cells[1].workdir(str(tmp_path))}  1,280/4,800 steps'
    assert lines[2].startswith('5,920 steps left in the cells listed')


def test_an_unknown_setting_is_refused_in_one_line(tmp_path):
    proc = _evidence(
        '--action=list',
        f'--root={tmp_path}',
        f'--records={tmp_path / "records"}',
        '--settings=g100_b10_o0,g300_b10_o0',
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        'error: --settings: unknown g300_b10_o0; known: '
        + ', '.join(s.name for s in planner.map_settings(str(tmp_path)))
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


# argv: a run folder, the method, its results.json. A fake run: after a moment, its
# generation 0 (a marker of who trained it) and results.json.
_FAKE_RUN = (
    _PUT
    + """
import json, sys, time
time.sleep(0.3)
os.makedirs(sys.argv[1] + '/gen_00', exist_ok=True)
put(sys.argv[1] + '/gen_00/metrics.json', json.dumps({'trained_by': sys.argv[2]}))
put(sys.argv[1] + '/results.json', sys.argv[3])
"""
)


def test_runner_waits_for_generation0_then_copies_it(tmp_path, monkeypatch, cli):
    base = design.BASE
    fixmatch = design.Cell(base, 'fixmatch', 4800)
    crest = design.Cell(base, 'fixmatch_crest', 9600)
    cells = [fixmatch, crest]
    root = str(tmp_path)
    # CReST's generation 0 is FixMatch's run; CReST+'s (alignment on) and alpha = 0's
    # (other picks) are their own, as is CReST's when no FixMatch run is planned.
    assert generation0.source(crest, cells) == fixmatch
    for method in ('fixmatch_crest_plus', 'alpha0'):
        assert generation0.source(design.Cell(base, method, 9600), cells) is None
    assert progress.steps_to_train(root, crest, cells) == 4800
    assert progress.steps_to_train(root, crest, [crest]) == 9600
    monkeypatch.setattr(planner, 'plan', lambda root: (cells, None))
    launched = []

    def fake_launch(root, cell, threads):
        gen0 = os.path.join(cell.workdir(root), 'gen_00', 'metrics.json')
        copied = None
        if os.path.exists(gen0):
            with open(gen0) as f:
                copied = json.load(f)
        launched.append((cell, copied, progress.results(root, fixmatch) is not None))
        os.makedirs(cell.workdir(root), exist_ok=True)
        with open(os.path.join(cell.workdir(root), 'args.json'), 'w') as f:
            json.dump(_fake_args(cell), f)
        return subprocess.Popen(
            [sys.executable, '-c', _FAKE_RUN, cell.workdir(root), cell.method, _results_text()]
        )

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    assert cli.run(root, jobs=2, max_minutes=0) == 0
    # A free slot did not start CReST beside FixMatch: it waited for FixMatch's run to
    # finish, then started from its generation 0.
    assert [(c, copied, after) for c, copied, after in launched] == [
        (fixmatch, None, False),
        (crest, {'trained_by': 'fixmatch'}, True),
    ]
    with open(os.path.join(crest.workdir(root), generation0.COPIED)) as f:
        assert json.load(f) == {'copied_from': fixmatch.workdir(root)}
    steps = {r['workdir']: r['steps'] for r in timing.ledger(root)}
    assert steps[crest.workdir(root)] == 4800  # Generation 1 only.
    assert progress.steps_to_train(root, crest, cells) == 4800  # Started, from a copy.
    # Generation 0 of another setting's run is refused, the flag named.
    other = design.Cell(design.MAP_OTHERS[2], 'fixmatch_crest', 9600)
    with pytest.raises(ValueError, match='--class_order=2 .the run has 0.'):
        generation0.copy(root, fixmatch, other)


def _plan_fake_runs(monkeypatch, cli, cells):
    """Makes the runner plan `cells` and start each as a fake run (`_FAKE_RUN`); returns
    the list it fills with (cell, whether its folder existed when started)."""
    monkeypatch.setattr(planner, 'plan', lambda root: (cells, None))
    launched = []

    def fake_launch(root, cell, threads):
        launched.append((cell, os.path.exists(cell.workdir(root))))
        os.makedirs(cell.workdir(root), exist_ok=True)
        return subprocess.Popen(
            [sys.executable, '-c', _FAKE_RUN, cell.workdir(root), cell.method, _results_text()]
        )

    monkeypatch.setattr(cli, 'launch', fake_launch)
    monkeypatch.setattr(cli, 'POLL_SECONDS', 0.05)
    return launched


def test_runner_trains_generation0_itself_when_the_source_was_trained_otherwise(
    tmp_path, monkeypatch, cli
):
    fixmatch = design.Cell(design.BASE, 'fixmatch', 4800)
    crest = design.Cell(design.BASE, 'fixmatch_crest', 9600)
    root = str(tmp_path)
    _finish(tmp_path, fixmatch, 0.78)
    with open(os.path.join(fixmatch.workdir(root), 'args.json'), 'w') as f:
        json.dump({**_fake_args(fixmatch), 'seed': 2}, f)
    launched = _plan_fake_runs(monkeypatch, cli, [fixmatch, crest])
    assert cli.run(root, jobs=1, max_minutes=0) == 0
    assert launched == [(crest, False)]  # Nothing copied into its folder.
    trained = [r['steps'] for r in timing.ledger(root) if not r.get('by_hand')]
    assert trained == [9600]


def test_a_new_machine_rebuilds_the_finished_cells_from_the_records(tmp_path, monkeypatch, cli):
    """runs/ is gone (a new machine): the runner trains none of the cells the records
    hold again, keeps their ledger lines, and trains CReST's generation 0 itself, since
    a rebuilt FixMatch S folder holds no model."""
    fixmatch = design.Cell(design.BASE, 'fixmatch', 4800)
    fixmatch_2s = design.Cell(design.BASE, 'fixmatch', 9600)
    crest = design.Cell(design.BASE, 'fixmatch_crest', 9600)
    cells = [fixmatch, fixmatch_2s, crest]
    old, root, records = (str(tmp_path / n) for n in ('old', 'runs', 'records'))
    for cell in cells[:2]:  # Finished on the old machine, records kept.
        _finish(old, cell, 0.7)
        _write(os.path.join(cell.workdir(old), 'gen_00', 'ckpt', 'checkpoint'), 'x')
        _ledger(old, cell, 600)
        store.save_records(old, records, cell)
    store.save_ledger(old, records)
    # This machine's root has one run of its own, unfinished, and a ledger line.
    other = design.Cell(design.MAP_OTHERS[0], 'fixmatch', 4800)
    _write(os.path.join(other.workdir(root), 'args.json'), '{}')
    _ledger(root, other, 60, returncode=None, stopped=True)

    assert cli.restore(root, records) is None
    assert progress.accuracy(root, fixmatch) == pytest.approx(0.7)
    assert progress.results(root, other) is None  # Its own folder, left as it was.
    assert not os.path.exists(os.path.join(fixmatch.workdir(root), 'gen_00', 'ckpt'))
    assert [r['cell'] for r in timing.ledger(root)] == [c.workdir('') for c in cells[:2]] + [
        other.workdir('')
    ]
    assert store.restore(records, root) == ([], 0)  # Once only.
    assert progress.steps_to_train(root, crest, cells) == 9600
    with pytest.raises(ValueError, match='rebuilt from its records and holds no model'):
        generation0.copy(root, fixmatch, crest)

    launched = _plan_fake_runs(monkeypatch, cli, cells)
    assert cli.run(root, jobs=2, max_minutes=0, records=records) == 0
    assert launched == [(crest, False)]  # Nothing copied into its folder.
    lines = timing.ledger(records)
    assert [(r['cell'], r['steps']) for r in lines] == [
        (fixmatch.workdir(''), 4800),
        (fixmatch_2s.workdir(''), 9600),
        (other.workdir(''), 4800),
        (crest.workdir(''), 9600),
    ]
    assert not any(r.get('by_hand') for r in lines)


def test_list_on_a_new_machine_shows_the_committed_cells_done(tmp_path):
    """The committed records, listed from an empty runs folder: every cell they hold is
    done, and the settings they decided (the hard tail) are known."""
    records = os.path.join(ROOT, 'docs', 'evidence', 'runs')
    finished = {
        os.path.relpath(d, records) for d, _, files in os.walk(records) if 'results.json' in files
    }
    assert finished  # The committed study has finished cells.
    root = str(tmp_path / 'runs')
    proc = _evidence('--action=list', f'--root={root}', f'--records={records}')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f'evidence: {len(finished)} finished cell(s) and ')
    done = {os.path.relpath(line.split()[-1], root) for line in lines if line.startswith('done ')}
    assert done == finished
    assert timing.ledger(root) == timing.ledger(records)
    assert planner.hard_tail(root) == planner.hard_tail(records) is not None


@pytest.mark.parametrize('jobs', [1, 2])
def test_runner_leaves_a_run_busy_elsewhere_to_it_within_its_jobs(tmp_path, monkeypatch, cli, jobs):
    first, busy = (design.Cell(s, 'fixmatch', 4800) for s in design.MAP_OTHERS[:2])
    monkeypatch.setattr(planner, 'plan', lambda root: ([first, busy], None))
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
        return subprocess.Popen(
            [sys.executable, '-c', _FAKE_RUN, cell.workdir(root), cell.method, _results_text()]
        )

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
    assert timing.hours(str(tmp_path), [1000]) is None
    records = [
        {'steps': 3600, 'seconds': 1800, 'returncode': 0, 'jobs': 2},  # 2 steps/s per run.
        {'steps': 3600, 'seconds': 100, 'returncode': 0, 'jobs': 2, 'resumed': True},
        {'steps': 3600, 'seconds': 10, 'returncode': 1, 'jobs': 2},
    ]
    with open(tmp_path / timing.LEDGER, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)
    # Two runs side by side: 4 x 3,600 steps in 2 hours; one alone no faster than itself.
    assert timing.hours(str(tmp_path), [3600] * 4) == (pytest.approx(1.0), 2)
    assert timing.hours(str(tmp_path), [7200])[0] == pytest.approx(1.0)


def test_killing_the_runner_stops_its_runs(tmp_path):
    """In a process of its own: the runner, as `--action=run` sets it up, two fake runs.
    One is held (SIGSTOP); then the runner and the other are stopped too (Ctrl-Z), and the
    runner gets SIGTERM and SIGCONT (`kill %1`). Both runs must end with it, their time
    stopped kept apart."""
    source = f"""
import os, signal, subprocess, sys
sys.path.insert(0, {ROOT!r})
from study.evidence import design, planner, timing
from tests import fakes
cli = fakes.load_script('scripts/evidence.py', 'cli')
cells = [design.Cell(s, 'fixmatch', 4800) for s in design.MAP_OTHERS[:2]]
planner.plan = lambda root: (cells, None)
def launch(root, cell, threads):
    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    with open(os.path.join(root, 'pids'), 'a') as f:
        f.write(str(p.pid) + chr(10))
    return p
cli.launch = launch
cli.POLL_SECONDS = 0.05
timing.HELD_GAP = 0.5
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
cli.run({str(tmp_path)!r}, 2, 0)
"""
    runner = subprocess.Popen([sys.executable, '-c', source])
    pids = tmp_path / 'pids'
    running = tmp_path / timing.RUNNING  # Saved once both runs are the runner's to end.
    deadline = time.time() + 60
    while (
        time.time() < deadline
        and len(json.loads(running.read_text() or '[]') if running.exists() else []) < 2
    ):
        time.sleep(0.1)
    first, second = map(int, pids.read_text().split())
    _hold(first)
    _hold(runner.pid)
    _hold(second)
    time.sleep(2.5)
    try:
        runner.send_signal(signal.SIGTERM)
        # The stopped run first: once the runner goes on it ends its runs, and a pid
        # continued after that may already be gone.
        for pid in (second, runner.pid):
            os.kill(pid, signal.SIGCONT)
        assert runner.wait(timeout=60) == 143
    except BaseException:  # The held run would keep the runner waiting.
        for pid in [runner.pid, *map(int, pids.read_text().split())]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise
    for pid in map(int, pids.read_text().split()):
        with pytest.raises(ProcessLookupError):  # Ended and reaped by the runner.
            os.kill(pid, 0)
    # Their time is in the ledger: the machine worked for it.
    records = timing.ledger(str(tmp_path))
    assert len(records) == 2 and all(r['stopped'] and r['returncode'] for r in records)
    assert all(r['held'] >= 2 for r in records), records
    assert not (tmp_path / 'running.json').exists()  # Recorded: nothing left to recover.


# argv: a temporary folder. Tiny runs: FixMatch for 6 steps, FixMatch + CReST for 2 x 6,
# and CReST again from a copy of FixMatch's generation 0; then a second run of a folder
# in use.
_COPY_SCRIPT = """
import json, sys
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
from crest import config as config_lib, loop, presets
from libml import datasets, locks
from study.evidence import generation0
from tests import fakes

tmp = sys.argv[1]
datasets.DATASETS['tiny'] = fakes.tiny_fashion_mnist(tmp + '/src', 30, 3, 24)

def cfg(method, total, name):
    return config_lib.Config(
        workdir=tmp + '/' + name, dataset='tiny', data_dir=tmp + '/src', imbalance=8,
        label_fraction=0.3, arch='cnn_small', eval_every=2, batch_size=8, uratio=2,
        ema_warmup=True, seed=3, **presets.settings(method, total, generations=2))

quiet = lambda _: None
loop.run(cfg('fixmatch', 6, 'fixmatch'), log=quiet)
loop.run(cfg('fixmatch_crest', 12, 'crest'), log=quiet)
generation0.copy_files(tmp + '/fixmatch', tmp + '/copied')
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
        generation0.copy_files(str(tmp_path / 'fixmatch'), str(tmp_path / 'crest'))
    # A second run of a folder in use stops at once, in one line.
    assert found['busy'].startswith(f'--workdir {tmp_path}/crest: another run is using')
