"""docs/RESULTS.md from the records of the evidence study (study/evidence/): the
generation length, the base setting on 3 folds with the claims under both budget rules,
the bias map with the hard tail's per-class recall, the machine time spent and what is
still to run. Every number comes from a record (a run's results.json, the ledger, or
the second edition's measurements kept in study/evidence/planner.py); ROOT is the records
folder, so that the document is the same on any clone."""

import os
import re

import numpy as np

from crest import presets
from crest.results import Results
from study.evidence import design, planner, progress, regime, timing
from study.report import claims
from study.report.runs import mean_std, pct, signed, table

MAP_PLOT = 'gain_vs_bias.png'
HARD_TAIL_PLOT = 'hard_tail_recall.png'
BUDGET_HOURS = 16  # Machine hours this edition may spend.


def machine_time(root: str) -> str:
    """What the study cost: cells, steps and hours per stage, and the machines."""
    records = timing.ledger(root)
    if not records:
        return 'No cell has run yet (the ledger is empty).\n'
    rows = []
    stages = ['check', 'base', 'precision', 'map', 'extra']
    stages += sorted({r['stage'] for r in records} - set(stages))
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
    by_hand = sum(1 for r in records if r.get('by_hand'))
    killed = sum(1 for r in records if r.get('killed'))
    # Stretches lost before the runner kept them, timed afterwards from their event files.
    rebuilt = sum(1 for r in records if r.get('reconstructed'))
    held = [r for r in records if r.get('held')]
    return (
        table(['stage', 'cells finished', 'steps trained', 'run-hours'], rows)
        + f"\n\nMachines: {'; '.join(cpus)}. Run-hours add up each run's own wall time (held "
        'time left out), '
        f'stretches stopped early or failed included: {total:.1f} in all; with {jobs} runs '
        f'side by side the machine was busy about {total / jobs:.1f} of the '
        f'{BUDGET_HOURS} hours budgeted. Steps count finished cells only, a copied '
        'generation 0 none.'
        + (
            f' {by_hand} run(s) started by hand are timed by their own results.json '
            '(training time, start-up left out).'
            if by_hand
            else ''
        )
        + (
            f' {killed} stretch(es) whose runner was killed outright (SIGKILL, or the machine'
            ' stopped) are timed until it last saw them'
            + (
                f' ({rebuilt} of them, lost before the runner kept such stretches, from their '
                "TensorBoard event file's creation to its last write)"
                if rebuilt
                else ''
            )
            + ', a lower bound.'
            if killed
            else ''
        )
        + (
            f' {len(held)} stretch(es) were held (stopped while the machine did other work) '
            f'for {sum(r["held"] for r in held) / 3600:.1f} run-hours in all, not counted in '
            'the run-hours above'
            + (
                f' ({"all" if noted == len(held) else noted} of them held before the runner '
                'timed holds: from the holds noted when made, each a gap in the '
                "run's TensorBoard evaluations)"
                if (noted := sum(1 for r in held if r.get('held_from')))
                else ''
            )
            + '.'
            if held
            else ''
        )
        + '\n'
    )


def generation_length(root: str) -> str:
    """The second edition's curve, the doubling rule's answer, the length chosen, and
    this edition's runs of the same cells."""
    curve = planner.SECOND_EDITION['curve']
    rows, previous = [], None
    for steps, acc in curve.items():
        found = progress.accuracy(root, design.Cell(design.BASE, 'fixmatch', steps))
        rows.append(
            [
                f'{steps:,}',
                pct(acc),
                '' if previous is None else signed(acc - previous),
                '' if found is None else pct(found),
            ]
        )
        previous = acc
    lengths = list(curve)
    answer = next(
        (a for a, b in zip(lengths, lengths[1:], strict=False) if curve[b] - curve[a] < 0.01),
        None,
    )
    seeds = planner.SECOND_EDITION['seeds']
    s = design.STEPS
    out = [
        'FixMatch at the base setting, fold 1, trained for each number of steps: the second '
        "edition's convergence curve (float32, AMD EPYC; its run folders were lost with its "
        "machine, its numbers are kept in `study/evidence/planner.py`), and this edition's runs of "
        'the same cells where it has them (the same flags on another machine).\n',
        table(
            ['steps', 'balanced accuracy (second edition)', 'change from half', 'this edition'],
            rows,
        ),
        f'\nThe doubling rule (stop where doubling gains less than '
        f'{100 * planner.MIN_EFFECT:.0f} point) answers {answer:,} steps. This edition '
        f'trains generations of S = {s:,} steps: there FixMatch is '
        f'{100 * (curve[max(curve)] - curve[s]):.1f} points under its plateau, but under the '
        f"paper's Table 2 rule FixMatch trains {design.GENERATIONS * s:,} steps, so the "
        'shorter generations handicap self-training, not FixMatch: a gain found here holds a '
        'fortiori. The seed-to-seed spread of the second edition (FixMatch S, fold 1, seeds '
        + ', '.join(f'{k}: {pct(v)}' for k, v in seeds.items())
        + f') has a standard deviation of {pct(planner.seed_std())} points.\n',
    ]
    return '\n'.join(out)


