"""The settings of a CReST run, each declared once: its default, a help text, its allowed
values and its group. scripts/crest.py makes its flags from these declarations, and
`validate` checks a run's settings against them. Defaults are the paper's CIFAR-10-LT
FixMatch CReST+ setting (gamma=100, beta=10%, 6 generations of 2^16 steps).

Some settings depend on the algorithm (paper section 4.1: alpha = 1/3 and t_min = 0.5
for FixMatch, 1/2 and 0.8 for MixMatch, whose generations are 2^17 steps and whose own
batch is 64 labeled + 64 unlabeled images): left as None, `resolve` fills them in from
the algorithm's own `PAPER_SETTINGS`. The algorithm's own hyperparameters are a dict,
`hparams`, of the values set; `resolve` adds the algorithm's defaults for the others.
Presets and the order in which flags, presets and defaults win: crest/presets.py.
"""

import dataclasses
import math
import os
from collections.abc import Callable

from crest import presets, rebalance
from libml import datasets, folds, lt, models, pipeline
from libml.algorithms import ALGORITHMS

DIST_ALIGN = ('none', 'constant', 'progressive')
CLASS_PRIORS = ('labeled', 'analytic')
UNLABELED_PRIORS = ('labeled', 'estimated')
STREAM = ('auto', 'always', 'never')
# The groups of settings, in the order --helpfull shows them.
GROUPS = ('data', 'method', 'training', 'run')
# Generation g draws from seed * 1000 + g, which NumPy's seeding takes below 2^32.
MAX_SEED = 4_000_000
# Upper bounds of the sizes, far above the paper's settings (224 px, 2^17 steps per
# generation, batch 1,024, 7 unlabeled images per labeled one): a typo is refused at
# once instead of asking for tens of GB or years of steps.
MAX_IMAGE_SIZE = 1024
MAX_FOLD = 1000
MAX_GENERATIONS = 100
MAX_STEPS = presets.MAX_STEPS
MAX_BATCH = 65_536
MAX_URATIO = 64


def setting(
    default,
    help: str,
    group: str,
    *,
    check: Callable | None = None,
    allowed: str = '',
    choices: tuple | Callable[[], list] | None = None,
):
    """A Config field and its declaration: `check(value)` must hold (`allowed` says how,
    in the error message), or the value must be one of `choices`: a fixed tuple, or a
    registry's names (a function, read when checked so that a registry may grow). A
    default of None is the algorithm's paper setting."""
    kind = dict(default_factory=default) if callable(default) else dict(default=default)
    return dataclasses.field(
        **kind,
        metadata=dict(help=help, group=group, check=check, allowed=allowed, choices=choices),
    )


def _at_least(low):
    return dict(check=lambda v: v >= low, allowed=f'>= {low}')


def _within(low, high, high_open=False):
    if high_open:
        return dict(check=lambda v: low <= v < high, allowed=f'in [{low}, {high})')
    return dict(check=lambda v: low <= v <= high, allowed=f'in [{low}, {high}]')


