"""The methods of the paper's comparison (Tables 2 and 3) as named presets.

A preset is the settings that make a method (`Config` fields: algorithm, alignment,
alpha, rebalancing options) and its number of generations at the paper's Table 2
budget. The Table 2 rule gives every method the same total number of steps: a
self-training method (more than one generation) splits it into its generations, the
others train one generation of the whole budget. `settings(name, total_steps)` applies
that rule; explicit settings given on top of a preset win.

Two presets train nothing of their own: "+ LA" is the post-hoc logit adjustment that
every run reports next to its plain number, so FixMatch + LA is read off a FixMatch run
(`trains_as`).

This module imports nothing heavy, so that shell scripts can list the presets quickly:
`python -m crest.methods` prints one line per preset: name, kind, title.
"""

import dataclasses
import sys

# The paper's Table 2 budget: 6 x 2^16 steps for every method.
PAPER_BUDGET = 6 * 2**16


@dataclasses.dataclass(frozen=True)
class Method:
    title: str  # As in the paper's tables.
    settings: dict  # Config values that make the method.
    generations: int = 1  # At the paper's budget; > 1 makes a self-training method.
    trains_as: str | None = None  # A preset whose run this one is read from.
    logit_adjusted: bool = False  # Its number is the logit-adjusted one.
    paper: str = ''  # The paper's number: CIFAR-10-LT, gamma = 100, beta = 10%.


_NO_DA = dict(dist_align='none')

METHODS = {
    'supervised': Method(
        'Supervised', dict(algorithm='supervised', **_NO_DA), paper='58.8 (Table 3, DARP split)'
    ),
    'pseudo_label': Method(
        'Pseudo-Labeling', dict(algorithm='pseudo_label', **_NO_DA), paper='46.5'
    ),
    'mean_teacher': Method('Mean Teacher', dict(algorithm='mean_teacher', **_NO_DA), paper='48.1'),
    'mixmatch': Method('MixMatch', dict(algorithm='mixmatch', **_NO_DA), paper='60.4'),
    'mixmatch_crest': Method(
        'MixMatch + CReST', dict(algorithm='mixmatch', **_NO_DA), generations=3, paper='60.5'
    ),
    'mixmatch_crest_plus': Method(
        'MixMatch + CReST+',
        dict(algorithm='mixmatch', dist_align='progressive'),
        generations=3,
        paper='66.1',
    ),
    'fixmatch': Method('FixMatch', dict(algorithm='fixmatch', **_NO_DA), paper='67.3'),
    'fixmatch_cb': Method(
        'FixMatch + CB',
        dict(algorithm='fixmatch', labeled_weights='class_balanced', **_NO_DA),
        paper='67.6',
    ),
    'fixmatch_rs': Method(
        'FixMatch + RS', dict(algorithm='fixmatch', resample=True, **_NO_DA), paper='69.6'
    ),
    'fixmatch_da1': Method(
        'FixMatch + DA (t=1)',
        dict(algorithm='fixmatch', dist_align='constant', t_min=1.0),
        paper='69.7',
    ),
    'fixmatch_da05': Method(
        'FixMatch + DA (t=0.5)',
        dict(algorithm='fixmatch', dist_align='constant', t_min=0.5),
        paper='73.6',
    ),
    'fixmatch_la': Method(
        'FixMatch + LA',
        dict(algorithm='fixmatch', **_NO_DA),
        trains_as='fixmatch',
        logit_adjusted=True,
        paper='70.4',
    ),
    'fixmatch_crest': Method(
        'FixMatch + CReST', dict(algorithm='fixmatch', **_NO_DA), generations=6, paper='74.8'
    ),
    'fixmatch_crest_plus': Method(
        'FixMatch + CReST+',
        dict(algorithm='fixmatch', dist_align='progressive'),
        generations=6,
        paper='78.1',
    ),
    'fixmatch_crest_plus_la': Method(
        'FixMatch + CReST+ & LA',
        dict(algorithm='fixmatch', dist_align='progressive'),
        generations=6,
        trains_as='fixmatch_crest_plus',
        logit_adjusted=True,
        paper='81.2',
    ),
    'alpha0': Method(
        'Self-training (alpha=0)', dict(algorithm='fixmatch', alpha=0.0, **_NO_DA), generations=6
    ),
}

# Names earlier versions gave some of these methods (run folders made then still read).
ALIASES = {
    'crest': 'fixmatch_crest',
    'crest_plus': 'fixmatch_crest_plus',
    'fixmatch_da': 'fixmatch_da05',
}


def canonical(name: str) -> str:
    """The registry name of `name`, an alias or a registry name; ValueError otherwise."""
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise ValueError(f'--method must be one of {list(METHODS)}, got {name!r}')
    return name


def settings(name: str, total_steps: int = PAPER_BUDGET, generations: int | None = None) -> dict:
    """The Config values of preset `name` at a total budget of `total_steps` steps.

    A self-training preset trains `generations` (default: its own) generations of
    total_steps // generations steps; the others one generation of total_steps.
    """
    name = canonical(name)
    method = METHODS[name]
    if method.generations == 1 or generations is None:
        generations = method.generations
    return dict(
        method.settings,
        method=name,
        generations=generations,
        steps_per_generation=max(1, total_steps // generations),
    )


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