# --------------------------------------------------------------------------------------
# The base setting on 3 folds.

# (row, preset, total steps in generations of S) of the base table.
BASE_ROWS = (
    ('FixMatch, S', 'fixmatch', 1),
    ('FixMatch, 2S', 'fixmatch', 2),
    ('FixMatch + DA (t=0.5), 2S', 'fixmatch_da05', 2),
    ('CReST, 2 x S', 'fixmatch_crest', 2),
    ('CReST+, 2 x S', 'fixmatch_crest_plus', 2),
)
# (claim, (row, with LA), (row, with LA)) with BASE_ROWS' row names; 'FixMatch' is the
# rule's baseline: FixMatch S under the Table 1 rule, FixMatch 2S under the Table 2 rule.
COMPARISONS = (
    ('CReST beats FixMatch (claim 2)', ('CReST, 2 x S', False), ('FixMatch', False)),
    ('CReST+ beats FixMatch', ('CReST+, 2 x S', False), ('FixMatch', False)),
    ('CReST+ beats CReST (claim 3)', ('CReST+, 2 x S', False), ('CReST, 2 x S', False)),
    ('CReST+ & LA beats FixMatch + LA', ('CReST+, 2 x S', True), ('FixMatch', True)),
    ('CReST & LA beats FixMatch + LA', ('CReST, 2 x S', True), ('FixMatch', True)),
    ('FixMatch + LA beats FixMatch', ('FixMatch', True), ('FixMatch', False)),
    ('CReST+ beats FixMatch + LA', ('CReST+, 2 x S', False), ('FixMatch', True)),
)
RULES = (('Table 1', 'FixMatch, S'), ('Table 2', 'FixMatch, 2S'))


def base_runs(root: str) -> dict[str, dict[int, Results]]:
    """{row name: {fold: results}} of the finished base cells."""
    runs = {}
    for name, method, gens in BASE_ROWS:
        for fold in design.FOLDS:
            found = progress.results(
                root, design.Cell(design.BASE, method, gens * design.STEPS, fold)
            )
            if found is not None:
                runs.setdefault(name, {})[fold] = found
    return runs


def _value(result: Results, la: bool) -> float:
    return result.balanced_accuracy_la if la else result.balanced_accuracy


def base_table(runs: dict) -> str:
    """Balanced accuracy per fold, mean and std, without and with LA."""
    rows = []
    for name, *_ in BASE_ROWS:
        for la in (False, True):
            values = [
                None if f not in runs.get(name, {}) else _value(runs[name][f], la)
                for f in design.FOLDS
            ]
            done = [v for v in values if v is not None]
            rows.append(
                [
                    name + (' + LA' if la else ''),
                    *('…' if v is None else pct(v) for v in values),
                    pct(*mean_std(done)) if len(done) > 1 else '…',
                ]
            )
    header = ['run', *(f'fold {f}' for f in design.FOLDS), 'mean ± std']
    return table(header, rows)


def base_claims(runs: dict) -> str:
    """Each comparison under both rules: paired by fold, the mean of the differences
    against their fold-to-fold standard deviation and 1 point (`claims.verdict`); a
    verdict on fewer folds than planned says so."""
    rows = []
    for claim, (a, la_a), (b, la_b) in COMPARISONS:
        for rule, baseline in RULES:
            a_runs = runs.get(baseline if a == 'FixMatch' else a, {})
            b_runs = runs.get(baseline if b == 'FixMatch' else b, {})
            folds = sorted(set(a_runs) & set(b_runs))
            if not folds:
                rows.append([claim, rule, '…', '…', 'not run yet'])
                continue
            diffs = np.array(
                [_value(a_runs[f], la_a) - _value(b_runs[f], la_b) for f in folds], np.float64
            )
            mean, spread, verdict = claims.verdict(diffs)
            if 1 < len(folds) < len(design.FOLDS):
                verdict += f' so far ({len(folds)} of {len(design.FOLDS)} folds)'
            rows.append(
                [
                    claim,
                    rule,
                    ', '.join(f'{signed(d)} (fold {f})' for f, d in zip(folds, diffs, strict=True)),
                    # One fold has no spread to show.
                    f'{signed(mean)} ± {100 * spread:.1f}' if len(folds) > 1 else signed(mean),
                    verdict,
                ]
            )
    return table(['claim', 'rule', 'differences (points)', 'mean ± std', 'verdict'], rows)