@dataclasses.dataclass
class Config:
    workdir: str = setting(
        '',
        'Run folder (local or any tf.io.gfile path). Default: runs/<flags that differ '
        'from their defaults>, e.g. runs/fold=2,imbalance=50.',
        'run',
    )
    dataset: str = setting(
        'cifar10lt',
        "cifar10lt, cifar100lt, fashion_mnist_lt, cifar10_darp (DARP's fixed split, the "
        "paper's Table 3), synthetic_lt (generated, no download); or your own images, used "
        'as they are: folder (--data_dir with labeled/<class>/, unlabeled/, test/<class>/) '
        'or npz (--data_dir=file.npz).',
        'data',
        choices=lambda: list(datasets.DATASETS),
    )
    data_dir: str | None = setting(
        None,
        'Folder with the official files (CIFAR binary archives, Fashion-MNIST '
        'IDX). Default: Debian files for Fashion-MNIST, else tensorflow-datasets. For '
        '--dataset=folder or npz: your images folder or .npz file.',
        'data',
    )
    image_size: int = setting(
        0,
        'With --dataset=folder or npz: resize images to this square side in pixels. '
        "Default (0): the median side of a folder's images, an npz file's own size.",
        'data',
        **_within(0, MAX_IMAGE_SIZE),
    )
    bad_images: str = setting(
        'stop',
        'With --dataset=folder: an unreadable image file stops the run, naming it (stop), '
        "or is left out and listed in the log and the fold's counts.json (skip).",
        'data',
        choices=folds.BAD_IMAGES,
    )
    stream: str = setting(
        'auto',
        "Stream images from the fold's TFRecords instead of holding them in memory: "
        'always, never, or auto (when they take over 4 GiB decoded). A streamed stream is '
        'shuffled through a buffer of 10,000 records, kept in every checkpoint.',
        'data',
        choices=STREAM,
    )
    imbalance: float = setting(100.0, 'gamma = N_1 / N_L, >= 1.', 'data')
    class_order: int | list[int] = setting(
        0,
        'Which classes are rare: 0 keeps the source label order (class 0 the largest), k > 0 '
        'ranks the classes by a permutation seeded by k, a list like 6,4,2,0,9,1,3,5,7,8 puts '
        'source class 6 at rank 0 (the largest), 4 at rank 1, ... Built-in long-tailed data '
        'sets only.',
        'data',
    )
    label_fraction: float = setting(
        0.1,
        'beta, labeled share per class.',
        'data',
        check=lambda v: 0 < v < 1,
        allowed='in (0, 1) (1 would leave no unlabeled image)',
    )
    fold: int = setting(
        1, 'Labeled/unlabeled split, 1..5 in the paper.', 'data', **_within(1, MAX_FOLD)
    )
    unlabeled_distribution: str = setting(
        'same',
        "The unlabeled images' class distribution: same (the labeled long tail's, the "
        "paper's), uniform (M_1 images of every class) or reversed (the long tail read from "
        'its end: the rarest labeled class is the largest unlabeled one). Built-in '
        'long-tailed data sets but DARP; M_1 = 4000 (CIFAR-10, Fashion-MNIST), 300 '
        '(CIFAR-100).',
        'data',
        choices=lt.UNLABELED_DISTRIBUTIONS,
    )
    algorithm: str = setting(
        'fixmatch',
        'Semi-supervised learner; its own settings are the --<algorithm>.<name> flags.',
        'method',
        choices=lambda: list(ALGORITHMS),
    )
    # The algorithm's own hyperparameters: --<algorithm>.<name> flags of their own.
    hparams: dict = dataclasses.field(default_factory=dict)
    arch: str = setting(
        'wrn28_2',
        'wrn28_2 (paper) or cnn_small (CPU).',
        'training',
        choices=lambda: list(models.ARCHS),
    )
    precision: str = setting(
        'float32',
        'float32, or bf16: mixed precision (bfloat16 compute, float32 variables, logits and '
        'losses), for GPUs and CPUs with bfloat16 instructions.',
        'training',
        choices=lambda: list(models.PRECISIONS),
    )
    xla: bool = setting(
        False,
        'Compile the train step with XLA: for GPUs (on CPUs it was slower, docs/performance.md).',
        'training',
    )
    generations: int = setting(
        6, 'Self-training generations G.', 'method', **_within(1, MAX_GENERATIONS)
    )
    alpha: float | None = setting(
        None,
        'Paper alpha: mu_l = (N_{L+1-l}/N_1)^alpha; 0 keeps every pseudo-label.',
        'method',
        **_at_least(0),
    )
    dist_align: str = setting(
        'progressive',
        'Distribution alignment: none (CReST), constant t=t_min, or progressive '
        '(CReST+: t from 1 to t_min over the generations).',
        'method',
        choices=DIST_ALIGN,
    )
    t_min: float | None = setting(
        None, 'Final alignment temperature, in [0, 1].', 'method', **_within(0, 1)
    )
    class_prior: str = setting(
        'labeled',
        'p(y) for rates and alignment: labeled-set counts (paper) or the analytic '
        'gamma law (reference code).',
        'method',
        choices=CLASS_PRIORS,
    )
    unlabeled_prior: str = setting(
        'labeled',
        "The class distribution CReST+'s alignment target flattens: the labeled one "
        "(paper), or estimated: after each generation, the unlabeled set's, from the EMA "
        "model's predictions corrected by EM (Saerens et al. 2002); generation 0 uses "
        'the labeled one.',
        'method',
        choices=UNLABELED_PRIORS,
    )
    steps_per_generation: int | None = setting(
        None, 'Train steps.', 'training', **_within(1, MAX_STEPS)
    )
    eval_every: int = setting(
        1024, 'Steps between evaluations.', 'training', **_within(1, MAX_STEPS)
    )
    batch_size: int = setting(
        64,
        'Labeled images per step in all (the global batch, split over the GPUs and machines).',
        'training',
        **_within(1, MAX_BATCH),
    )
    uratio: int | None = setting(
        None, 'Unlabeled images per labeled image.', 'training', **_within(1, MAX_URATIO)
    )
    lr: float = setting(
        0.03, 'SGD Nesterov learning rate.', 'training', check=lambda v: v > 0, allowed='> 0'
    )
    # lr * cos(pi * level * k / (16 K)) stays >= 0 up to level 8.
    lr_decay_level: float = setting(
        1.0,
        'lr * cos(pi * level * k / (16 K)): 1 (reference), 7 (FixMatch).',
        'training',
        **_within(0, 8),
    )
    wd: float = setting(5e-4, 'Coupled L2 weight decay.', 'training', **_at_least(0))
    ema_decay: float = setting(
        0.999, 'Decay of the evaluated EMA model.', 'training', **_within(0, 1, high_open=True)
    )
    ema_warmup: bool = setting(
        False, 'EMA decay min(decay, (1+k)/(10+k)): for runs of a few hundred steps.', 'training'
    )
    labeled_weights: str = setting(
        'none',
        "Class weights of the labeled loss: class_balanced (Cui et al. 2019, the paper's CB), "
        "inverse_frequency (the reference code's), or none.",
        'method',
        choices=rebalance.LABELED_WEIGHTS,
    )
    cb_beta: float = setting(
        0.9999, 'beta of the class_balanced weights.', 'method', **_within(0, 1, high_open=True)
    )
    resample: bool = setting(False, 'Class-balanced labeled batches (re-sampling, RS).', 'method')
    seed: int = setting(
        0,
        'Seed of every random draw (initialisation, data order, augmentation, mixup): the '
        'same flags and seed give the same run, resumed or not.',
        'run',
        **_within(0, MAX_SEED),
    )
    # The presets these settings came from, if any (crest/presets.py): flags of their own.
    method: str = ''
    preset: str = ''


