"""A finished generation in TensorBoard: pictures of its per-class numbers and its
HParams session, written to the generation's tb folder beside the training scalars.

Images (tab IMAGES): per-class recall and precision bars on the test and the unlabeled
set, the test set's confusion matrix, and the picks per class against the sampling
rates mu. HParams (tab HPARAMS): the run's method and data settings with the
generation's balanced accuracy, plain and logit-adjusted, so that the runs of a fold
loop (one TensorBoard over their parent folder) line up in one table.

Drawing uses matplotlib's Agg canvas on Figure objects (no pyplot, no global backend)
and draws no random numbers: a run computes the same with or without it.
"""

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import plugin_data_pb2

from crest import results

# The HParams columns: the same in every run, so that every run's sessions share one
# experiment (TensorBoard takes the experiment's columns from any one run).
HPARAMS = (
    'method',
    'algorithm',
    'dist_align',
    'unlabeled_prior',
    'dataset',
    'unlabeled_distribution',
    'imbalance',
    'label_fraction',
    'fold',
    'seed',
    'arch',
    'generations',
    'generation',
    'steps_per_generation',
    'alpha',
    't_min',
)
# The HPARAMS table ticks five columns at first, those marked as differing first (then by
# name): these tell a fold loop's runs and generations apart. The others are a click away.
SHOWN = ('dataset', 'fold', 'generation', 'imbalance', 'method')
# Scalars of the generation's result: means of its last 5 evaluations, as reported.
METRICS = {
    'result/balanced_accuracy': 'balanced accuracy',
    'result/balanced_accuracy_la': 'balanced accuracy (LA)',
}
# One TensorBoard group, shown open.
IMAGES = (
    'generation/per_class_test',
    'generation/per_class_unlabeled',
    'generation/confusion_test',
    'generation/picks',
)


def method_name(cfg) -> str:
    """The run's method: its --method preset, else named alike from its settings (e.g.
    fixmatch_crest_plus: FixMatch, several generations, progressive alignment)."""
    if cfg.method:
        return cfg.method
    if cfg.generations > 1:
        return f'{cfg.algorithm}_crest' + ('_plus' if cfg.dist_align == 'progressive' else '')
    return cfg.algorithm + ('' if cfg.dist_align == 'none' else '_da')


def hparams_of(cfg, generation: int) -> dict:
    """The HParams values of a generation of the run `cfg` (a resolved Config)."""
    values = {name: getattr(cfg, name, None) for name in HPARAMS}
    values.update(method=method_name(cfg), generation=generation)
    return {k: v for k, v in values.items() if v is not None}


def write_generation(
    tb_dir: str,
    cfg,
    generation: results.Generation,
    class_names: list[str],
    test_labels: np.ndarray,
    test_probs: np.ndarray,
) -> None:
    """Writes generation's images, HParams session and result scalars to `tb_dir`, at
    the generation's last step. `test_probs`: the final model's test probabilities."""
    num_classes = len(class_names)
    predicted = np.argmax(test_probs, axis=1)
    known = test_labels >= 0
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (test_labels[known], predicted[known]), 1)
    images = {
        'generation/per_class_test': per_class_figure(
            class_names, generation.test.recall, generation.test.precision, 'test set'
        ),
        'generation/confusion_test': confusion_figure(class_names, confusion),
        'generation/picks': picks_figure(class_names, generation.picks),
    }
    if generation.unlabeled is not None:
        images['generation/per_class_unlabeled'] = per_class_figure(
            class_names,
            generation.unlabeled.recall,
            generation.unlabeled.precision,
            'unlabeled set',
        )
    writer = tf.summary.create_file_writer(tb_dir)
    with writer.as_default(step=cfg.steps_per_generation):
        for name, figure in images.items():
            tf.summary.image(name, render(figure)[None])
        tf.summary.experimental.write_raw_pb(experiment().SerializeToString(), step=0)
        hp.hparams(hparams_of(cfg, generation.generation))
        tf.summary.scalar('result/balanced_accuracy', generation.balanced_accuracy)
        tf.summary.scalar('result/balanced_accuracy_la', generation.balanced_accuracy_la)
    writer.close()


def experiment():
    """The HParams experiment (its columns and metrics) as a Summary proto, the SHOWN
    columns marked as differing."""
    summary = hp.hparams_config_pb(
        hparams=[hp.HParam(name) for name in HPARAMS],
        metrics=[hp.Metric(tag, display_name=shown) for tag, shown in METRICS.items()],
    )
    [value] = summary.value
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in SHOWN
    value.metadata.plugin_data.content = data.SerializeToString()
    return summary


