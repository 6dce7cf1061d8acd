"""The settings of a CReST run, with their checks. Defaults are the paper's CIFAR-10-LT
FixMatch CReST+ setting (gamma=100, beta=10%, 6 generations of 2^16 steps).

Some settings depend on the algorithm (paper section 4.1: alpha = 1/3 and t_min = 0.5
for FixMatch, 1/2 and 0.8 for MixMatch, whose generations are 2^17 steps and whose own
batch is 64 labeled + 64 unlabeled images): left as None, `resolve` fills them in from
ALGORITHM_DEFAULTS. The algorithm's own hyperparameters are a dict, `hparams`, of the
values set; `resolve` adds the algorithm's defaults for the others.
"""

import dataclasses
import math
import os

from crest import rebalance
from libml import datasets, folds, models
from libml.algorithms import ALGORITHMS

DIST_ALIGN = ('none', 'constant', 'progressive')
CLASS_PRIORS = ('labeled', 'analytic')
STREAM = ('auto', 'always', 'never')


@dataclasses.dataclass
class Config:
    workdir: str = ''  # '': runs/<settings that differ from the defaults>
    dataset: str = 'cifar10lt'
    data_dir: str | None = None
    image_size: int = 0  # The user's images' side in pixels; 0: their median side.
    bad_images: str = 'stop'  # Or 'skip': what an unreadable image file of the user's does.
    # Stream images from the TFRecords instead of holding them: 'auto' above 4 GiB.
    stream: str = 'auto'
    imbalance: float = 100.0
    # Which classes are rare: 0 keeps the source's label order (class 0 the head), k > 0
    # ranks the classes by a permutation seeded by k, a list [c_0, c_1, ...] ranks source
    # class c_r at rank r. Built-in long-tailed data only.
    class_order: int | list[int] = 0
    label_fraction: float = 0.1
    fold: int = 1
    algorithm: str = 'fixmatch'
    hparams: dict = dataclasses.field(default_factory=dict)  # The algorithm's own.
    arch: str = 'wrn28_2'
    precision: str = 'float32'  # Or 'bf16': bfloat16 compute, float32 variables.
    xla: bool = False  # Compile the train step with XLA.
    generations: int = 6
    alpha: float | None = None  # None here and below: ALGORITHM_DEFAULTS.
    dist_align: str = 'progressive'
    t_min: float | None = None
    class_prior: str = 'labeled'
    steps_per_generation: int | None = None
    eval_every: int = 1024
    batch_size: int = 64
    uratio: int | None = None
    lr: float = 0.03
    lr_decay_level: float = 1.0
    wd: float = 5e-4
    ema_decay: float = 0.999
    ema_warmup: bool = False
    labeled_weights: str = 'none'  # Class weights of the labeled loss (CB).
    cb_beta: float = 0.9999
    resample: bool = False  # Class-balanced labeled batches (RS).
    seed: int = 0  # Of every random draw: initialisation, data order, augmentation.
    method: str = ''  # The preset these settings came from, if any (crest/methods.py).
    preset: str = ''  # The experiment preset they came from, if any (crest/presets.py).


# Values of the settings left None, by algorithm; an algorithm not listed takes FixMatch's.
ALGORITHM_DEFAULTS = {
    'fixmatch': dict(alpha=1 / 3, t_min=0.5, steps_per_generation=2**16, uratio=7),
    'mixmatch': dict(alpha=1 / 2, t_min=0.8, steps_per_generation=2**17, uratio=1),
    # The FixMatch code's baselines train on 64 labeled + 64 unlabeled images.
    'pseudo_label': dict(alpha=1 / 3, t_min=0.5, steps_per_generation=2**16, uratio=1),
    'mean_teacher': dict(alpha=1 / 3, t_min=0.5, steps_per_generation=2**16, uratio=1),
    'supervised': dict(alpha=1 / 3, t_min=0.5, steps_per_generation=2**16, uratio=1),
}

MAX_SEED = 4_000_000

# Settings that do not change what a run computes (XLA at most reorders float
# arithmetic), so a resumed run may change them.
RUNTIME_ONLY = ('workdir', 'data_dir', 'method', 'preset', 'xla', 'bad_images')


