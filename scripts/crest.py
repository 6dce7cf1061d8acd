r"""Trains CReST / CReST+ on a long-tailed data set, generation by generation.

Paper setting (CIFAR-10-LT, gamma=100, beta=10%, FixMatch + CReST+, 6 generations of
2^16 steps, WRN-28-2; GPU work, about 1-2 GPU-hours per generation; paper: 78.1 +- 0.8):

  python scripts/crest.py --dataset=cifar10lt --imbalance=100 \
      --workdir=runs/cifar10lt_g100_f1

CReST (no alignment, 15 generations): add --dist_align=none --generations=15.
FixMatch alone: --generations=1 --dist_align=none.
MixMatch + CReST+ (paper Table 2, 3 generations of 2^17 steps; paper: 66.1):
--algorithm=mixmatch --generations=3; alpha, t_min, the steps and the batch then default
to MixMatch's (1/2, 0.8, 2^17, 64 + 64 images).

Each algorithm's own hyperparameters are flags named <algorithm>.<name>, e.g.
--mixmatch.T=0.5 or --fixmatch.threshold=0.95 (see --helpfull).

The methods of the paper's Table 2 by name, at its equal budget of 6 x 2^16 steps, e.g.
--method=fixmatch_rs or --method=mixmatch_crest_plus (`python -m crest.methods` lists
them); --total_steps sets another budget. Every run also reports its balanced accuracy
after post-hoc logit adjustment (LA).

CPU demo on Fashion-MNIST-LT: see scripts/demo.sh.

Several GPUs are used as replicas of one model; several machines when TF_CONFIG names
a cluster (run the same command on each; README, "Several GPUs and machines").
--batch_size is the global batch however many replicas there are.

Writes WORKDIR/args.json, the fold under WORKDIR/data, one WORKDIR/gen_XX folder per
generation (checkpoints, TensorBoard logs, exported labeled.tfrecord, picks.json,
metrics.json) and WORKDIR/results.json. Re-running on the same workdir skips finished
generations and resumes an unfinished one from its last checkpoint.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Keep TF's C++ start-up chatter out.

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from crest import config as config_lib  # noqa: E402
from crest import loop, methods, presets, rebalance  # noqa: E402
from libml import folds, records  # noqa: E402
from libml.algorithms import ALGORITHMS  # noqa: E402

_DEFAULT = config_lib.Config()


def _per_algorithm(setting: str) -> str:
    """'Default: 0.333 (fixmatch), 0.5 (mixmatch).' for a setting left None."""
    values = ', '.join(
        f'{d[setting]:.3g} ({name})' if isinstance(d[setting], float) else f'{d[setting]} ({name})'
        for name, d in config_lib.ALGORITHM_DEFAULTS.items()
    )
    return f'Default: {values}.'


flags.DEFINE_string(
    'workdir',
    _DEFAULT.workdir,
    'Run folder (local or any tf.io.gfile path). Default: runs/<flags that differ '
    'from their defaults>, e.g. runs/fold=2,imbalance=50.',
)
flags.DEFINE_string(
    'dataset',
    _DEFAULT.dataset,
    "cifar10lt, cifar100lt, fashion_mnist_lt, cifar10_darp (DARP's fixed split, the "
    "paper's Table 3), synthetic_lt (generated, no download); or your own images, used "
    'as they are: folder (--data_dir with labeled/<class>/, unlabeled/, test/<class>/) '
    'or npz (--data_dir=file.npz).',
)
flags.DEFINE_string(
    'data_dir',
    None,
    'Folder with the official files (CIFAR binary archives, Fashion-MNIST '
    'IDX). Default: Debian files for Fashion-MNIST, else tensorflow-datasets. For '
    '--dataset=folder or npz: your images folder or .npz file.',
)
flags.DEFINE_integer(
    'image_size',
    _DEFAULT.image_size,
    'With --dataset=folder or npz: resize images to this square side in pixels. '
    "Default (0): the median side of a folder's images, an npz file's own size.",
)
flags.DEFINE_enum(
    'bad_images',
    _DEFAULT.bad_images,
    list(folds.BAD_IMAGES),
    'With --dataset=folder: an unreadable image file stops the run, naming it (stop), '
    "or is left out and listed in the log and the fold's counts.json (skip).",
)
flags.DEFINE_float('imbalance', _DEFAULT.imbalance, 'gamma = N_1 / N_L, >= 1.')
flags.DEFINE_string(
    'class_order',
    str(_DEFAULT.class_order),
    'Which classes are rare: 0 keeps the source label order (class 0 the largest), k > 0 '
    'ranks the classes by a permutation seeded by k, a list like 6,4,2,0,9,1,3,5,7,8 puts '
    'source class 6 at rank 0 (the largest), 4 at rank 1, ... Built-in long-tailed data '
    'sets only.',
)
flags.DEFINE_float('label_fraction', _DEFAULT.label_fraction, 'beta, labeled share per class.')
flags.DEFINE_integer('fold', _DEFAULT.fold, 'Labeled/unlabeled split, 1..5 in the paper.')
flags.DEFINE_enum(
    'algorithm',
    _DEFAULT.algorithm,
    list(ALGORITHMS),
    'Semi-supervised learner; its own settings are the --<algorithm>.<name> flags.',
)
flags.DEFINE_string('arch', _DEFAULT.arch, 'wrn28_2 (paper) or cnn_small (CPU).')
flags.DEFINE_string(
    'precision',
    _DEFAULT.precision,
    'float32, or bf16: mixed precision (bfloat16 compute, float32 variables, logits and '
    'losses), for GPUs and CPUs with bfloat16 instructions.',
)
flags.DEFINE_bool(
    'xla',
    _DEFAULT.xla,
    'Compile the train step with XLA: for GPUs (on CPUs it was slower, see README).',
)
flags.DEFINE_enum(
    'stream',
    _DEFAULT.stream,
    list(config_lib.STREAM),
    "Stream images from the fold's TFRecords instead of holding them in memory: "
    'always, never, or auto (when they take over 4 GiB decoded). A streamed stream is '
    'shuffled through a buffer of 10,000 records, kept in every checkpoint.',
)
flags.DEFINE_integer('generations', _DEFAULT.generations, 'Self-training generations G.')
flags.DEFINE_float(
    'alpha',
    None,
    'Paper alpha: mu_l = (N_{L+1-l}/N_1)^alpha; 0 keeps every pseudo-label. '
    + _per_algorithm('alpha'),
)
flags.DEFINE_enum(
    'dist_align',
    _DEFAULT.dist_align,
    list(config_lib.DIST_ALIGN),
    'Distribution alignment: none (CReST), constant t=t_min, or progressive '
    '(CReST+: t from 1 to t_min over the generations).',
)
flags.DEFINE_float(
    't_min', None, 'Final alignment temperature, in [0, 1]. ' + _per_algorithm('t_min')
)
flags.DEFINE_enum(
    'class_prior',
    _DEFAULT.class_prior,
    list(config_lib.CLASS_PRIORS),
    'p(y) for rates and alignment: labeled-set counts (paper) or the analytic '
    'gamma law (reference code).',
)
flags.DEFINE_integer(
    'steps_per_generation', None, 'Train steps. ' + _per_algorithm('steps_per_generation')
)
flags.DEFINE_integer('eval_every', _DEFAULT.eval_every, 'Steps between evaluations.')
flags.DEFINE_integer(
    'batch_size',
    _DEFAULT.batch_size,
    'Labeled images per step in all (the global batch, split over the GPUs and machines).',
)
flags.DEFINE_integer(
    'uratio', None, 'Unlabeled images per labeled image. ' + _per_algorithm('uratio')
)
flags.DEFINE_float('lr', _DEFAULT.lr, 'SGD Nesterov learning rate.')
flags.DEFINE_float(
    'lr_decay_level',
    _DEFAULT.lr_decay_level,
    'lr * cos(pi * level * k / (16 K)): 1 (reference), 7 (FixMatch).',
)
flags.DEFINE_float('wd', _DEFAULT.wd, 'Coupled L2 weight decay.')
flags.DEFINE_float('ema_decay', _DEFAULT.ema_decay, 'Decay of the evaluated EMA model.')
flags.DEFINE_bool(
    'ema_warmup',
    _DEFAULT.ema_warmup,
    'EMA decay min(decay, (1+k)/(10+k)): for runs of a few hundred steps.',
)
flags.DEFINE_integer(
    'seed',
    _DEFAULT.seed,
    'Seed of every random draw (initialisation, data order, augmentation, mixup): the '
    'same flags and seed give the same run, resumed or not.',
)
flags.DEFINE_bool(
    'deterministic',
    True,
    'Run TensorFlow ops deterministically (tf.config.experimental.enable_op_determinism), '
    'so that the same run gives bit-identical numbers on the same machine and software.',
)
flags.DEFINE_enum(
    'labeled_weights',
    _DEFAULT.labeled_weights,
    list(rebalance.LABELED_WEIGHTS),
    "Class weights of the labeled loss: class_balanced (Cui et al. 2019, the paper's CB), "
    "inverse_frequency (the reference code's), or none.",
)
flags.DEFINE_float('cb_beta', _DEFAULT.cb_beta, 'beta of the class_balanced weights.')
flags.DEFINE_bool(
    'resample', _DEFAULT.resample, 'Class-balanced labeled batches (re-sampling, RS).'
)
flags.DEFINE_string(
    'method',
    '',
    "A method of the paper's comparison by name (crest/methods.py): "
    + ', '.join(methods.METHODS)
    + '. Sets the settings that make it; flags given explicitly win.',
)
flags.DEFINE_string(
    'preset',
    '',
    "A data protocol's whole setting by name (crest/presets.py): "
    + ', '.join(presets.PRESETS)
    + " (the paper's Table 4). Flags given explicitly win.",
)
flags.DEFINE_integer(
    'total_steps',
    methods.PAPER_BUDGET,
    'With --method: the total training steps (paper Table 2 rule: a self-training method '
    'splits them into its generations, the others train one generation of them all).',
)
flags.DEFINE_integer('cpu_threads', 0, 'Limit TF to this many threads (0: all cores).')

# One flag per hyperparameter of every algorithm, with the algorithm's default.
_DEFINE_BY_TYPE = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}
for _name, _algorithm in ALGORITHMS.items():
    for _hparam, _default in _algorithm.hparam_defaults().items():
        _DEFINE_BY_TYPE[type(_default)](
            f'{_name}.{_hparam}',
            _default,
            f'{_algorithm.HPARAMS[_hparam].help} Only with --algorithm={_name}.',
        )

FLAGS = flags.FLAGS


def _config() -> config_lib.Config:
    """The Config of the flags, with --method's preset under the flags given explicitly;
    algorithm-dependent settings not given stay None."""
    fields = config_lib.Config.__dataclass_fields__
    values = {field: FLAGS[field].value for field in fields if field in FLAGS}
    values['class_order'] = config_lib.parse_class_order(FLAGS.class_order)
    preset_hparams, preset_algorithm = {}, None
    if FLAGS.preset:
        preset = presets.settings(FLAGS.preset)
        preset_hparams, preset_algorithm = preset.pop('hparams', {}), preset.get('algorithm')
        values.update({k: v for k, v in preset.items() if k not in FLAGS or not FLAGS[k].present})
    if FLAGS.method:
        explicit = FLAGS['generations'].present
        preset = methods.settings(
            FLAGS.method, FLAGS.total_steps, FLAGS.generations if explicit else None
        )
        values.update({k: v for k, v in preset.items() if k not in FLAGS or not FLAGS[k].present})
        values['method'] = preset['method']
    elif FLAGS['total_steps'].present:
        raise ValueError('--total_steps applies with --method only')
    # A preset's algorithm settings apply only if its algorithm is the one that runs.
    values['hparams'] = dict(preset_hparams) if values['algorithm'] == preset_algorithm else {}
    for name, algorithm in ALGORITHMS.items():
        for hparam in algorithm.HPARAMS:
            flag = FLAGS[f'{name}.{hparam}']
            if not flag.present:
                continue
            if name != values['algorithm']:
                raise ValueError(f'--{flag.name} applies to --algorithm={name} only')
            values['hparams'][hparam] = flag.value
    return config_lib.Config(**values)


def _strategy() -> tf.distribute.Strategy | None:
    """Across machines when TF_CONFIG describes a cluster (one replica per GPU of every
    worker, or one per CPU-only worker); else one replica per GPU of this machine."""
    tf_config = os.environ.get('TF_CONFIG')
    if tf_config:
        try:
            cluster = json.loads(tf_config)
            task = cluster['task']
            workers = [*cluster['cluster'].get('chief', []), *cluster['cluster']['worker']]
            str(task['type']), int(task['index'])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", '
                f'"host2:port"]}}, "task": {{"type": "worker", "index": 0}}}} ({e!r})'
            ) from e
        print(f'{task["type"]} {task["index"]} of a {len(workers)}-machine cluster', flush=True)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices('GPU')
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
        cfg = config_lib.resolve(_config())
        config_lib.validate(cfg)
    except ValueError as e:
        sys.exit(f'error: {e}')

    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    if FLAGS.cpu_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.cpu_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.cpu_threads)
    logging.set_verbosity(logging.WARNING)
    try:
        strategy = _strategy()
        log = lambda msg: print(msg, flush=True)  # noqa: E731
        worker = loop.worker_folder(strategy)
        if worker:  # Progress is the chief's to report.
            print(f'{worker[1:]}: training in lockstep with the chief; output in {worker}/')
            log = lambda msg: None  # noqa: E731
        loop.run(cfg, strategy=strategy, log=log)
    except (ValueError, records.DataError, OSError, tf.errors.OpError) as e:
        # OSError and TensorFlow's errors: a disk that is full or a file that cannot be
        # written, mostly; their message names the file.
        sys.exit(f'error: {(getattr(e, "message", None) or str(e)).splitlines()[0]}')


if __name__ == '__main__':
    app.run(main)
