"""The settings of a CReST run, with their checks. Defaults are the paper's CIFAR-10-LT
FixMatch CReST+ setting (gamma=100, beta=10%, 6 generations of 2^16 steps)."""

import dataclasses
import os

from libml import datasets, models
from libml.algorithms import ALGORITHMS

DIST_ALIGN = ('none', 'constant', 'progressive')
CLASS_PRIORS = ('labeled', 'analytic')


@dataclasses.dataclass
class Config:
    workdir: str = ''  # '': runs/<settings that differ from the defaults>
    dataset: str = 'cifar10lt'
    data_dir: str | None = None
    imbalance: float = 100.0
    label_fraction: float = 0.1
    fold: int = 1
    algorithm: str = 'fixmatch'
    arch: str = 'wrn28_2'
    generations: int = 6
    alpha: float = 1 / 3
    dist_align: str = 'progressive'
    t_min: float = 0.5
    class_prior: str = 'labeled'
    steps_per_generation: int = 65536
    eval_every: int = 1024
    batch_size: int = 64
    uratio: int = 7
    lr: float = 0.03
    lr_decay_level: float = 1.0
    wd: float = 5e-4
    ema_decay: float = 0.999
    ema_warmup: bool = False
    threshold: float = 0.95
    wu: float = 1.0
    seed: int = 0  # 0: model initialisation and augmentation are not seeded.


# Settings that do not change what a run computes, so a resumed run may change them.
RUNTIME_ONLY = ('workdir', 'data_dir')


def _check(ok: bool, flag: str, allowed: str, value) -> None:
    if not ok:
        raise ValueError(f'--{flag} must be {allowed}, got {value!r}')


def validate(cfg: Config) -> None:
    """Raises ValueError with a one-line message naming the first bad setting."""
    _check(
        cfg.dataset in datasets.DATASETS,
        'dataset',
        f'one of {list(datasets.DATASETS)}',
        cfg.dataset,
    )
    _check(cfg.arch in models.ARCHS, 'arch', f'one of {list(models.ARCHS)}', cfg.arch)
    _check(cfg.algorithm in ALGORITHMS, 'algorithm', f'one of {list(ALGORITHMS)}', cfg.algorithm)
    _check(cfg.dist_align in DIST_ALIGN, 'dist_align', f'one of {list(DIST_ALIGN)}', cfg.dist_align)
    _check(
        cfg.class_prior in CLASS_PRIORS,
        'class_prior',
        f'one of {list(CLASS_PRIORS)}',
        cfg.class_prior,
    )
    _check(cfg.imbalance >= 1, 'imbalance', '>= 1', cfg.imbalance)
    _check(0 < cfg.label_fraction <= 1, 'label_fraction', 'in (0, 1]', cfg.label_fraction)
    _check(cfg.fold >= 1, 'fold', '>= 1', cfg.fold)
    _check(cfg.alpha >= 0, 'alpha', '>= 0', cfg.alpha)
    _check(0 <= cfg.t_min <= 1, 't_min', 'in [0, 1]', cfg.t_min)
    _check(cfg.generations >= 1, 'generations', '>= 1', cfg.generations)
    _check(cfg.steps_per_generation >= 1, 'steps_per_generation', '>= 1', cfg.steps_per_generation)
    _check(cfg.eval_every >= 1, 'eval_every', '>= 1', cfg.eval_every)
    _check(cfg.batch_size >= 1, 'batch_size', '>= 1', cfg.batch_size)
    _check(cfg.uratio >= 1, 'uratio', '>= 1', cfg.uratio)
    _check(cfg.lr > 0, 'lr', '> 0', cfg.lr)
    _check(cfg.wd >= 0, 'wd', '>= 0', cfg.wd)
    _check(0 <= cfg.ema_decay < 1, 'ema_decay', 'in [0, 1)', cfg.ema_decay)
    _check(0 <= cfg.threshold <= 1, 'threshold', 'in [0, 1]', cfg.threshold)
    _check(cfg.seed >= 0, 'seed', '>= 0', cfg.seed)


def default_workdir(cfg: Config, root: str = 'runs') -> str:
    """root/<name=value,...> of the settings that differ from their defaults.

    E.g. `runs/dataset=fashion_mnist_lt,arch=cnn_small,fold=2`; `runs/paper` for the
    defaults. Runtime-only settings are left out.
    """
    default = dataclasses.asdict(Config())
    parts = [
        f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
        for k, v in dataclasses.asdict(cfg).items()
        if k not in RUNTIME_ONLY and v != default[k]
    ]
    return os.path.join(root, ','.join(parts) or 'paper')


def changed_settings(saved: dict, cfg: Config) -> list[str]:
    """Names of settings that differ from a saved args.json, ignoring runtime-only ones."""
    current = dataclasses.asdict(cfg)
    return [k for k in current if k not in RUNTIME_ONLY and saved.get(k) != current[k]]
