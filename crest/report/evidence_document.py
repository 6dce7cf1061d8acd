"""docs/RESULTS.md from the runs of the evidence study (crest/evidence.py): the
convergence curve, the regime map, Table 2 with the paper's claims under both budget
rules, finished runs the plan does not hold, re-runs of cells, and the machine time
spent. Every number comes from a run's results.json or the runner's ledger."""

import glob
import json
import os
import re

from crest import evidence, methods
from crest.report import claims, document, plots, regime
from crest.report.runs import load_runs, mean_std, pct, signed, table

MAP_FILE = 'regime_map.json'
MAP_PLOT = 'gain_vs_bias.png'


def machine_time(root: str) -> str:
    """What the study cost: cells, steps and hours per stage, and the machines."""
    records = evidence.ledger(root)
    if not records:
        return 'No cell has run under the runner yet (its ledger is empty).\n'
    rows = []
    stages = ['curve', 'spread', 'map', 'table2']
    stages += sorted({r['stage'] for r in records} - set(stages))  # E.g. runs made by hand.
    for stage in stages:
        mine = [r for r in records if r['stage'] == stage]
        if mine:
            finished = [r for r in mine if r['returncode'] == 0]
            hours = sum(r['seconds'] for r in mine) / 3600
            steps = sum(r['steps'] for r in finished)
            rows.append([stage, str(len(finished)), f'{steps:,}', f'{hours:.1f}'])
    cpus = sorted(
        {
            f'{r["cpu"]} ({r["jobs"]} runs side by side, {r["threads"]} thread(s) each)'
            for r in records
        }
    )
    total = sum(r['seconds'] for r in records) / 3600
    jobs = max(r['jobs'] for r in records)
    return (
        table(['stage', 'cells finished', 'steps trained', 'run-hours'], rows)
        + f"\n\nMachines: {'; '.join(cpus)}. Run-hours add up each run's own wall time, "
        f'stretches stopped early or failed included: {total:.1f} in all; with {jobs} runs '
        f'side by side the machine was busy about {total / jobs:.1f} hours. Steps count '
        "finished cells only, a resumed cell's all, a copied generation 0 none.\n"
    )


def spread_runs(root: str) -> list[tuple[evidence.Cell, dict | None]]:
    """FixMatch at SPREAD_STEPS with each seed (the study's own first), and its results."""
    steps = evidence.SPREAD_STEPS
    cells = [evidence.Cell(evidence.BASE, 'fixmatch', steps), *evidence.spread_cells()]
    return [(cell, evidence.results(root, cell)) for cell in cells]


def seed_std(runs: list[tuple[evidence.Cell, dict | None]]) -> float | None:
    """The standard deviation of balanced accuracy over `spread_runs`' finished seeds."""
    values = [found['balanced_accuracy'] for _, found in runs if found]
    return mean_std(values)[1] if len(values) > 1 else None


def spread(root: str) -> str:
    """How much single FixMatch runs differ with the seed alone, set against the curve's
    last measured doubling."""
    runs, rows = spread_runs(root), []
    for cell, found in runs:
        bias = None if found is None else evidence.minority_bias(found)
        rows.append(
            [
                str(cell.seed),
                'not finished' if found is None else pct(found['balanced_accuracy']),
                '' if bias is None else signed(bias['bias']),
            ]
        )
    out = [
        f'The same run ({evidence.SPREAD_STEPS:,} steps) with other seeds: other '
        "initialisation, augmentation and batch order on the same fold's images.\n",
        table(['seed', 'balanced accuracy', 'bias (unlabeled set, points)'], rows),
    ]
    std = seed_std(runs)
    if std is not None:
        finished = sum(found is not None for _, found in runs)
        said = (
            f'\nAcross {finished} seeds the standard deviation is {100 * std:.1f} points, '
            f'so the difference of two single runs, which the rule compares, has one of about '
            f'{100 * std * 2**0.5:.1f} points.'
        )
        gain = last_doubling(root)
        if gain is not None:
            said += (
                f" The curve's last measured doubling changed balanced accuracy by "
                f'{signed(gain)} points.'
            )
        out.append(said + '\n')
    return '\n'.join(out)