# Settings that do not change what a run computes (XLA at most reorders float
# arithmetic), so a resumed run may change them.
RUNTIME_ONLY = ('workdir', 'data_dir', 'method', 'preset', 'xla', 'bad_images')
DECLARED = [f for f in dataclasses.fields(Config) if 'help' in f.metadata]
# Settings added after runs had been made: a run's files (args.json, results.json) hold
# them only when set away from their default, which does what the code did before they
# came, and a file without them is read as their default. A run of the same settings
# thus writes the same bytes before and after they came, and resumes across.
LATER_SETTINGS = ('unlabeled_distribution', 'unlabeled_prior')


def saved_settings(cfg: Config) -> dict:
    """The settings of `cfg` as a run's args.json and results.json hold them."""
    default = Config()
    return {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if not (k in LATER_SETTINGS and v == getattr(default, k))
    }


def paper_setting_help(name: str) -> str:
    """'Default: 0.333 (fixmatch), 0.5 (mixmatch), ...' for a setting left None."""
    values = []
    for algorithm, cls in ALGORITHMS.items():
        value = cls.PAPER_SETTINGS[name]
        values.append(
            f'{value:.3g} ({algorithm})' if isinstance(value, float) else f'{value} ({algorithm})'
        )
    return f'Default: {", ".join(values)}.'


def resolve(cfg: Config) -> Config:
    """`cfg` with the algorithm's paper settings in place of None and its defaults in
    place of unset hparams.

    Raises ValueError for an unknown algorithm or a hyperparameter it does not have.
    """
    _check(cfg.algorithm in ALGORITHMS, 'algorithm', f'one of {list(ALGORITHMS)}', cfg.algorithm)
    algorithm = ALGORITHMS[cfg.algorithm]
    own = algorithm.hparam_defaults()
    unknown = sorted(set(cfg.hparams) - set(own))
    if unknown:
        raise ValueError(
            f'--{cfg.algorithm}.{unknown[0]}: {cfg.algorithm} has no such setting; '
            f'it has {", ".join(own) or "none"}'
        )
    filled = {}
    for f in DECLARED:
        if f.default is None and f.name != 'data_dir' and getattr(cfg, f.name) is None:
            filled[f.name] = algorithm.PAPER_SETTINGS[f.name]
    return dataclasses.replace(cfg, hparams={**own, **cfg.hparams}, **filled)


def _check(ok: bool, flag: str, allowed: str, value) -> None:
    if not ok:
        raise ValueError(f'--{flag} must be {allowed}, got {value!r}')


def parse_class_order(text: str) -> int | list[int]:
    """--class_order's value: '3' is the seed 3, '6,4,2,...' the list of source classes
    by rank. A list, not a tuple, so that it equals the one a saved args.json holds."""
    try:
        return [int(c) for c in text.split(',')] if ',' in text else int(text)
    except ValueError:
        raise ValueError(
            '--class_order must be a seed (an integer) or class indices separated by '
            f'commas, got {text!r}'
        ) from None


def fold_spec(cfg: Config) -> folds.FoldSpec:
    """The settings of `cfg` that build its fold; raises ValueError for one that no data
    set takes."""
    return folds.FoldSpec(
        imbalance=cfg.imbalance,
        label_fraction=cfg.label_fraction,
        fold=cfg.fold,
        data_dir=cfg.data_dir,
        image_size=cfg.image_size,
        class_order=cfg.class_order,
        bad_images=cfg.bad_images,
        unlabeled_distribution=cfg.unlabeled_distribution,
    )


