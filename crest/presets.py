"""Named presets: the settings that make a method of the paper's comparison (Tables 2
and 3), or a whole data protocol (Table 4's ImageNet127), in one registry.

A preset is a set of `Config` values with what the tables say of it. Two kinds:
  - a method (`--method`): the algorithm, alignment, alpha and rebalancing options, and
    its number of generations at the paper's Table 2 budget. The Table 2 rule gives every
    method the same total number of steps: a self-training method (more than one
    generation) splits it into its generations, the others train one generation of the
    whole budget (`settings(name, total_steps)`).
  - a protocol (`--preset`): the data set, network, batch and schedule of an experiment.

One precedence rule makes a run's settings (`combine`): a flag given explicitly, then
the method preset, then the protocol preset, then the algorithm's paper settings (see
`Config` fields left None), then the global defaults of `Config`.

Two method presets train nothing of their own: "+ LA" is the post-hoc logit adjustment
that every run reports next to its plain number, so FixMatch + LA is read off a FixMatch
run (`trains_as`).

This module imports nothing heavy, so that shell scripts can list the presets quickly:
`python -m crest.presets` prints one line per method preset: name, kind, title.
"""

import dataclasses
import sys

# The paper's Table 2 budget: 6 x 2^16 steps for every method.
PAPER_BUDGET = 6 * 2**16
# 100 times the paper's budget.
MAX_TOTAL_STEPS = 100 * PAPER_BUDGET
# A generation's steps at most: --steps_per_generation's bound (crest/config.py reads it
# from here; this module imports no TensorFlow, the reports' scripts read it).
MAX_STEPS = 10_000_000


@dataclasses.dataclass(frozen=True)
class Preset:
    title: str  # As in the paper's tables.
    settings: dict  # Config values that make it.
    protocol: bool = False  # A data protocol (--preset) rather than a method (--method).
    generations: int = 1  # At the paper's budget; > 1 makes a self-training method.
    trains_as: str | None = None  # A preset whose run this one is read from.
    logit_adjusted: bool = False  # Its number is the logit-adjusted one.
    paper: str = ''  # The paper's number: CIFAR-10-LT, gamma = 100, beta = 10%.


_NO_DA = dict(dist_align='none')

# ImageNet127 is the paper's Table 4 setting (section 4.2): beta = 10%, ResNet-50, 3
# generations with alpha = 0.7 and t_min = 0.5, each generation trained with FixMatch's
# ImageNet hyperparameters, taken from FixMatch's own ImageNet code
# (google-research/fixmatch, imagenet/): threshold 0.7, unlabeled loss weight 10, 1024
# labeled + 5 x 1024 unlabeled images per step, SGD with Nesterov momentum at lr 0.4
# (0.1 per 256 labeled images), weight decay 3e-4 on sum(w^2) (6e-4 in this project's
# 0.5 sum(w^2) convention), EMA 0.999, 224 x 224 images, and its training length: 3,000
# epochs of the labeled examples (its README: an epoch of the 10% labeled set is 10 times
# shorter than one of ImageNet), 3,000 x 128,117 / 1,024 = 375,000 steps (rounded).
# Differences, all this project's: the learning rate follows its cosine decay (level 7,
# FixMatch's CIFAR one) instead of FixMatch's warmup and step decay; the augmentations
# are the CIFAR ones (pad and crop, flip; RandAugment and Cutout), not an Inception crop;
# and images are resized once, when the fold is written. The paper gives no more detail
# of its ImageNet127 runs.
_IMAGENET127 = dict(
    dataset='imagenet127',
    label_fraction=0.1,
    image_size=224,
    arch='resnet50',
    algorithm='fixmatch',
    hparams=dict(threshold=0.7, wu=10.0),
    batch_size=1024,
    uratio=5,
    lr=0.4,
    lr_decay_level=7.0,
    wd=6e-4,
    ema_decay=0.999,
    steps_per_generation=375_000,
    generations=3,
    alpha=0.7,
    t_min=0.5,
    dist_align='progressive',
)

PRESETS = {
    'supervised': Preset(
        'Supervised', dict(algorithm='supervised', **_NO_DA), paper='58.8 (Table 3, DARP split)'
    ),
    'pseudo_label': Preset(
        'Pseudo-Labeling', dict(algorithm='pseudo_label', **_NO_DA), paper='46.5'
    ),
    'mean_teacher': Preset('Mean Teacher', dict(algorithm='mean_teacher', **_NO_DA), paper='48.1'),
    'mixmatch': Preset('MixMatch', dict(algorithm='mixmatch', **_NO_DA), paper='60.4'),
    'mixmatch_crest': Preset(
        'MixMatch + CReST', dict(algorithm='mixmatch', **_NO_DA), generations=3, paper='60.5'
    ),
    'mixmatch_crest_plus': Preset(
        'MixMatch + CReST+',
        dict(algorithm='mixmatch', dist_align='progressive'),
        generations=3,
        paper='66.1',
    ),
    'fixmatch': Preset('FixMatch', dict(algorithm='fixmatch', **_NO_DA), paper='67.3'),
    'fixmatch_cb': Preset(
        'FixMatch + CB',
        dict(algorithm='fixmatch', labeled_weights='class_balanced', **_NO_DA),
        paper='67.6',
    ),
    'fixmatch_rs': Preset(
        'FixMatch + RS', dict(algorithm='fixmatch', resample=True, **_NO_DA), paper='69.6'
    ),
    'fixmatch_da1': Preset(
        'FixMatch + DA (t=1)',
        dict(algorithm='fixmatch', dist_align='constant', t_min=1.0),
        paper='69.7',
    ),
    'fixmatch_da05': Preset(
        'FixMatch + DA (t=0.5)',
        dict(algorithm='fixmatch', dist_align='constant', t_min=0.5),
        paper='73.6',
    ),
    'fixmatch_la': Preset(
        'FixMatch + LA',
        dict(algorithm='fixmatch', **_NO_DA),
        trains_as='fixmatch',
        logit_adjusted=True,
        paper='70.4',
    ),
    'fixmatch_crest': Preset(
        'FixMatch + CReST', dict(algorithm='fixmatch', **_NO_DA), generations=6, paper='74.8'
    ),
    'fixmatch_crest_plus': Preset(
        'FixMatch + CReST+',
        dict(algorithm='fixmatch', dist_align='progressive'),
        generations=6,
        paper='78.1',
    ),
    'fixmatch_crest_plus_la': Preset(
        'FixMatch + CReST+ & LA',
        dict(algorithm='fixmatch', dist_align='progressive'),
        generations=6,
        trains_as='fixmatch_crest_plus',
        logit_adjusted=True,
        paper='81.2',
    ),
    'alpha0': Preset(
        'Self-training (alpha=0)', dict(algorithm='fixmatch', alpha=0.0, **_NO_DA), generations=6
    ),
    'imagenet127': Preset('ImageNet127 (Table 4)', _IMAGENET127, protocol=True),
}

