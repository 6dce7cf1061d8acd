"""The PNG plots of a report: per-class recall by method (paper Fig. 1d), FixMatch's
per-class precision and recall (Fig. 2), balanced accuracy by generation (Figs. 4 / 5)."""

import os

import numpy as np

from study.report.runs import (
    by_generation,
    class_header,
    first_run,
    fold_std,
    own_runs,
    per_class,
    test_precision,
    test_recall,
    title,
)


def _class_bars(plt, header, series, heading, path, ylabel, ylim):
    """Grouped per-class bars, one group per class, one bar per (label, [folds, classes])."""
    x = np.arange(len(header))
    fig, ax = plt.subplots(figsize=(max(10, 1.2 * len(series) * len(header) / 4), 4.5))
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
    ax.set_title(heading)
    ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(runs: dict, output: str) -> list[str]:
    """Writes the plots to `output`; returns their file names."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    header, _ = class_header(first_run(runs))
    files = ['per_class_recall.png']
    _class_bars(
        plt,
        header,
        [(title(m), per_class(f, test_recall)) for m, f in runs.items()],
        'Per-class test recall by method (mean over folds, bars: std)',
        os.path.join(output, files[-1]),
        'test recall (%)',
        100,
    )
    if 'fixmatch' in runs:
        fm = runs['fixmatch']
        files.append('fixmatch_precision_recall.png')
        _class_bars(
            plt,
            header,
            [('precision', per_class(fm, test_precision)), ('recall', per_class(fm, test_recall))],
            'FixMatch: per-class test precision and recall (mean over folds, bars: std)',
            os.path.join(output, files[-1]),
            '%',
            105,
        )

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, folds in own_runs(runs).items():
        by_gen = per_class(folds, by_generation)
        # Against cumulative steps: a one-generation baseline with the whole budget ends
        # where the last generation of a self-training run ends, not at generation 0.
        steps = next(iter(folds.values())).args['steps_per_generation']
        ends = steps * np.arange(1, by_gen.shape[1] + 1)
        ax.errorbar(
            ends,
            100 * by_gen.mean(axis=0),
            yerr=100 * fold_std(by_gen) if len(folds) > 1 else None,
            marker='o',
            capsize=3,
            label=f'{title(method)} ({len(folds)} fold(s))',
        )
    ax.set_xlabel('training steps at the end of each generation (cumulative)')
    ax.set_ylabel('balanced test accuracy (%)')
    ax.set_title('Balanced accuracy by generation (mean over folds, bars: std)')
    ax.legend(fontsize=7)
    fig.tight_layout()
    files.append('generations.png')
    fig.savefig(os.path.join(output, files[-1]), dpi=110)
    plt.close(fig)
    return files
