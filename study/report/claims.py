"""The paper's claims checked on a tree of runs.

The four claims of its analysis (FixMatch's minority classes are precise but rarely
found; CReST beats FixMatch, most on the minority classes; CReST+ beats CReST; keeping
every pseudo-label, alpha = 0, gains nothing), and the pairwise orderings of its Table 2.

The rule, for "a beats b": the mean of the difference a - b, paired by fold, must exceed
both its fold-to-fold standard deviation and MIN_EFFECT; with a single paired fold the
question is undecided. "a and b are level" holds when neither beats the other.
"""

import numpy as np

from crest import presets
from study.report.runs import (
    balanced,
    by_generation,
    first_run,
    mean_std,
    nanmean,
    pct,
    per_class,
    signed,
    table,
    test_precision,
    test_predicted,
    test_recall,
    title,
)

# A difference smaller than this (1 point of balanced accuracy) counts as none; the
# paper's differences between methods are 2 points and more.
MIN_EFFECT = 0.01

# The paper's Table 2 (CIFAR-10-LT, imbalance 100, 10% labeled, equal budgets) as
# orderings: (a, b, '>') "a beats b", (a, b, '=') "a and b are level" (within a point).
# The same orderings hold at imbalance 50 and 200, except DA (t=1) against FixMatch at
# 50 (level). Supervised against MixMatch is Table 3 (DARP split).
ORDERINGS = [
    ('fixmatch_crest_plus_la', 'fixmatch_crest_plus', '>'),
    ('fixmatch_crest_plus', 'fixmatch_crest', '>'),
    ('fixmatch_crest_plus', 'fixmatch_da05', '>'),
    ('fixmatch_crest', 'fixmatch', '>'),
    ('fixmatch_da05', 'fixmatch_da1', '>'),
    ('fixmatch_da1', 'fixmatch', '>'),
    ('fixmatch_la', 'fixmatch', '>'),
    ('fixmatch_rs', 'fixmatch', '>'),
    ('fixmatch_cb', 'fixmatch', '='),
    ('fixmatch', 'mixmatch', '>'),
    ('mixmatch_crest_plus', 'mixmatch', '>'),
    ('mixmatch_crest', 'mixmatch', '='),
    ('mixmatch', 'mean_teacher', '>'),
    ('mixmatch', 'pseudo_label', '>'),
    ('mixmatch', 'supervised', '>'),
]


def paired(runs: dict, a: str, b: str, key) -> np.ndarray:
    """key(a's run) - key(b's run) for every fold both have, [folds, ...]."""
    folds = sorted(set(runs[a]) & set(runs[b]))
    return np.array([np.subtract(key(runs[a][f]), key(runs[b][f])) for f in folds], np.float64)


def verdict(diffs: np.ndarray) -> tuple[float, float, str]:
    """(mean, spread, 'held' / 'not held' / 'undecided ...') of "a beats b"."""
    mean = float(np.mean(diffs))
    if len(diffs) < 2:  # no spread to compare with
        return mean, 0.0, f'undecided ({len(diffs)} paired fold)'
    spread = float(np.std(diffs, ddof=1))
    return mean, spread, ('held' if mean > max(spread, MIN_EFFECT) else 'not held')