def base_section(root: str) -> str:
    runs = base_runs(root)
    s = design.STEPS
    return '\n'.join(
        [
            f'{design.BASE.title}, folds {", ".join(map(str, design.FOLDS))}, float32. '
            f'S = {s:,} steps; "2 x S": {design.GENERATIONS} generations of S (CReST\'s first '
            "is a copy of FixMatch S's run); LA: post-hoc logit adjustment of the same runs by "
            'the labeled class distribution. Balanced test accuracy, mean of the last 5 of '
            f'{design.EVALS_PER_GENERATION} evaluations.\n',
            base_table(runs),
            '\nThe claims, paired by fold: held when the mean difference exceeds both its '
            'fold-to-fold standard deviation and 1 point; with one fold, undecided. Table 1 '
            f'rule: FixMatch trained S ({s:,} steps) as the baseline; Table 2 rule: FixMatch '
            f'trained 2S ({design.GENERATIONS * s:,} steps, the same budget).\n',
            base_claims(runs),
        ]
    )


# --------------------------------------------------------------------------------------
# The bias map.


def precision_paragraph(root: str) -> str:
    decided = planner.map_precision(root)
    if decided is None:
        return (
            'The precision of the map is decided by FixMatch S on base fold 1 in bf16 against '
            'float32: not both finished yet.\n'
        )
    return (
        f'Precision of the map: FixMatch S on base fold 1 scored {pct(decided["bf16"])} in '
        f'bf16 against {pct(decided["float32"])} in float32 (difference '
        f'{signed(decided["bf16"] - decided["float32"])}; allowed: two seed-to-seed standard '
        f'deviations, {pct(decided["limit"])}) and trained {decided["speedup"]:.2f}x as fast '
        "as the base folds' float32 FixMatch S runs on average (needed: "
        f'{planner.BF16_MIN_SPEEDUP}x), so the map runs in '
        f'**{decided["precision"]}**.\n'
    )


def hard_tail_section(root: str, output: str, rel: str) -> tuple[str, list[str]]:
    """Per-class test recall of FixMatch S and 2S and CReST+ at the hard tail, against
    class size: a table and a plot."""
    hard = planner.hard_tail(root)
    decided = planner.map_precision(root)
    if hard is None or decided is None:
        return 'Not decided yet.\n', []
    cells = design.setting_cells(hard, 1, 'map', decided['precision'])
    found = {
        'FixMatch, S': progress.results(root, cells['fixmatch_1gen']),
        'FixMatch, 2S': progress.results(root, cells['fixmatch']),
        'CReST+, 2 x S': progress.results(root, cells['fixmatch_crest_plus']),
    }
    found = {k: v for k, v in found.items() if v is not None}
    if not found:
        return f'{hard.title}: no run finished yet.\n', []
    first = next(iter(found.values()))
    names, counts = first.class_names, first.labeled_counts
    order = sorted(range(len(names)), key=lambda c: (-counts[c], c))
    header = ['class (labeled images)', *found]
    rows = [
        [
            f'{names[c]} ({counts[c]})',
            *(pct(r.generations[-1].test.recall[c]) for r in found.values()),
        ]
        for c in order
    ]
    plus = found.get('CReST+, 2 x S')
    picks = plus.generations[0].picks if plus else None
    if picks is not None and picks.correct is not None:
        header.append("CReST+'s pseudo-labels after generation 0: right / added")
        for row, c in zip(rows, order, strict=True):
            row.append(f'{picks.correct[c]} / {picks.checked[c]}')
    out = (
        f"{hard.title}: the classes that FixMatch S recalls worst on base fold 1's test set "
        'made the rarest. Per-class test recall, the head first (mean of the last 5 '
        'evaluations of the last generation), and the pseudo-labels CReST+ added to the '
        'labeled set for its second generation, by the class they name:\n\n'
        + table(header, rows)
        + '\n'
    )
    path = os.path.join(output, HARD_TAIL_PLOT)
    _recall_plot(found, order, path)
    return out + f'\n![per-class recall at the hard tail]({rel}/{HARD_TAIL_PLOT})\n', [path]