def last_doubling(root: str) -> float | None:
    """The change of balanced accuracy at the curve's longest finished doubling."""
    cells, _ = evidence.curve(root)
    found = [evidence.accuracy(root, c) for c in cells]
    pairs = [(a, b) for a, b in zip(found, found[1:], strict=False) if None not in (a, b)]
    return pairs[-1][1] - pairs[-1][0] if pairs else None


def with_baseline(runs: dict, baseline: dict) -> dict:
    """`runs` with FixMatch's runs replaced by `baseline` (the Table 1 rule's)."""
    swapped = {m: f for m, f in runs.items() if m not in ('fixmatch', 'fixmatch_la')}
    return {'fixmatch': baseline, **swapped}


def table2_section(root: str, setting: evidence.Setting, converged: int, output: str):
    """Markdown of Table 2 at `setting` and the plots it makes."""
    total = evidence.GENERATIONS * converged
    folder = os.path.join(root, setting.name, f'total_{total}')
    runs, unfinished = load_runs(folder)
    if not runs:
        return f'No Table 2 run at {setting.title} has finished yet.\n', []
    out = [
        f'At {setting.title} (the setting whose FixMatch is most biased), every preset at '
        f'{total:,} steps in all; self-training ones in {evidence.GENERATIONS} generations '
        f'of {converged:,}. Folder `{folder}`.\n',
        document.markdown(runs, unfinished),
    ]
    # The Table 1 rule: the same CReST(+) runs against FixMatch trained one generation.
    short = load_runs(os.path.join(root, setting.name, f'total_{converged}'))[0].get('fixmatch')
    if short:
        table1 = with_baseline(runs, short)
        claim_table, missing = claims.paper_claims(table1)
        out.append(
            f"\n### The claims under the paper's Table 1 rule\n\nThe same runs, with FixMatch "
            f'trained one generation of {converged:,} steps (folds {sorted(short)}) as the '
            f'baseline: claim 1 is then about that model and claim 2 compares '
            f'{evidence.GENERATIONS} generations with one; claims 3 and 4 do not involve '
            'FixMatch and read as under the Table 2 rule.\n'
        )
        out.append(claim_table)
        if missing:
            out.append(f'\nNot checked (runs missing): {", ".join(missing)}.')
    images_dir = os.path.join(output, 'table2')
    os.makedirs(images_dir, exist_ok=True)
    files = [os.path.join('table2', f) for f in plots.plots(runs, images_dir)]
    return '\n'.join(out) + '\n', files


def rerun_root(root: str) -> str:
    return root.rstrip('/') + '_rerun'


def rerun_command(root: str, cell: evidence.Cell) -> str:
    """The command that runs `cell` again, into the re-run folder."""
    workdir = cell.workdir(rerun_root(root))
    flags = ' '.join(cell.flags(threads=1))
    return f'.venv/bin/python scripts/crest.py {flags} --workdir={workdir}'


def _accuracy(path: str) -> float:
    with open(path) as f:
        return json.load(f)['balanced_accuracy']


def reruns(root: str) -> str:
    """Cells run again in ROOT_rerun (same layout) against their fold spread, or against
    the seed-to-seed spread for a cell run on one fold only (the curve's)."""
    again_root = rerun_root(root)
    seeds = seed_std(spread_runs(root))
    rows = []
    for path in sorted(glob.glob(os.path.join(again_root, '*', 'total_*', '*', 'fold_*'))):
        if not os.path.exists(os.path.join(path, 'results.json')):
            continue
        relative = os.path.relpath(path, again_root)
        original = os.path.join(root, relative, 'results.json')
        if not os.path.exists(original):
            continue
        repeat = _accuracy(os.path.join(path, 'results.json'))
        first = _accuracy(original)
        folds = glob.glob(os.path.join(root, os.path.dirname(relative), 'fold_*', 'results.json'))
        values = [_accuracy(p) for p in folds]
        if len(values) > 1:
            spread, said = mean_std(values)[1], 'folds'
        elif seeds is not None:
            spread, said = seeds, f'seeds, {evidence.SPREAD_STEPS:,} steps'
        else:
            spread, said = None, ''
        verdict = (
            'no spread measured'
            if spread is None
            else 'yes'
            if abs(repeat - first) <= spread
            else 'no'
        )
        rows.append(
            [
                relative,
                pct(first),
                pct(repeat),
                signed(repeat - first),
                '' if spread is None else f'{pct(spread)} ({said})',
                verdict,
            ]
        )
    if not rows:
        return f'No cell has been run again yet (in `{again_root}`).\n'
    return table(['cell', 'first run', 're-run', 'difference', 'std', 'within'], rows) + '\n'


