r"""Summarizes a tree of runs into Markdown tables and PNG plots (paper Tables 1/5, Figs.
1d/2/4).

  python scripts/summarize.py --runs=runs/bench --output=docs/results

reads RUNS/<method>/fold_<f>/results.json (the layout scripts/run_folds.sh writes) and
writes OUTPUT/summary.md and OUTPUT/*.png: balanced accuracy mean +- std over folds per
method, per-class test and unlabeled-set recall per method, FixMatch's per-class
precision and recall, the per-class precision of the picks in each generation, the
balanced accuracy by generation, and a check of the paper's four claims. With
--notes=FILE, FILE (Markdown) is copied above the generated part, and --document=PATH
writes the whole to PATH too. With --rerun=FOLDER, runs in FOLDER that repeat a cell
of RUNS (same method and fold) are compared with it, against the method's fold-to-fold
spread. Unfinished runs (no results.json) are listed and left out. Takes a few seconds.
"""

import glob
import json
import os
import re
import sys

import numpy as np
from absl import app, flags

flags.DEFINE_string('runs', 'runs/bench', 'Folder of <method>/fold_<f>/results.json.')
flags.DEFINE_string('output', 'docs/results', 'Folder for summary.md and the PNG plots.')
flags.DEFINE_string('notes', None, 'Markdown file placed above the generated tables.')
flags.DEFINE_string('document', None, 'Also write notes + tables to this Markdown file.')
flags.DEFINE_string(
    'rerun', None, 'Folder of runs repeating cells of --runs (same layout), to compare.'
)
FLAGS = flags.FLAGS

# A difference smaller than this (1 point of balanced accuracy) counts as none; the
# paper's differences between methods are 2 points and more.
MIN_EFFECT = 0.01

# Display names and order of the methods scripts/run_folds.sh knows; others follow.
METHOD_NAMES = {
    'fixmatch': 'FixMatch',
    'fixmatch_da': 'FixMatch + DA (t=0.5)',
    'crest': 'CReST',
    'crest_plus': 'CReST+',
    'alpha0': 'Self-training (alpha=0)',
    'mixmatch': 'MixMatch',
    'mixmatch_crest': 'MixMatch + CReST',
    'mixmatch_crest_plus': 'MixMatch + CReST+',
}

# Claims "a beats b" on the MixMatch base; the paper's Table 2 (CIFAR-10-LT, gamma=100)
# has MixMatch 60.4, + CReST 60.5, + CReST+ 66.1.
MIXMATCH_CLAIMS = [
    ('mixmatch_crest', 'mixmatch', '5. MixMatch + CReST beats MixMatch (paper: +0.1)'),
    ('mixmatch_crest_plus', 'mixmatch', '6. MixMatch + CReST+ beats MixMatch (paper: +5.7)'),
]


def load_runs(root: str) -> tuple[dict, list[str]]:
    """{method: {fold: results}} of the finished runs, and the unfinished run folders."""
    runs, unfinished = {}, []
    for fold_dir in sorted(glob.glob(os.path.join(root, '*', 'fold_*'))):
        method = os.path.basename(os.path.dirname(fold_dir))
        match = re.fullmatch(r'fold_(\d+)', os.path.basename(fold_dir))
        path = os.path.join(fold_dir, 'results.json')
        if not match:
            continue
        if not os.path.exists(path):
            unfinished.append(fold_dir)
            continue
        with open(path) as f:
            runs.setdefault(method, {})[int(match.group(1))] = json.load(f)
    order = [m for m in METHOD_NAMES if m in runs] + sorted(set(runs) - set(METHOD_NAMES))
    return {m: runs[m] for m in order}, unfinished


def name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def fold_std(values: np.ndarray) -> np.ndarray:
    """Sample standard deviation over folds (axis 0), as in the tables."""
    return values.std(axis=0, ddof=1)