def resolve(cfg: Config) -> Config:
    """`cfg` with the algorithm's defaults in place of None and of unset hparams.

    Raises ValueError for an unknown algorithm or a hyperparameter it does not have.
    """
    _check(cfg.algorithm in ALGORITHMS, 'algorithm', f'one of {list(ALGORITHMS)}', cfg.algorithm)
    defaults = ALGORITHM_DEFAULTS.get(cfg.algorithm, ALGORITHM_DEFAULTS['fixmatch'])
    own = ALGORITHMS[cfg.algorithm].hparam_defaults()
    unknown = sorted(set(cfg.hparams) - set(own))
    if unknown:
        raise ValueError(
            f'--{cfg.algorithm}.{unknown[0]}: {cfg.algorithm} has no such setting; '
            f'it has {", ".join(own) or "none"}'
        )
    filled = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
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
    _check(
        cfg.dataset in datasets.DATASETS,
        'dataset',
        f'one of {list(datasets.DATASETS)}',
        cfg.dataset,
    )
    _check(cfg.arch in models.ARCHS, 'arch', f'one of {list(models.ARCHS)}', cfg.arch)
    _check(
        cfg.precision in models.PRECISIONS,
        'precision',
        f'one of {list(models.PRECISIONS)}',
        cfg.precision,
    )
    _check(cfg.algorithm in ALGORITHMS, 'algorithm', f'one of {list(ALGORITHMS)}', cfg.algorithm)
    _check(cfg.dist_align in DIST_ALIGN, 'dist_align', f'one of {list(DIST_ALIGN)}', cfg.dist_align)
    _check(
        cfg.class_prior in CLASS_PRIORS,
        'class_prior',
        f'one of {list(CLASS_PRIORS)}',
        cfg.class_prior,
    )
    datasets.get(cfg.dataset).check(fold_spec(cfg), cfg.class_prior)
    _check(cfg.stream in STREAM, 'stream', f'one of {list(STREAM)}', cfg.stream)
    _check(cfg.alpha >= 0, 'alpha', '>= 0', cfg.alpha)
    _check(0 <= cfg.t_min <= 1, 't_min', 'in [0, 1]', cfg.t_min)
    _check(cfg.generations >= 1, 'generations', '>= 1', cfg.generations)
    _check(cfg.steps_per_generation >= 1, 'steps_per_generation', '>= 1', cfg.steps_per_generation)
    _check(cfg.eval_every >= 1, 'eval_every', '>= 1', cfg.eval_every)
    _check(cfg.batch_size >= 1, 'batch_size', '>= 1', cfg.batch_size)
    _check(cfg.uratio >= 1, 'uratio', '>= 1', cfg.uratio)
    _check(cfg.lr > 0, 'lr', '> 0', cfg.lr)
    # lr * cos(pi * level * k / (16 K)) stays >= 0 up to level 8.
    _check(0 <= cfg.lr_decay_level <= 8, 'lr_decay_level', 'in [0, 8]', cfg.lr_decay_level)
    _check(cfg.wd >= 0, 'wd', '>= 0', cfg.wd)
    _check(0 <= cfg.ema_decay < 1, 'ema_decay', 'in [0, 1)', cfg.ema_decay)
    # Generation g draws from seed * 1000 + g, which NumPy's seeding takes below 2^32.
    _check(0 <= cfg.seed <= MAX_SEED, 'seed', f'in [0, {MAX_SEED}]', cfg.seed)
    _check(
        cfg.labeled_weights in rebalance.LABELED_WEIGHTS,
        'labeled_weights',
        f'one of {list(rebalance.LABELED_WEIGHTS)}',
        cfg.labeled_weights,
    )
    _check(0 <= cfg.cb_beta < 1, 'cb_beta', 'in [0, 1)', cfg.cb_beta)
    for name, hparam in ALGORITHMS[cfg.algorithm].HPARAMS.items():
        value = cfg.hparams[name]
        _check(hparam.check(value), f'{cfg.algorithm}.{name}', hparam.allowed, value)


def flat_settings(settings: dict) -> dict:
    """Settings with the algorithm's own as '<algorithm>.<name>' entries."""
    flat = {k: v for k, v in settings.items() if k != 'hparams'}
    hparams = settings.get('hparams')
    if hparams is None:  # Runs made before algorithms had settings of their own.
        hparams = {k: flat.pop(k) for k in ('threshold', 'wu') if k in flat}
    algorithm = settings.get('algorithm', Config.algorithm)
    flat.update({f'{algorithm}.{k}': v for k, v in hparams.items()})
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

    A setting the saved file lacks was added after that run was made, which therefore
    ran with its default.
    """
    saved, current = flat_settings(saved), flat_settings(dataclasses.asdict(cfg))
    default = dataclasses.asdict(Config())
    return [
        k for k in current if k not in RUNTIME_ONLY and saved.get(k, default.get(k)) != current[k]
    ]