def _recall_plot(found: dict, order: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    first = next(iter(found.values()))
    names, counts = first.class_names, first.labeled_counts
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, result in found.items():
        recall = result.generations[-1].test.recall
        ax.plot([counts[c] for c in order], [100 * recall[c] for c in order], 'o-', label=label)
    for c in order:
        ax.annotate(names[c], (counts[c], 2), fontsize=7, rotation=90, ha='center')
    ax.set_xscale('log')
    ax.set_xlabel('labeled images of the class (log scale)')
    ax.set_ylabel('test recall (%)')
    ax.set_ylim(0, 100)
    ax.set_title('Hard tail, fold 1: per-class recall against class size')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# What is left.


def still_to_run(root: str, cells: list[design.Cell], waiting: str | None) -> str:
    """What the plan (`cells`, `waiting`: `planner.plan`'s) has not run yet, with its
    price at the ledger's speed, and the price of Table 2's other presets."""
    todo = [c for c in cells if progress.results(root, c) is None]
    lines = []
    by_stage, decided = {}, planner.map_precision(root)
    for cell in todo:
        by_stage.setdefault(cell.stage, []).append(cell)
    for stage, group in by_stage.items():
        steps = [progress.steps_to_train(root, c, cells) for c in group]
        cost = [planner.float32_steps(c, n, decided) for c, n in zip(group, steps, strict=True)]
        lines.append(
            f'- {stage}: {len(group)} cell(s), {sum(steps):,} steps to train'
            + _hours(root, cost, bf16=any(c.precision == 'bf16' for c in group))
        )
    if waiting:
        lines.append(f'- then more (the map and the extras), waiting for {waiting}')
    if not lines:
        lines.append('- every planned cell has finished')
    others = [
        design.Cell(design.BASE, m, design.GENERATIONS * design.STEPS, f, 'table2')
        for m in design.TABLE2_OTHERS
        for f in design.FOLDS
    ]
    steps = [c.total_steps for c in others]
    lines.append(
        "- not in this edition: Table 2's other presets at the base setting, 3 folds "
        f'({", ".join(presets.METHODS[m].title for m in design.TABLE2_OTHERS)}): '
        f'{len(others)} cells, {_price(root, steps)}'
    )
    return '\n'.join(lines) + '\n'


def _hours(root: str, steps: list[int], bf16: bool = False) -> str:
    """', about N machine hours ...' for runs of these float32 steps; '' before the ledger
    has a speed."""
    estimate = timing.hours(root, steps)
    if estimate is None:
        return ''
    said = f', about {estimate[0]:.1f} machine hours with {estimate[1]} runs side by side'
    return said + (' (bf16 at its measured speed-up)' if bf16 else '')


def _price(root: str, steps: list[int]) -> str:
    return f'{sum(steps):,} steps to train' + _hours(root, steps)


def write(root: str, output: str, path: str, notes: str, map_path: str) -> list[str]:
    """Writes `path` (notes + generated sections), its plots into `output` and the regime
    map to `map_path`, from the records in ROOT alone."""
    os.makedirs(output, exist_ok=True)
    rel = os.path.relpath(output, os.path.dirname(os.path.abspath(path)))
    written = [path]
    out = [notes.rstrip(), '\n## Machine and time\n', machine_time(root)]
    out += ['\n## 1. Generation length\n', generation_length(root)]
    out += ['\n## 2. The base setting on 3 folds\n', base_section(root)]
    out.append('\n## 3. The bias map\n')
    out.append(precision_paragraph(root))
    entries = regime.map_entries(root)
    regime.write_map(map_path, entries)
    written.append(map_path)
    out.append(
        "\nFold 1 of each setting. FixMatch's bias: the mean precision minus the mean recall "
        'of the minority half of the classes on the unlabeled set, after S steps (paper '
        f'Fig. 2). Gains in points of balanced accuracy; Table 1 rule: '
        f'{design.GENERATIONS} generations against FixMatch S; Table 2 rule: against '
        'FixMatch 2S. "…": not run yet.\n'
    )
    out.append(regime.map_markdown(entries))
    if regime.map_plot(entries, os.path.join(output, MAP_PLOT)):
        out.append(f'\n![gain vs bias]({rel}/{MAP_PLOT})\n')
        written.append(os.path.join(output, MAP_PLOT))
    out.append('\n### The hard tail, class by class\n')
    body, files = hard_tail_section(root, output, rel)
    out.append(body)
    written += files
    out.append('\n## Still to run\n')
    cells, waiting = planner.plan(root)
    out.append(still_to_run(root, cells, waiting))
    with open(path, 'w') as f:
        f.write(re.sub(r'\n{3,}', '\n\n', '\n'.join(out)).rstrip() + '\n')
    return written