def finished_cells(root: str) -> list[evidence.Cell]:
    """Every finished run under ROOT laid out as a cell (<setting>/total_<steps>/<preset>/
    fold_<f>) at one of the study's settings."""
    settings = {s.name: s for s in evidence.SETTINGS}
    found = []
    pattern = os.path.join(root, '*', 'total_*', '*', 'fold_*', 'results.json')
    for path in sorted(glob.glob(pattern)):
        parts = os.path.relpath(path, root).split(os.sep)
        name, total, method, fold = parts[:4]
        if name in settings and method in methods.METHODS:
            cell = evidence.Cell(
                settings[name], method, int(total[len('total_') :]), int(fold[len('fold_') :])
            )
            found.append(cell)
    return found


def runs_outside_the_plan(root: str, cells: list[evidence.Cell]) -> str:
    """Markdown table of the finished runs the plan does not (yet) hold: runs started by
    hand ahead of a decision. A self-training run is compared with FixMatch under both
    rules where those FixMatch runs exist; a FixMatch run shows its bias. `cells`: the
    plan's."""
    planned = {evidence.cells_key(c) for c in cells}
    rows = []
    for cell in finished_cells(root):
        if evidence.cells_key(cell) in planned:
            continue
        found = evidence.results(root, cell)
        acc, la = found['balanced_accuracy'], found.get('balanced_accuracy_la')
        bias, gains = '', ['', '']  # Under the Table 1 rule, the Table 2 rule.
        if cell.generations == 1:
            measured = evidence.minority_bias(found)
            bias = '' if measured is None else signed(measured['bias'])
        else:
            for i, steps in enumerate((cell.steps_per_generation, cell.total_steps)):
                fixmatch = evidence.Cell(cell.setting, 'fixmatch', steps, cell.fold)
                baseline = evidence.accuracy(root, fixmatch)
                if baseline is not None:
                    gains[i] = f'{signed(acc - baseline)} (FixMatch {steps:,}: {pct(baseline)})'
        length = (
            f'{cell.generations} x {cell.steps_per_generation:,}'
            if cell.generations > 1
            else f'{cell.total_steps:,}'
        )
        rows.append(
            [
                cell.setting.title,
                methods.METHODS[cell.method].title,
                length,
                str(cell.fold),
                pct(acc),
                '' if la is None else pct(la),
                bias,
                *gains,
            ]
        )
    if not rows:
        return ''
    header = ['setting', 'preset', 'steps', 'fold', 'balanced accuracy', '+ LA']
    header += ['bias (points)', 'gain, Table 1 rule', 'gain, Table 2 rule']
    return (
        'Finished runs that the plan does not hold at this point (started by hand ahead of '
        'a decision, at a generation length the curve has not confirmed), with the same '
        'flags as a planned cell of that length. Gains in points against FixMatch on the '
        'same fold: Table 1 rule, one generation of the same length; Table 2 rule, as many '
        'steps in all.\n\n' + table(header, rows) + '\n'
    )


def still_to_run(root: str, cells: list[evidence.Cell], waiting: str | None) -> str:
    """What the plan (`cells`, `waiting`: `evidence.plan`'s) has not run yet."""
    todo = [c for c in cells if evidence.results(root, c) is None]
    if not todo and not waiting:
        return 'Every planned cell has finished.\n'
    by_stage = {}
    for cell in todo:
        by_stage.setdefault(cell.stage, []).append(cell)
    lines = []
    for stage, group in by_stage.items():
        # A copied generation 0 is not trained again; a started run resumes.
        steps = [evidence.steps_left(root, c, cells) for c in group]
        estimate = evidence.hours(root, steps)
        lines.append(
            f'- {stage}: {len(group)} cell(s), {sum(steps):,} steps to train'
            + ('' if estimate is None else f', about {estimate[0]:.1f} hours')
            + f' ({", ".join(sorted({methods.METHODS[c.method].title for c in group}))})'
        )
    if waiting:
        lines.append(f'- then more, once {waiting} has finished')
    return '\n'.join(lines) + '\n'


