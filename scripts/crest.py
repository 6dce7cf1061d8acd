r"""Trains CReST / CReST+ on a long-tailed data set, generation by generation.

Paper setting (CIFAR-10-LT, gamma=100, beta=10%, FixMatch + CReST+, 6 generations of
2^16 steps, WRN-28-2; GPU work, about 1-2 GPU-hours per generation; paper: 78.1 +- 0.8):

  python scripts/crest.py --dataset=cifar10lt --imbalance=100 \
      --workdir=runs/cifar10lt_g100_f1

The methods of the paper's Table 2 by name, at its equal budget of 6 x 2^16 steps, e.g.
--method=fixmatch_crest or --method=mixmatch_crest_plus (`python -m crest.presets` lists
them); --total_steps sets another budget. Each algorithm's own hyperparameters are flags
named <algorithm>.<name>, e.g. --mixmatch.T=0.5; --helpfull lists every flag by group.
CPU demo on Fashion-MNIST-LT: scripts/demo.sh. Several GPUs are used as replicas of one
model, several machines when TF_CONFIG names a cluster (docs/distributed.md).

Writes WORKDIR/args.json, the fold under WORKDIR/data, one WORKDIR/gen_XX folder per
generation and WORKDIR/results.json (docs/run_folder.md). Re-running on the same workdir
skips finished generations and resumes an unfinished one from its last checkpoint.
"""

import os
import re
import sys

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from libml.startup import import_tensorflow  # noqa: E402

tf = import_tensorflow()  # First, so that TF's start-up lines are held back.

from absl import app, flags, logging  # noqa: E402

from crest import config as config_lib  # noqa: E402
from crest import loop, presets, workdir  # noqa: E402
from libml import distribute, records  # noqa: E402
from libml.algorithms import ALGORITHMS  # noqa: E402

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}


def _define(name, default, help, group, kind=None, choices=None):
    """A flag of type `kind` (default's type) in its --helpfull group, also in --helpshort."""
    module = f'crest: {group}'
    if choices:
        flags.DEFINE_enum(name, default, choices, help, module_name=module)
    else:
        _DEFINE.get(kind or type(default), flags.DEFINE_string)(
            name, default, help, module_name=module
        )
    flags.declare_key_flag(name)


# A flag per setting of Config, from its declaration (--class_order: a seed or a list).
for _f in config_lib.DECLARED:
    _help, _kind = _f.metadata['help'], None
    if _f.metadata['allowed']:
        _help += f' Allowed: {_f.metadata["allowed"]}.'
    if _f.default is None and _f.name != 'data_dir':  # The algorithm's paper setting.
        _help += ' ' + config_lib.paper_setting_help(_f.name)
        _kind = _f.type.__args__[0]
    _choices = _f.metadata['choices']  # A fixed tuple, or a registry checked by validate.
    _choices = list(_choices) if isinstance(_choices, tuple) else None
    _default = str(_f.default) if _f.name == 'class_order' else _f.default
    _define(_f.name, _default, _help, _f.metadata['group'], _kind, _choices)
for _name, _algorithm in ALGORITHMS.items():
    for _hparam, _value in _algorithm.hparam_defaults().items():
        _help = (
            f'{_algorithm.HPARAMS[_hparam].help} Allowed: {_algorithm.HPARAMS[_hparam].allowed}.'
            f' Only with --algorithm={_name}.'
        )
        _define(f'{_name}.{_hparam}', _value, _help, 'algorithm settings')
_define(
    'method',
    '',
    "A method of the paper's comparison: "
    + ', '.join(presets.METHODS)
    + '. Sets what makes it (crest/presets.py); flags given explicitly win.',
    'presets',
)
_define(
    'preset',
    '',
    "A data protocol's whole setting: "
    + ', '.join(presets.PROTOCOLS)
    + " (the paper's Table 4). Flags given explicitly win, then --method.",
    'presets',
)
_define(
    'total_steps',
    0,
    'With --method: the total training steps (paper Table 2 rule: a '
    'self-training method splits them into its generations, the others train one '
    f'generation of them all). Default: {presets.PAPER_BUDGET}.',
    'presets',
)
_define(
    'deterministic',
    True,
    'Run TensorFlow ops deterministically, so that the same run '
    'gives bit-identical numbers on the same machine and software.',
    'run',
)
MAX_CPU_THREADS = 1024
_define(
    'cpu_threads',
    0,
    f'Limit TF to this many threads (0: all cores), at most {MAX_CPU_THREADS}.',
    'run',
)
FLAGS = flags.FLAGS
STOPPED = 'stopped; resume with the same command'