def render(figure: Figure) -> np.ndarray:
    """The figure's pixels, uint8 [H, W, 3]."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _class_axis(ax, class_names) -> None:
    """Class names under the bars, upright when short, fewer when there are many."""
    num = len(class_names)
    step = max(1, num // 40)
    ticks = np.arange(0, num, step)
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [f'{c} {class_names[c]}' for c in ticks], rotation=90 if num > 5 else 0, fontsize=8
    )
    ax.set_xlim(-0.6, num - 0.4)


def _figure(num_classes: int, height: float = 4.0) -> Figure:
    return Figure(figsize=(min(max(6.0, 0.45 * num_classes + 2), 24.0), height), dpi=80)


def per_class_figure(class_names, recall, precision, split: str) -> Figure:
    """Grouped bars: each class's recall and precision on `split`, classes by index
    (the most frequent first); the balanced accuracy (mean recall) as a line."""
    num = len(class_names)
    figure = _figure(num)
    ax = figure.add_subplot()
    x = np.arange(num)
    ax.bar(x - 0.2, recall, 0.4, label='recall', color='tab:blue')
    ax.bar(x + 0.2, precision, 0.4, label='precision', color='tab:orange')
    ax.axhline(np.mean(recall), color='tab:blue', lw=1, ls='--', label='mean recall')
    ax.set_ylim(0, 1.25)  # Room for the legend above the bars.
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title(f'Per-class recall and precision, {split}')
    _class_axis(ax, class_names)
    ax.legend(loc='upper center', ncol=3, fontsize=8)
    figure.tight_layout()
    return figure


def confusion_figure(class_names, confusion: np.ndarray) -> Figure:
    """The confusion matrix, rows true classes and columns predicted ones, coloured by
    the row's share (a row's diagonal cell is the class's recall), counts written in
    while there are few classes."""
    num = len(class_names)
    size = min(max(5.0, 0.5 * num + 2), 20.0)
    figure = Figure(figsize=(size + 1, size), dpi=80)
    ax = figure.add_subplot()
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    image = ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='share of the true class')
    if num <= 20:
        for (i, j), n in np.ndenumerate(confusion):
            if n:
                color = 'white' if share[i, j] > 0.5 else 'black'
                ax.text(j, i, str(n), ha='center', va='center', fontsize=7, color=color)
    _class_axis(ax, class_names)
    ticks = ax.get_xticks()
    ax.set_yticks(ticks)
    ax.set_yticklabels([f'{int(c)} {class_names[int(c)]}' for c in ticks], fontsize=8)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title('Confusion matrix, test set (final model)')
    figure.tight_layout()
    return figure


def picks_figure(class_names, picks: results.Picks) -> Figure:
    """Per predicted class: the unlabeled images picked (the correct ones darker, when
    classes are known) on the left axis, the sampling rate mu and the share of the
    class's predictions picked on the right."""
    num = len(class_names)
    figure = _figure(num)
    ax = figure.add_subplot()
    x = np.arange(num)
    ax.bar(x, picks.picked, 0.7, color='tab:green', alpha=0.45, label='picked')
    if picks.correct is not None:
        ax.bar(x, picks.correct, 0.7, color='tab:green', label='picked, correct')
    ax.set_ylabel('pseudo-labels picked')
    rates = ax.twinx()
    rates.plot(x, picks.rate, 'o-', color='tab:red', label='mu (sampling rate)')
    predicted = np.asarray(picks.predicted, np.float64)
    kept = np.divide(picks.picked, predicted, out=np.zeros(num), where=predicted > 0)
    rates.plot(x, kept, 'x', color='black', label='picked / predicted')
    ax.set_ylim(0, 1.3 * max(max(picks.picked), 1))  # Room for the legend.
    rates.set_ylim(0, 1.3)
    rates.set_yticks(np.linspace(0, 1, 6))
    rates.set_ylabel('rate')
    total = f'{picks.total_picked} picked'
    if picks.total_precision is not None:
        total += f', {picks.total_precision:.1%} correct'
    ax.set_title(f'Pseudo-labels picked per predicted class ({total})')
    _class_axis(ax, class_names)
    handles = [*ax.get_legend_handles_labels()[0], *rates.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc='upper center', ncol=4, fontsize=8)
    figure.tight_layout()
    return figure