def nanmean(values) -> float:
    """Mean of the defined values; NaN when there is none."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float('nan')


def pct(mean: float, std: float | None = None) -> str:
    return f'{100 * mean:.1f}' if std is None else f'{100 * mean:.1f} ± {100 * std:.1f}'


def signed(fraction: float) -> str:
    """A difference in points with its sign; never "-0.0"."""
    return f'{round(100 * fraction, 1) + 0.0:+.1f}'


def per_class(runs: dict, key) -> np.ndarray:
    """[folds, classes] array of key(results) over the folds of one method."""
    return np.array([key(r) for r in runs.values()], np.float64)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)


def class_header(first: dict) -> tuple[list[str], list[int]]:
    names, counts = first['class_names'], first['labeled_counts']
    return [f'{n} ({c})' for n, c in zip(names, counts, strict=True)], counts


def _test_recall(r):
    return r['generations'][-1]['test']['recall']


def _test_precision(r):
    return r['generations'][-1]['test']['precision']


def _unlabeled_recall(r):
    return r['generations'][-1]['unlabeled']['recall']


def _by_generation(r):
    return [g['balanced_accuracy'] for g in r['generations']]


def claims(runs: dict, first: dict) -> tuple[str, list[str]]:
    """The paper's claims checked on these runs: a Markdown table and notes.

    A difference "holds" when it is larger than the fold-to-fold standard deviation of
    the difference (paired by fold) and than MIN_EFFECT; with fewer than 2 paired folds
    it is undecided.
    """
    counts = np.asarray(first['labeled_counts'])
    order = np.argsort(-counts, kind='stable')
    minority, majority = order[len(order) // 2 :], order[: len(order) // 2]
    names = first['class_names']
    rows, missing = [], []

    def paired(a, b, key):
        folds = sorted(set(runs[a]) & set(runs[b]))
        return np.array([np.subtract(key(runs[a][f]), key(runs[b][f])) for f in folds], np.float64)

    def verdict(diffs):
        mean = float(np.mean(diffs))
        if len(diffs) < 2:  # no spread to compare with
            return mean, 0.0, f'undecided ({len(diffs)} paired fold)'
        spread = float(np.std(diffs, ddof=1))
        return mean, spread, ('held' if mean > max(spread, MIN_EFFECT) else 'not held')

    if 'fixmatch' in runs:
        fm = runs['fixmatch']
        recall = per_class(fm, _test_recall)
        precision = per_class(fm, _test_precision)
        # Precision of a class the model never predicts is undefined, not 0.
        predicted = per_class(fm, lambda r: r['generations'][-1]['test']['predicted'])
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

    def balanced(r):
        return r['balanced_accuracy']

    if {'crest', 'fixmatch'} <= set(runs):
        mean, spread, held = verdict(paired('crest', 'fixmatch', balanced))
        gain = paired('crest', 'fixmatch', _test_recall)
        own = per_class(runs['crest'], _by_generation)
        own_gain = float((own[:, -1] - own[:, 0]).mean())
        rows.append(
            [
                '2. CReST beats FixMatch, gain on minority classes',
                f'{pct(mean, spread)} points balanced accuracy; recall gain minority half '
                f'{pct(gain[:, minority].mean())}, majority half '
                f'{pct(gain[:, majority].mean())}; last generation vs its own generation 0 '
                f'(same steps per model): {pct(own_gain)} points',
                held
                if held != 'held'
                else ('held' if gain[:, minority].mean() > gain[:, majority].mean() else 'partly'),
            ]
        )
    else:
        missing.append('2 (needs crest and fixmatch)')
    if {'crest_plus', 'crest'} <= set(runs):
        mean, spread, held = verdict(paired('crest_plus', 'crest', balanced))
        rows.append(['3. CReST+ beats CReST', f'{pct(mean, spread)} points', held])
    else:
        missing.append('3 (needs crest_plus and crest)')
    if 'alpha0' in runs:
        by_gen = per_class(runs['alpha0'], _by_generation)
        diffs = by_gen[:, -1] - by_gen[:, 0]
        mean = float(diffs.mean())
        crest_note = ''
        if 'crest' in runs:
            crest_gen = per_class(runs['crest'], _by_generation)
            crest_note = f'; CReST: {pct(float((crest_gen[:, -1] - crest_gen[:, 0]).mean()))}'
        # The claim is the absence of a gain: held unless the last generation is better
        # than the first by more than the largest fold-to-fold spread of any method.
        spread = max(
            (mean_std([r['balanced_accuracy'] for r in runs[m].values()])[1] for m in runs),
            default=0.0,
        )
        rows.append(
            [
                '4. alpha=0 gives no gain over generations',
                f'last - first generation {pct(mean)} points over {len(diffs)} fold(s) '
                f'(largest fold std of any method {pct(spread)}){crest_note}',
                'held' if mean <= spread else 'not held',
            ]
        )
    else:
        missing.append('4 (needs alpha0)')
    for a, b, title in MIXMATCH_CLAIMS:
        if {a, b} <= set(runs):
            mean, spread, held = verdict(paired(a, b, balanced))
            rows.append([title, f'{pct(mean, spread)} points', held])
        elif any(m.startswith('mixmatch') for m in runs):
            missing.append(f'{title[0]} (needs {a} and {b})')
    text = table(['claim', 'measured here', 'verdict'], rows)
    return text, missing


# Run settings that may differ between a run and its repetition.
RERUN_IGNORED = {'workdir'}


def reruns(runs: dict, again: dict, again_root: str) -> str:
    """Markdown comparing repeated runs with the same cells of the table."""
    # Imported here: it loads TensorFlow, which the rest of this script does without.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from crest.config import flat_settings

    rows = []
    for method, folds in again.items():
        for fold, repeat in folds.items():
            if fold not in runs.get(method, {}):
                continue
            original = runs[method][fold]
            # Flattened, so that runs made before algorithms had settings of their own
            # compare with newer ones.
            old, new = flat_settings(original['args']), flat_settings(repeat['args'])
            differ = sorted(
                k
                for k in set(old) | set(new)
                if k not in RERUN_IGNORED and old.get(k) != new.get(k)
            )
            _, spread = mean_std([r['balanced_accuracy'] for r in runs[method].values()])
            diff = repeat['balanced_accuracy'] - original['balanced_accuracy']
            if differ:
                verdict = f'not comparable: settings differ ({", ".join(differ)})'
            elif len(runs[method]) < 2:
                verdict = 'no fold spread to compare with'
            else:
                verdict = 'yes' if abs(diff) <= spread else 'no'
            rows.append(
                [
                    name(method),
                    str(fold),
                    pct(original['balanced_accuracy']),
                    pct(repeat['balanced_accuracy']),
                    signed(diff),
                    pct(spread),
                    verdict,
                ]
            )
    if not rows:
        return f'No run in {again_root} repeats a cell of the table.\n'
    return (
        f'Runs in `{again_root}` repeat cells of the table with the same settings; '
        'the difference should be within the fold-to-fold standard deviation of the method.\n\n'
        + table(
            ['method', 'fold', 'in the table', 're-run', 'difference', 'fold std', 'within'],
            rows,
        )
        + '\n'
    )


def markdown(runs: dict, unfinished: list[str]) -> str:
    first = next(iter(next(iter(runs.values())).values()))
    header, counts = class_header(first)
    out = []
    args = first['args']
    out.append(
        f'Data: `{args["dataset"]}`, imbalance {args["imbalance"]:g}, '
        f'{100 * args["label_fraction"]:g}% labeled; labeled images per class {counts}. '
        'Numbers are balanced test accuracy (mean per-class recall, in %), each run '
        'the mean of its last 5 evaluations, then mean ± std over folds.'
    )

    out.append('\n### Balanced accuracy by method (paper Table 1)\n')
    rows = []
    for method, folds in runs.items():
        accs = [r['balanced_accuracy'] for r in folds.values()]
        r0 = next(iter(folds.values()))['args']
        steps = r0['steps_per_generation'] * r0['generations']
        seconds = sum(g['seconds'] for r in folds.values() for g in r['generations'])
        rows.append(
            [
                name(method),
                pct(*mean_std(accs)),
                ', '.join(pct(a) for a in accs),
                ', '.join(str(f) for f in folds),
                f'{r0["generations"]} x {r0["steps_per_generation"]} = {steps}',
                f'{seconds / 60:.0f}',
            ]
        )
    out.append(
        table(
            [
                'method',
                'balanced acc.',
                'per fold',
                'folds',
                'generations x steps',
                'minutes, all folds',
            ],
            rows,
        )
    )
    total = sum(g['seconds'] for f in runs.values() for r in f.values() for g in r['generations'])
    out.append(
        f'\nMinutes are wall time per generation summed over runs, {total / 60:.0f} in all '
        '(runs side by side share the machine; a resumed generation counts from its resume).'
    )

    for title, key in [
        ('Per-class test recall (paper Table 5 / Fig. 1d)', _test_recall),
        (
            'Per-class recall on the unlabeled set, final EMA model (paper Table 5)',
            _unlabeled_recall,
        ),
    ]:
        out.append(f'\n### {title}\n\nClasses with their labeled count, largest first.\n')
        rows = [
            [name(m)] + [pct(v) for v in per_class(f, key).mean(axis=0)] for m, f in runs.items()
        ]
        out.append(table(['method', *header], rows))

    if 'fixmatch' in runs:
        out.append('\n### FixMatch: per-class test precision and recall (paper Fig. 2)\n')
        fm = runs['fixmatch']
        rows = [
            ['precision'] + [pct(*mean_std(c)) for c in per_class(fm, _test_precision).T],
            ['recall'] + [pct(*mean_std(c)) for c in per_class(fm, _test_recall).T],
        ]
        out.append(table(['', *header], rows))

    out.append('\n### Precision of the picked pseudo-labels, per class and generation\n')
    out.append('Mean over folds; "-" where nothing of that class was picked.\n')
    rows = []
    for method, folds in runs.items():
        gens = min(len(r['generations']) for r in folds.values())
        for g in range(gens - 1):  # the last generation's picks train nothing
            picks = [r['generations'][g]['picks'] for r in folds.values()]
            picked = np.array([p['picked'] for p in picks]).sum(axis=0)
            correct = np.array([p['correct'] for p in picks]).sum(axis=0)
            cells = [pct(c / n) if n else '-' for c, n in zip(correct, picked, strict=True)]
            total = pct(correct.sum() / max(picked.sum(), 1))
            rows.append([name(method), str(g), f'{picked.sum() // len(picks)}', total, *cells])
    if rows:
        out.append(table(['method', 'gen', 'picks/fold', 'all', *header], rows))

    out.append('\n### Balanced accuracy by generation (paper Figs. 4 / 5)\n')
    out.append(
        'Generation g of a run ends after (g + 1) x its steps per generation; the '
        'one-generation baselines train the whole budget in generation 0.\n'
    )
    gens = max(len(r['generations']) for f in runs.values() for r in f.values())
    rows = []
    for method, folds in runs.items():
        by_gen = [_by_generation(r) for r in folds.values()]
        cells = []
        for g in range(gens):
            values = [b[g] for b in by_gen if len(b) > g]
            cells.append(pct(*mean_std(values)) if values else '')
        rows.append([name(method), *cells])
    out.append(table(['method', *[f'gen {g}' for g in range(gens)]], rows))

    out.append('\n### Per-class test recall, last generation minus first\n')
    out.append(
        'Mean over folds, in points, for the methods with more than one generation: '
        'where the rebalanced pseudo-labels help and where they cost.\n'
    )
    rows = []
    for method, folds in runs.items():
        if min(len(r['generations']) for r in folds.values()) < 2:
            continue
        change = per_class(
            folds,
            lambda r: np.subtract(_test_recall(r), r['generations'][0]['test']['recall']),
        )
        rows.append([name(method), *(signed(v) for v in change.mean(axis=0))])
    out.append(table(['method', *header], rows) if rows else 'No multi-generation run.')

    out.append("\n### The paper's claims on these runs\n")
    claim_table, missing = claims(runs, first)
    out.append(
        'Claims 2, 3, 5 and 6: a method beats another when the mean of their difference, '
        'paired by fold, exceeds both its fold-to-fold standard deviation and 1 point '
        '(with one paired fold: undecided); claim 2 is "partly" held when the gain is not '
        "larger on the minority half of the classes. Claim 1: held when FixMatch's "
        'precision on the minority half exceeds its recall there and that recall is below '
        "the majority half's. Claim 4 (no gain): held unless the last generation beats "
        'the first by more than the largest fold-to-fold standard deviation of any method '
        '(alpha=0 may run on one fold only, leaving no spread of its own).\n'
    )
    out.append(claim_table)
    if missing:
        out.append(f'\nNot checked (runs missing): {", ".join(missing)}.')
    if unfinished:
        out.append(f'\nUnfinished runs, left out: {", ".join(unfinished)}.')
    return '\n'.join(out) + '\n'


def plots(runs: dict, output: str) -> list[str]:
    """Writes the three PNG plots; returns their file names."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    first = next(iter(next(iter(runs.values())).values()))
    header, _ = class_header(first)
    x = np.arange(len(header))
    files = []

    def class_bars(series, title, filename, ylabel, ylim, figsize):
        """Grouped per-class bars, one group per class, one bar per (label, [folds, classes])."""
        fig, ax = plt.subplots(figsize=figsize)
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series):
            ax.bar(
                x + (i - (len(series) - 1) / 2) * width,
                100 * values.mean(axis=0),
                width,
                yerr=100 * fold_std(values) if len(values) > 1 else None,
                label=label,
                capsize=2,
            )
        ax.set_xticks(x, header, rotation=30, ha='right')
        ax.set_ylabel(ylabel)
        ax.set_xlabel('class (labeled images), most frequent first')
        ax.set_ylim(0, ylim)
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(filename)
        fig.savefig(os.path.join(output, filename), dpi=110)
        plt.close(fig)

    class_bars(
        [(name(m), per_class(f, _test_recall)) for m, f in runs.items()],
        'Per-class test recall by method (mean over folds, bars: std)',
        'per_class_recall.png',
        'test recall (%)',
        100,
        (12, 4.5),
    )
    if 'fixmatch' in runs:
        fm = runs['fixmatch']
        class_bars(
            [
                ('precision', per_class(fm, _test_precision)),
                ('recall', per_class(fm, _test_recall)),
            ],
            'FixMatch: per-class test precision and recall (mean over folds, bars: std)',
            'fixmatch_precision_recall.png',
            '%',
            105,
            (10, 4.5),
        )

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, folds in runs.items():
        by_gen = per_class(folds, _by_generation)
        # Against cumulative steps: a one-generation baseline with the whole budget ends
        # where the last generation of a CReST run ends, not at generation 0.
        steps = next(iter(folds.values()))['args']['steps_per_generation']
        ends = steps * np.arange(1, by_gen.shape[1] + 1)
        ax.errorbar(
            ends,
            100 * by_gen.mean(axis=0),
            yerr=100 * fold_std(by_gen) if len(folds) > 1 else None,
            marker='o',
            capsize=3,
            label=f'{name(method)} ({len(folds)} fold(s))',
        )
    ax.set_xlabel('training steps at the end of each generation (cumulative)')
    ax.set_ylabel('balanced test accuracy (%)')
    ax.set_title('Balanced accuracy by generation (mean over folds, bars: std)')
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append('generations.png')
    fig.savefig(os.path.join(output, files[-1]), dpi=110)
    plt.close(fig)
    return files


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    runs, unfinished = load_runs(FLAGS.runs)
    if not runs:
        sys.exit(f'error: no finished run (RUNS/<method>/fold_<f>/results.json) in {FLAGS.runs}')
    os.makedirs(FLAGS.output, exist_ok=True)
    files = plots(runs, FLAGS.output)
    body = markdown(runs, unfinished)
    if FLAGS.rerun:
        again, _ = load_runs(FLAGS.rerun)
        body += '\n### Re-running cells\n\n' + reruns(runs, again, FLAGS.rerun)
    with open(os.path.join(FLAGS.output, 'summary.md'), 'w') as f:
        f.write(body)
    if FLAGS.document:
        notes = open(FLAGS.notes).read().rstrip() + '\n\n' if FLAGS.notes else ''
        rel = os.path.relpath(FLAGS.output, os.path.dirname(os.path.abspath(FLAGS.document)))
        images = '\n'.join(f'![{f}]({rel}/{f})' for f in files)
        with open(FLAGS.document, 'w') as f:
            f.write(notes + '## Results\n\n' + body + '\n### Plots\n\n' + images + '\n')
    print(body)
    print(f'wrote {FLAGS.output}/summary.md and {", ".join(files)}')


if __name__ == '__main__':
    app.run(main)