def _given() -> dict:
    """The settings given as flags; the algorithm's own under 'hparams'."""
    given = {f.name: FLAGS[f.name].value for f in config_lib.DECLARED if FLAGS[f.name].present}
    if 'class_order' in given:
        given['class_order'] = config_lib.parse_class_order(given['class_order'])
    hparams = {}
    for name, cls in ALGORITHMS.items():
        for flag in (FLAGS[f'{name}.{hparam}'] for hparam in cls.HPARAMS):
            if flag.present:
                hparams[flag.name] = flag.value
    return {**given, 'hparams': hparams} if hparams else given


def _config() -> config_lib.Config:
    """The Config of the flags given over the presets named (crest/presets.py's rule);
    algorithm-dependent settings not given stay None."""
    given = _given()
    total = FLAGS.total_steps if FLAGS['total_steps'].present else None
    values = presets.combine(
        {k: v for k, v in given.items() if k != 'hparams'}, FLAGS.method, FLAGS.preset, total
    )
    algorithm = values.get('algorithm', config_lib.Config.algorithm)
    for flag, value in given.get('hparams', {}).items():
        name, hparam = flag.split('.', 1)
        if name != algorithm:
            raise ValueError(f'--{flag} applies to --algorithm={name} only')
        values['hparams'][hparam] = value
    return config_lib.Config(**values)


def _notes() -> list[str]:
    """Log lines for the flags given that override a preset's value or do nothing."""
    given = _given()
    hparams = {k.split('.', 1)[1]: v for k, v in given.pop('hparams', {}).items()}
    total = FLAGS.total_steps if FLAGS['total_steps'].present else None
    lines = presets.overrides({**given, 'hparams': hparams}, FLAGS.method, FLAGS.preset, total)
    cfg = config_lib.resolve(_config())
    return lines + config_lib.idle_settings(cfg, set(given))


def _from_preset(message: str) -> str:
    """`message`, naming the preset that set the flag it is about or, unless the flag was
    given explicitly, the data set the preset reads."""
    if FLAGS.preset not in presets.PROTOCOLS:
        return message
    given, protocol = _given(), presets.protocol_settings(FLAGS.preset)
    flag = re.match(r'--([\w.]+)', message)
    named = flag.group(1) if flag else None
    if named in protocol and named not in given:
        return f'{message} (set by --preset={FLAGS.preset}; a flag given explicitly wins)'
    if 'dataset' in protocol and 'dataset' not in given and named not in given:
        return f'{message} (--dataset={protocol["dataset"]}, set by --preset={FLAGS.preset})'
    return message


def _error_line(e: Exception) -> str:
    """An error's message in one line, without TensorFlow's wrapping: the
    `{{function_node __wrapped__...}}` prefix, a graph error's traceback of where the op
    was defined, the `[[{{node ...}}]]` and `[Op:...]` trailers."""
    text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', getattr(e, 'message', None) or str(e))
    skip = ('Graph execution error:', 'Detected at node', 'File "', '[[')
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(skip)] or [str(e)]
    return re.sub(r'\s*\[Op:[^\]]*\]( name: \S*)?\s*$', '', lines[0])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
        cfg = config_lib.resolve(_config())
        config_lib.validate(cfg)
        if not 0 <= FLAGS.cpu_threads <= MAX_CPU_THREADS:
            raise ValueError(
                f'--cpu_threads must be in [0, {MAX_CPU_THREADS}] (0: all cores), '
                f'got {FLAGS.cpu_threads}'
            )
    except ValueError as e:
        sys.exit(f'error: {_from_preset(str(e))}')
    for line in _notes():
        print(line, flush=True)

    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    if FLAGS.cpu_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.cpu_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.cpu_threads)
    logging.set_verbosity(logging.WARNING)
    try:
        strategy = distribute.strategy_from_environment()
        log = lambda msg: print(msg, flush=True)  # noqa: E731
        worker = workdir.worker_folder(strategy)
        if worker:  # Progress is the chief's to report.
            print(f'{worker[1:]}: training in lockstep with the chief; output in {worker}/')
            log = lambda msg: None  # noqa: E731
        loop.run(cfg, strategy=strategy, log=log)
    except (ValueError, records.DataError, OSError, tf.errors.OpError) as e:
        # OSError and TensorFlow's errors: a disk that is full or a file that cannot be
        # written, mostly; their message names the file.
        message = _error_line(e)
        sys.exit(f'error: {_from_preset(message) if isinstance(e, records.DataError) else message}')
    except KeyboardInterrupt:
        # Every file is written whole or not at all, and the lock goes with the process.
        print(STOPPED, file=sys.stderr, flush=True)
        sys.exit(130)


def run():
    """The `crest` command of the installed package (pyproject.toml)."""
    from . import run_as_program

    run_as_program(sys.modules[__name__])


if __name__ == '__main__':
    app.run(main)