def write(root: str, output: str, path: str, notes: str) -> list[str]:
    """Writes `path` (notes + generated sections) and its plots and map into `output`."""
    os.makedirs(output, exist_ok=True)
    rel = os.path.relpath(output, os.path.dirname(os.path.abspath(path)))
    out = [notes.rstrip(), '\n## Machine and time\n', machine_time(root)]
    rows, converged = regime.curve_rows(root)
    chosen = None
    out.append('\n## 1. Converged generations\n')
    out.append(
        f'FixMatch, {evidence.BASE.title}, fold 1, trained for each number of steps '
        f'(balanced accuracy on the test set, mean of the last 5 evaluations; bias as in '
        'the regime map below):\n'
    )
    header = ['steps', 'balanced accuracy', 'change from half the steps']
    header += ['bias (unlabeled set, points)', 'smallest class recall']
    out.append(table(header, rows))
    written = [path]
    if converged is None:
        cells, _ = evidence.curve(root)
        out.append(f'\nNot converged: waiting for {evidence.curve_waiting(root, cells)}.\n')
    else:
        out.append(
            f'\nDoubling {converged:,} steps gains less than '
            f'{100 * evidence.MIN_EFFECT:.0f} point of balanced accuracy: every generation '
            f'below trains {converged:,} steps.\n'
        )
    out.append('\n### Seed-to-seed spread\n')
    out.append(spread(root))
    if converged is not None:
        entries = regime.map_entries(root, converged)
        regime.write_map(os.path.join(output, MAP_FILE), entries, converged)
        written.append(os.path.join(output, MAP_FILE))
        out.append('\n## 2. The regime map\n')
        out.append(
            f"Fold 1 of each setting. FixMatch's bias: the mean precision minus the mean recall "
            f'of the minority half of the classes on the unlabeled set, after '
            f'{converged:,} steps (paper Fig. 2). Gains in points of balanced accuracy; '
            f'Table 1 rule: {evidence.GENERATIONS} generations against FixMatch '
            f'{converged:,}; Table 2 rule: against FixMatch '
            f'{evidence.GENERATIONS * converged:,}. "…": not run yet.\n'
        )
        out.append(regime.map_markdown(entries, converged))
        if regime.map_plot(entries, os.path.join(output, MAP_PLOT)):
            out.append(f'\n![gain vs bias]({rel}/{MAP_PLOT})\n')
            written.append(os.path.join(output, MAP_PLOT))
        out.append('\n## 3. Table 2 at the most biased setting\n')
        chosen = evidence.most_biased(root, converged)
        if chosen is None:
            out.append("Chosen once every setting's FixMatch run has finished.\n")
        else:
            body, files = table2_section(root, chosen, converged, output)
            out.append(body)
            out += [f'![{f}]({rel}/{f})' for f in files]
            written += [os.path.join(output, f) for f in files]
    planned, waiting = evidence.plan(root)
    outside = runs_outside_the_plan(root, planned)
    if outside:
        out.append('\n## Runs outside the plan\n')
        out.append(outside)
    out.append('\n## Re-running a cell\n')
    if converged is not None and chosen is not None:
        cell = evidence.Cell(chosen, 'fixmatch', evidence.GENERATIONS * converged, 2)
        which = 'A cell of Table 2 run again, with the same flags into another folder, e.g. '
        which += 'FixMatch on fold 2'
    else:
        cell = evidence.curve_cell(evidence.CURVE_START)
        which = 'A cell run again, with the same flags into another folder, e.g. the '
        which += "curve's shortest"
    out.append(
        f'{which}:\n\n```\n{rerun_command(root, cell)}\n```\n\nthen '
        '`scripts/evidence.py --action=report` compares every such run with the first, '
        "against the fold-to-fold standard deviation of the cell's method (for a cell run on "
        'one fold only, the seed-to-seed one):\n'
    )
    out.append(reruns(root))
    out.append('\n## Still to run\n')
    out.append(still_to_run(root, planned, waiting))
    with open(path, 'w') as f:
        f.write(re.sub(r'\n{3,}', '\n\n', '\n'.join(out)).rstrip() + '\n')
    return written
