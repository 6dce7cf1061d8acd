"""The Markdown tables of a report, in the style of the paper's Tables 1, 2 and 5."""

import numpy as np

from crest import presets
from study.report.runs import (
    balanced,
    balanced_la,
    by_generation,
    class_header,
    derived_from,
    first_run,
    mean_std,
    own_runs,
    pct,
    per_class,
    signed,
    table,
    test_precision,
    test_recall,
    title,
    unlabeled_recall,
)


def setting(runs: dict) -> str:
    first = first_run(runs)
    args = first.args
    return (
        f'Data: `{args["dataset"]}`, imbalance {args["imbalance"]:g}, '
        f'{100 * args["label_fraction"]:g}% labeled; labeled images per class '
        f'{first.labeled_counts}. Numbers are balanced test accuracy (mean per-class '
        'recall, in %), each run the mean of its last 5 evaluations, then mean ± std over '
        'folds.'
    )


def methods_table(runs: dict) -> str:
    """Balanced accuracy per method, plain and logit-adjusted, with the paper's number."""
    rows = []
    for method, folds in runs.items():
        accs = [balanced(r) for r in folds.values()]
        la = [balanced_la(r) for r in folds.values()]
        r0 = next(iter(folds.values())).args
        steps = r0['steps_per_generation'] * r0['generations']
        seconds = sum(g.seconds for r in folds.values() for g in r.generations)
        derived = derived_from(method)
        paper = presets.METHODS[method].paper if method in presets.METHODS else ''
        rows.append(
            [
                title(method),
                pct(*mean_std(accs)),
                '-' if derived else pct(*mean_std(la)),
                ', '.join(pct(a) for a in accs),
                ', '.join(str(f) for f in folds),
                f'{r0["generations"]} x {r0["steps_per_generation"]} = {steps}',
                f"{title(derived)}'s" if derived else f'{seconds / 60:.0f}',
                paper or '-',
            ]
        )
    header = [
        'method',
        'balanced acc.',
        'with LA',
        'per fold',
        'folds',
        'generations x steps',
        'minutes, all folds',
        'paper',
    ]
    own = own_runs(runs)
    total = sum(g.seconds for f in own.values() for r in f.values() for g in r.generations)
    return (
        table(header, rows)
        + '\n\n"with LA": the same models, logits adjusted after training by the log of '
        "the labeled class distribution (tau = 1); a '+ LA' row is that number of the "
        'method it adjusts. "paper": the paper\'s Table 2 (CIFAR-10-LT, imbalance 100, 10% '
        'labeled; WRN-28-2, 6 x 2^16 steps), another data set and budget. Minutes are wall '
        f'time per generation summed over runs, {total / 60:.0f} in all (runs side by side '
        'share the machine; a resumed generation counts from its resume).'
    )


def class_tables(runs: dict) -> str:
    """Per-class test recall (plain and logit-adjusted) and unlabeled-set recall."""
    header, _ = class_header(first_run(runs))
    out = []
    for heading, subset, key in [
        ('Per-class test recall (paper Table 5 / Fig. 1d)', runs, test_recall),
        (
            'Per-class test recall with logit adjustment',
            own_runs(runs),
            lambda r: r.generations[-1].test.recall_la,
        ),
        (
            'Per-class recall on the unlabeled set, final EMA model (paper Table 5)',
            own_runs(runs),
            unlabeled_recall,
        ),
    ]:
        if not subset:
            continue
        out.append(f'\n### {heading}\n\nClasses with their labeled count, largest first.\n')
        rows = [
            [title(m)] + [pct(v) for v in per_class(f, key).mean(axis=0)] for m, f in subset.items()
        ]
        out.append(table(['method', *header], rows))
    return '\n'.join(out)


def fixmatch_table(runs: dict) -> str:
    if 'fixmatch' not in runs:
        return ''
    header, _ = class_header(first_run(runs))
    fm = runs['fixmatch']
    rows = [
        ['precision'] + [pct(*mean_std(c)) for c in per_class(fm, test_precision).T],
        ['recall'] + [pct(*mean_std(c)) for c in per_class(fm, test_recall).T],
    ]
    return '\n### FixMatch: per-class test precision and recall (paper Fig. 2)\n\n' + table(
        ['', *header], rows
    )


def picks_table(runs: dict) -> str:
    header, _ = class_header(first_run(runs))
    rows = []
    for method, folds in own_runs(runs).items():
        gens = min(len(r.generations) for r in folds.values())
        for g in range(gens - 1):  # the last generation's picks train nothing
            picks = [r.generations[g].picks for r in folds.values()]
            picked = np.array([p.picked for p in picks]).sum(axis=0)
            checked = np.array([p.checked for p in picks]).sum(axis=0)
            correct = np.array([p.correct for p in picks]).sum(axis=0)
            cells = [pct(c / n) if n else '-' for c, n in zip(correct, checked, strict=True)]
            total = pct(correct.sum() / max(checked.sum(), 1))
            rows.append([title(method), str(g), f'{picked.sum() // len(picks)}', total, *cells])
    out = '\n### Precision of the picked pseudo-labels, per class and generation\n\n'
    out += 'Mean over folds; "-" where nothing of that class was picked.\n\n'
    return out + (table(['method', 'gen', 'picks/fold', 'all', *header], rows) if rows else '')


def generations_table(runs: dict) -> str:
    gens = max(len(r.generations) for f in runs.values() for r in f.values())
    rows = []
    for method, folds in runs.items():
        by_gen = [by_generation(r) for r in folds.values()]
        cells = []
        for g in range(gens):
            values = [b[g] for b in by_gen if len(b) > g]
            cells.append(pct(*mean_std(values)) if values else '')
        rows.append([title(method), *cells])
    return (
        '\n### Balanced accuracy by generation (paper Figs. 4 / 5)\n\n'
        'Generation g of a run ends after (g + 1) x its steps per generation; the '
        'one-generation baselines train the whole budget in generation 0.\n\n'
        + table(['method', *[f'gen {g}' for g in range(gens)]], rows)
    )


def recall_change_table(runs: dict) -> str:
    header, _ = class_header(first_run(runs))
    rows = []
    for method, folds in runs.items():
        if min(len(r.generations) for r in folds.values()) < 2:
            continue
        change = per_class(
            folds, lambda r: np.subtract(test_recall(r), r.generations[0].test.recall)
        )
        rows.append([title(method), *(signed(v) for v in change.mean(axis=0))])
    return (
        '\n### Per-class test recall, last generation minus first\n\n'
        'Mean over folds, in points, for the methods with more than one generation: '
        'where the rebalanced pseudo-labels help and where they cost.\n\n'
        + (table(['method', *header], rows) if rows else 'No multi-generation run.')
    )
