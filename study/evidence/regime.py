"""The regime map: how biased FixMatch is at each setting, and what CReST and CReST+
gain there, under the paper's two budget rules.

Table 1 rule: G generations of S steps against FixMatch's one generation of S steps.
Table 2 rule: against FixMatch trained G x S steps, the same total budget.

The map is also written as JSON (`write_map`), which `predict` reads to tell a user, from
the bias of their own FixMatch run, whether class-rebalancing is likely to pay off.
"""

import json
import os

import numpy as np

from study.evidence import design, planner, progress
from study.report.runs import pct, signed, table

# (key in an entry, method, rule) of the gains the map reports.
GAINS = (
    ('crest_plus_t2', 'fixmatch_crest_plus', 'fixmatch'),
    ('crest_plus_t1', 'fixmatch_crest_plus', 'fixmatch_1gen'),
    ('crest_t2', 'fixmatch_crest', 'fixmatch'),
    ('crest_t1', 'fixmatch_crest', 'fixmatch_1gen'),
)


def map_entries(root: str) -> list[dict]:
    """One entry per setting of the map (fold 1): its precision, FixMatch's bias, each
    run's balanced accuracy (None while unfinished or undecided) and the gains under both
    rules."""
    decided = planner.map_precision(root)
    entries = []
    for setting in planner.map_settings(root):
        if setting == design.BASE:
            precision = 'float32'  # Its fold 1 cells are the base stage's.
        else:
            precision = None if decided is None else decided['precision']
        entry = {
            'setting': setting.name,
            'title': setting.title,
            'imbalance': setting.imbalance,
            'label_fraction': setting.label_fraction,
            'class_order': list(setting.class_order)
            if isinstance(setting.class_order, tuple)
            else setting.class_order,
            'precision': precision,
        }
        if precision is None:
            found = {role: None for role, _, _ in design.ROLES}
        else:
            cells = design.setting_cells(setting, 1, 'map', precision)
            found = {role: progress.results(root, cell) for role, cell in cells.items()}
        entry['accuracy'] = {
            role: None if r is None else r.balanced_accuracy for role, r in found.items()
        }
        entry['accuracy_la'] = {
            role: None if r is None else r.balanced_accuracy_la for role, r in found.items()
        }
        fixmatch = found['fixmatch_1gen']
        entry['fixmatch_bias'] = None if fixmatch is None else fixmatch.minority_bias()
        if fixmatch is not None:
            entry['class_names'] = fixmatch.class_names
            entry['labeled_counts'] = fixmatch.labeled_counts
        for key, method, baseline in GAINS:
            a, b = entry['accuracy'][method], entry['accuracy'][baseline]
            entry[key] = None if a is None or b is None else a - b
        entries.append(entry)
    return entries