def paper_claims(runs: dict) -> tuple[str, list[str]]:
    """The four claims: a Markdown table and the claims that lack runs."""
    first = first_run(runs)
    counts = np.asarray(first.labeled_counts)
    order = np.argsort(-counts, kind='stable')
    minority, majority = order[len(order) // 2 :], order[: len(order) // 2]
    names = first.class_names
    rows, missing = [], []

    if 'fixmatch' in runs:
        fm = runs['fixmatch']
        recall = per_class(fm, test_recall)
        precision = per_class(fm, test_precision)
        # Precision of a class the model never predicts is undefined, not 0.
        predicted = per_class(fm, test_predicted)
        precision[predicted == 0] = np.nan
        minority_precision = nanmean(precision[:, minority])
        minority_recall = float(recall[:, minority].mean())
        majority_recall = float(recall[:, majority].mean())
        never = [names[c] for c in minority if np.all(predicted[:, c] == 0)]
        held = minority_precision > minority_recall and minority_recall < majority_recall
        detail = ', '.join(
            f'{names[c]} {pct(nanmean(precision[:, c]))} / {pct(recall[:, c].mean())}'
            if not np.all(np.isnan(precision[:, c]))
            else f'{names[c]} never predicted'
            for c in order[::-1][:3]
        )
        rows.append(
            [
                '1. FixMatch: minority precision high, recall low',
                f'minority half: precision {pct(minority_precision)}, recall '
                f'{pct(minority_recall)} (majority half recall {pct(majority_recall)}); '
                f'smallest classes precision / recall: {detail}'
                + (f'; never predicted: {", ".join(never)}' if never else ''),
                'held' if held else 'not held',
            ]
        )
    else:
        missing.append('1 (needs fixmatch)')

    if {'fixmatch_crest', 'fixmatch'} <= set(runs):
        mean, spread, held = verdict(paired(runs, 'fixmatch_crest', 'fixmatch', balanced))
        gain = paired(runs, 'fixmatch_crest', 'fixmatch', test_recall)
        own = per_class(runs['fixmatch_crest'], by_generation)
        own_gain = float((own[:, -1] - own[:, 0]).mean())
        if held == 'held' and gain[:, minority].mean() <= gain[:, majority].mean():
            held = 'partly'
        rows.append(
            [
                '2. CReST beats FixMatch, gain on minority classes',
                f'{pct(mean, spread)} points balanced accuracy; recall gain minority half '
                f'{pct(gain[:, minority].mean())}, majority half '
                f'{pct(gain[:, majority].mean())}; last generation vs its own generation 0 '
                f'(same steps per model): {pct(own_gain)} points',
                held,
            ]
        )
    else:
        missing.append('2 (needs fixmatch_crest and fixmatch)')
    if {'fixmatch_crest_plus', 'fixmatch_crest'} <= set(runs):
        diffs = paired(runs, 'fixmatch_crest_plus', 'fixmatch_crest', balanced)
        mean, spread, held = verdict(diffs)
        rows.append(['3. CReST+ beats CReST', f'{pct(mean, spread)} points', held])
    else:
        missing.append('3 (needs fixmatch_crest_plus and fixmatch_crest)')
    if 'alpha0' in runs:
        by_gen = per_class(runs['alpha0'], by_generation)
        mean = float((by_gen[:, -1] - by_gen[:, 0]).mean())
        crest_note = ''
        if 'fixmatch_crest' in runs:
            crest_gen = per_class(runs['fixmatch_crest'], by_generation)
            crest_note = f'; CReST: {pct(float((crest_gen[:, -1] - crest_gen[:, 0]).mean()))}'
        # The claim is the absence of a gain: held unless the last generation is better
        # than the first by more than the largest fold-to-fold spread of any method.
        spread = max(
            (mean_std([balanced(r) for r in runs[m].values()])[1] for m in runs),
            default=0.0,
        )
        rows.append(
            [
                '4. alpha=0 gives no gain over generations',
                f'last - first generation {pct(mean)} points over {len(by_gen)} fold(s) '
                f'(largest fold std of any method {pct(spread)}){crest_note}',
                'held' if mean <= spread else 'not held',
            ]
        )
    else:
        missing.append('4 (needs alpha0)')
    return table(['claim', 'measured here', 'verdict'], rows), missing


def orderings(runs: dict) -> str:
    """The paper's Table 2 orderings between the methods present: a Markdown table."""
    rows = []
    for a, b, relation in ORDERINGS:
        if not {a, b} <= set(runs):
            continue
        diffs = paired(runs, a, b, balanced)
        mean, spread, held = verdict(diffs)
        if relation == '=' and not held.startswith('undecided'):
            b_beats_a = verdict(-diffs)[2] == 'held'
            held = 'not held' if held == 'held' or b_beats_a else 'held'
        paper = [presets.METHODS[m].paper.split()[0] for m in (a, b)]
        claim = f'{title(a)} {"beats" if relation == ">" else "level with"} {title(b)}'
        rows.append(
            [claim, f'{paper[0]} vs {paper[1]}', f'{signed(mean)} ± {100 * spread:.1f}', held]
        )
    if not rows:
        return 'No two methods of an ordering are present.'
    return table(['ordering (paper Table 2)', 'paper', 'measured here (points)', 'verdict'], rows)