def validate(cfg: Config) -> None:
    """Raises ValueError with a one-line message naming the first bad setting.

    `cfg` must be resolved (`resolve`).
    """
    numbers = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    numbers.update({f'{cfg.algorithm}.{k}': v for k, v in cfg.hparams.items()})
    for name, value in numbers.items():
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        _check(not is_number or math.isfinite(value), name, 'a finite number', value)
    for f in DECLARED:
        choices = f.metadata['choices']
        if choices is not None:
            choices = choices() if callable(choices) else list(choices)
            value = getattr(cfg, f.name)
            _check(value in choices, f.name, f'one of {choices}', value)
    datasets.get(cfg.dataset).check(fold_spec(cfg), cfg.class_prior)
    for f in DECLARED:
        check = f.metadata['check']
        if check is not None:
            value = getattr(cfg, f.name)
            _check(check(value), f.name, f.metadata['allowed'], value)
    for name, hparam in ALGORITHMS[cfg.algorithm].HPARAMS.items():
        value = cfg.hparams[name]
        _check(hparam.check(value), f'{cfg.algorithm}.{name}', hparam.allowed, value)


def idle_settings(cfg: Config, given: set[str]) -> list[str]:
    """Warnings naming the settings in `given` (set explicitly) that do nothing in the
    run of `cfg` (resolved)."""
    reads = ALGORITHMS[cfg.algorithm].views
    unlabeled = not isinstance(reads, pipeline.Views) or bool(reads.unlabeled)
    idle = {}
    if not unlabeled:
        why = f'with --algorithm={cfg.algorithm} (it trains on labeled images only)'
        idle.update({n: why for n in ('uratio', 'dist_align', 't_min', 'unlabeled_prior')})
    elif cfg.dist_align == 'none':
        idle['t_min'] = 'with --dist_align=none'
        idle['unlabeled_prior'] = 'with --dist_align=none (an estimate is only recorded)'
    elif cfg.generations == 1:
        idle['unlabeled_prior'] = 'with --generations=1 (no generation aligns to an estimate)'
    if cfg.labeled_weights != 'class_balanced':
        idle['cb_beta'] = f'with --labeled_weights={cfg.labeled_weights}'
    return [
        f'warning: --{name}={getattr(cfg, name)} does nothing {why}'
        for name, why in idle.items()
        if name in given
    ]


def flat_settings(settings: dict) -> dict:
    """Settings with the algorithm's own as '<algorithm>.<name>' entries."""
    flat = {k: v for k, v in settings.items() if k != 'hparams'}
    algorithm = settings.get('algorithm', Config.algorithm)
    flat.update({f'{algorithm}.{k}': v for k, v in settings.get('hparams', {}).items()})
    return flat


def _folder_value(value) -> str:
    """A setting's value in a folder name: a float in %g, a list as 6-4-2 (a comma
    separates the settings, and a space would need quoting)."""
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, list):
        return '-'.join(str(v) for v in value)
    return str(value)


def default_workdir(cfg: Config, root: str = 'runs') -> str:
    """root/<name=value,...> of the settings that differ from their defaults.

    E.g. `runs/dataset=fashion_mnist_lt,arch=cnn_small,fold=2`, or
    `runs/algorithm=mixmatch,mixmatch.T=0.4`, or `runs/class_order=6-4-2-0-9-1-3-5-7-8`;
    `runs/paper` for the defaults. A setting that depends on the algorithm counts as
    changed when it differs from that algorithm's default. Runtime-only settings are left
    out.
    """
    current = flat_settings(dataclasses.asdict(resolve(cfg)))
    default = flat_settings(dataclasses.asdict(resolve(Config(algorithm=cfg.algorithm))))
    default['algorithm'] = Config().algorithm
    parts = [
        f'{k}={_folder_value(v)}'
        for k, v in current.items()
        if k not in RUNTIME_ONLY and v != default[k]
    ]
    if cfg.dataset in datasets.DATASETS:
        parts[1:1] = datasets.get(cfg.dataset).folder_name_parts(cfg.data_dir)
    return os.path.join(root, ','.join(parts) or 'paper')


def changed_settings(saved: dict, cfg: Config) -> list[str]:
    """Names of settings that differ from a saved args.json, ignoring runtime-only ones.
    ValueError if the saved file lacks a setting: it was written by an earlier version
    of this code, whose run this one cannot resume."""
    saved = {**{k: getattr(Config(), k) for k in LATER_SETTINGS}, **saved}
    missing = [f.name for f in dataclasses.fields(Config) if f.name not in saved]
    if missing:
        raise ValueError(
            f'written by an earlier version of this code (no {", ".join(missing)}): run in a '
            'new --workdir'
        )
    saved, current = flat_settings(saved), flat_settings(dataclasses.asdict(cfg))
    return [k for k in current if k not in RUNTIME_ONLY and saved.get(k) != current[k]]