def fit(entries: list[dict], key: str) -> dict | None:
    """Gain against bias over the settings that have both: Spearman's rank correlation,
    and the least-squares line gain = slope * bias + intercept; None below 3 settings."""
    points = [(e['fixmatch_bias']['bias'], e[key]) for e in entries if _has(e, key)]
    if len(points) < 3:
        return None
    x, y = np.array(points, np.float64).T
    ranks = [average_ranks(v) for v in (x, y)]
    rho = float(np.corrcoef(*ranks)[0, 1]) if np.std(ranks[0]) and np.std(ranks[1]) else None
    slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y)))
    return {
        'settings': len(points),
        'spearman': rho,
        'slope': float(slope),
        'intercept': float(intercept),
    }


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, tied values sharing the mean of their ranks (as Spearman's rho needs)."""
    order = np.argsort(values, kind='stable')
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def follows(result: dict | None) -> str:
    """In words: does the gain follow the bias?"""
    if result is None:
        return 'not known (fewer than 3 settings)'
    rho = result['spearman']
    if rho is None:
        n = result['settings']
        return f'undetermined (the bias or the gain is the same at all {n} settings)'
    verdict = 'yes' if rho >= 0.7 else 'no' if rho <= 0 else 'weakly'
    return (
        f'{verdict} (rank correlation {rho:+.2f} over {result["settings"]} settings; '
        f'{10 * result["slope"]:+.1f} points of gain per 10 points of bias)'
    )


def _has(entry, key):
    return entry['fixmatch_bias'] is not None and entry.get(key) is not None


def _acc(value):
    return '…' if value is None else pct(value)


def _precision(value):
    return 'never predicted' if value is None else pct(value)


def _gain(value):
    return '…' if value is None else signed(value)


def map_markdown(entries: list[dict]) -> str:
    """The map as a Markdown table, with whether the gains follow the bias."""
    g, s = design.GENERATIONS, design.STEPS
    rows = []
    for e in entries:
        bias = e['fixmatch_bias']
        acc = e['accuracy']
        rows.append(
            [
                e['title'],
                e['precision'] or 'not decided yet',
                '…'
                if bias is None
                else f'{_precision(bias["minority_precision"])} / {pct(bias["minority_recall"])}',
                '…' if bias is None else signed(bias['bias']),
                '…' if bias is None else f'{bias["smallest_class"]} {pct(bias["smallest_recall"])}',
                _acc(acc['fixmatch_1gen']),
                _acc(acc['fixmatch']),
                _acc(acc['fixmatch_crest']),
                _acc(acc['fixmatch_crest_plus']),
                f'{_gain(e["crest_plus_t1"])} / {_gain(e["crest_plus_t2"])}',
                f'{_gain(e["crest_t1"])} / {_gain(e["crest_t2"])}',
            ]
        )
    header = [
        'setting (Fashion-MNIST-LT)',
        'precision',
        'FixMatch minority half: precision / recall',
        'bias (points)',
        'smallest class recall',
        f'FixMatch {s:,}',
        f'FixMatch {g * s:,}',
        f'CReST {g} x {s:,}',
        f'CReST+ {g} x {s:,}',
        'CReST+ gain: Table 1 / Table 2 rule',
        'CReST gain: Table 1 / Table 2 rule',
    ]
    out = [table(header, rows), '']
    for key, name in (
        ('crest_plus_t2', "CReST+'s gain (Table 2 rule)"),
        ('crest_plus_t1', "CReST+'s gain (Table 1 rule)"),
        ('crest_t2', "CReST's gain (Table 2 rule)"),
    ):
        out.append(f'- Does {name} follow the bias? {follows(fit(entries, key))}.')
    return '\n'.join(out) + '\n'


def map_plot(entries: list[dict], path: str) -> bool:
    """CReST+'s gain against FixMatch's bias, one point per setting and rule; False when
    no setting has both yet."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for key, label, marker in (
        ('crest_plus_t2', 'Table 2 rule (equal budget)', 'o'),
        ('crest_plus_t1', 'Table 1 rule (G generations vs 1)', 's'),
    ):
        points = [
            (e['fixmatch_bias']['bias'], e[key], e['setting']) for e in entries if _has(e, key)
        ]
        if not points:
            continue
        drawn = True
        x, y, names = zip(*points, strict=True)
        ax.scatter(100 * np.array(x), 100 * np.array(y), marker=marker, label=label)
        for xi, yi, name in zip(x, y, names, strict=True):
            ax.annotate(
                name, (100 * xi, 100 * yi), fontsize=7, xytext=(3, 3), textcoords='offset points'
            )
    if not drawn:
        plt.close(fig)
        return False
    ax.axhline(0, color='gray', lw=0.8)
    ax.set_xlabel("FixMatch's bias: minority-half precision - recall, unlabeled set (points)")
    ax.set_ylabel('CReST+ - FixMatch, balanced accuracy (points)')
    ax.set_title("CReST+'s gain against FixMatch's bias (Fashion-MNIST-LT, fold 1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# The map as the report writes it: package data, so that crest-diagnose finds it from
# any folder, installed or in a checkout.
MAP_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'regime_map.json')
# The fields of the map's JSON.
MAP_FIELDS = ('steps_per_generation', 'generations', 'min_effect', 'settings', 'fits')


def write_map(path: str, entries: list[dict]) -> dict:
    """Writes the map as JSON (MAP_FIELDS): what `predict` reads."""
    data = {
        'steps_per_generation': design.STEPS,
        'generations': design.GENERATIONS,
        'min_effect': planner.MIN_EFFECT,
        'settings': entries,
        'fits': {key: fit(entries, key) for key, _, _ in GAINS},
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')
    return data


def predict(regime_map: dict, bias: float) -> list[str]:
    """What the map says of a FixMatch run with this bias (minority-half precision minus
    recall): lines of text, the measured settings nearest in bias first."""
    measured = [e for e in regime_map['settings'] if _has(e, 'crest_plus_t2')]
    if not measured:
        return ['The regime map holds no finished setting yet: no prediction.']
    near = sorted(measured, key=lambda e: abs(e['fixmatch_bias']['bias'] - bias))[:2]
    lines = []
    for e in near:
        lines.append(
            f'  nearest measured: {e["title"]}: bias {signed(e["fixmatch_bias"]["bias"])}, '
            f'CReST+ {signed(e["crest_plus_t2"])} points at equal budget, '
            f'{signed(e["crest_plus_t1"]) if e["crest_plus_t1"] is not None else "…"} '
            'against one generation'
            + (
                f'; CReST {signed(e["crest_t2"])} at equal budget'
                if e.get('crest_t2') is not None
                else ''
            )
        )
    line = regime_map['fits'].get('crest_plus_t2')
    low = min(e['fixmatch_bias']['bias'] for e in measured)
    high = max(e['fixmatch_bias']['bias'] for e in measured)
    if line is not None and (line['spearman'] or 0) > 0:
        expected = line['slope'] * bias + line['intercept']
        basis = (
            f'the line through {line["settings"]} settings (rank correlation '
            f'{line["spearman"]:+.2f}) gives {signed(expected)} points at equal budget'
        )
    else:
        expected = float(np.mean([e['crest_plus_t2'] for e in near]))
        basis = f'the nearest settings gained {signed(expected)} points on average at equal budget'
    outside = not low <= bias <= high
    threshold = regime_map['min_effect']
    if expected > threshold:
        verdict = 'CReST+ is likely to help'
    elif expected < -threshold:
        verdict = 'CReST+ is likely to cost accuracy against FixMatch trained as long'
    else:
        verdict = 'CReST+ is unlikely to change accuracy by more than a point'
    lines.insert(
        0,
        f'{verdict}: {basis}'
        + (
            f' (your bias {signed(bias)} lies outside the measured {signed(low)} to '
            f'{signed(high)}: an extrapolation)'
            if outside
            else ''
        )
        + '.',
    )
    with_crest = [e for e in near if e.get('crest_t2') is not None]
    if with_crest:
        plus = np.mean([e['crest_plus_t2'] for e in with_crest])
        plain = np.mean([e['crest_t2'] for e in with_crest])
        favoured = (
            't_min = 0.5 (CReST+, progressive alignment)'
            if plus > plain
            else 'CReST (no distribution alignment)'
        )
        lines.append(
            f'  The map favours {favoured} near your bias ({signed(plus)} vs {signed(plain)}); '
            'alpha = 1/3 is the only sampling power it measured for both.'
        )
    else:
        lines.append(
            '  Near your bias the map measured CReST+ (alpha = 1/3, t_min = 0.5) only; '
            'other alpha / t_min values are untested there.'
        )
    return lines