# The methods of the paper's comparison: the presets --method takes.
METHODS = {name: p for name, p in PRESETS.items() if not p.protocol}
PROTOCOLS = {name: p for name, p in PRESETS.items() if p.protocol}


def canonical(name: str) -> str:
    """The registry name of method `name`; ValueError otherwise."""
    if name not in METHODS:
        raise ValueError(f'--method must be one of {list(METHODS)}, got {name!r}')
    return name


def settings(name: str, total_steps: int = PAPER_BUDGET, generations: int | None = None) -> dict:
    """The Config values of method preset `name` at a total budget of `total_steps` steps.

    A self-training preset trains `generations` (default: its own) generations of
    total_steps // generations steps; the others one generation of total_steps.
    """
    method = METHODS[canonical(name)]
    if method.generations == 1 or generations is None:
        generations = method.generations
    return dict(
        method.settings,
        method=name,
        generations=generations,
        steps_per_generation=max(1, total_steps // generations),
    )


def protocol_settings(name: str) -> dict:
    """The Config values of protocol preset `name`; ValueError for an unknown name."""
    if name not in PROTOCOLS:
        raise ValueError(f'--preset must be one of {list(PROTOCOLS)}, got {name!r}')
    return {**PROTOCOLS[name].settings, 'preset': name}


def combine(
    explicit: dict,
    method: str = '',
    preset: str = '',
    total_steps: int | None = None,
) -> dict:
    """Config values by the one precedence rule: `explicit` (the flags given) over the
    method preset over the protocol preset. Settings none of them gives are left out (the
    algorithm's paper settings and Config's defaults fill them in).

    The protocol's algorithm hyperparameters apply only if its algorithm is the one that
    runs; an explicit `generations` is the method's number of generations.
    """
    values, hparams, algorithm = {}, {}, None
    if preset:
        protocol = protocol_settings(preset)
        hparams, algorithm = protocol.pop('hparams', {}), protocol.get('algorithm')
        values.update(protocol)
    if method:
        values.update(
            settings(
                method,
                PAPER_BUDGET if total_steps is None else total_steps,
                explicit.get('generations'),
            )
        )
        given = values['generations']
        # At most MAX_STEPS per generation (--steps_per_generation's bound).
        most = min(MAX_TOTAL_STEPS, given * MAX_STEPS)
        if total_steps is not None and not given <= total_steps <= most:
            raise ValueError(
                f'--total_steps must be in [{given}, {most:,}] with --method={method} '
                f'(at least one step and at most {MAX_STEPS:,} for each of its {given} '
                f'generation(s)), got {total_steps}'
            )
    elif total_steps is not None:
        raise ValueError('--total_steps applies with --method only')
    values.update({k: v for k, v in explicit.items() if k != 'hparams'})
    runs = values.get('algorithm', 'fixmatch')
    values['hparams'] = {**(hparams if runs == algorithm else {}), **explicit.get('hparams', {})}
    return values


def overrides(
    explicit: dict, method: str = '', preset: str = '', total_steps: int | None = None
) -> list[str]:
    """One line per setting given explicitly that replaces the value a named preset
    sets, e.g. "--algorithm=fixmatch overrides --method=mixmatch's algorithm=mixmatch"."""
    named = []
    if preset:
        protocol = protocol_settings(preset)
        named.append((f'--preset={preset}', protocol, protocol.get('hparams', {})))
    if method:
        budget = PAPER_BUDGET if total_steps is None else total_steps
        named.append(
            (f'--method={method}', settings(method, budget, explicit.get('generations')), {})
        )
    lines = []
    for flag, values, hparams in named:
        algorithm = values.get('algorithm')
        for key, value in explicit.items():
            if key in values and key != 'hparams' and values[key] != value:
                lines.append(f"--{key}={value} overrides {flag}'s {key}={values[key]}")
        for key, value in explicit.get('hparams', {}).items():
            if key in hparams and hparams[key] != value:
                name = f'{algorithm}.{key}'
                lines.append(f"--{name}={value} overrides {flag}'s {name}={hparams[key]}")
    return lines


def kind(name: str) -> str:
    """'derived' (read off another preset's run), 'self_training' or 'single'."""
    method = METHODS[canonical(name)]
    if method.trains_as:
        return 'derived'
    return 'self_training' if method.generations > 1 else 'single'


if __name__ == '__main__':
    try:
        names = [canonical(name) for name in sys.argv[1:] or METHODS]
    except ValueError as e:
        sys.exit(f'error: {e}')
    for name in names:
        print(name, kind(name), METHODS[name].title, sep='\t')
