r"""Writes one labeled/unlabeled fold of a long-tailed data set as TFRecords.

  python scripts/create_datasets.py --dataset=fashion_mnist_lt --imbalance=100 \
      --label_fraction=0.1 --fold=1 --output_dir=data/fmnist_g100_b10_f1

Produces OUTPUT_DIR/{labeled,unlabeled,test}.tfrecord (tf.train.Example with `image`
PNG, `label`, `id` = index in the source split) and OUTPUT_DIR/counts.json with the
per-class counts. A few seconds for Fashion-MNIST (offline, Debian files) or CIFAR from
local binary archives (--data_dir). scripts/crest.py calls the same code on first use.
"""

import os
import sys

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from libml.startup import import_tensorflow  # noqa: E402

tf = import_tensorflow()  # First, so that TF's start-up lines are held back.

from absl import app, flags  # noqa: E402

from crest import config as config_lib  # noqa: E402
from libml import datasets, folds, lt, records  # noqa: E402

flags.DEFINE_enum('dataset', 'cifar10lt', list(datasets.DATASETS), 'Data set.')
flags.DEFINE_float('imbalance', 100.0, 'gamma = N_1 / N_L, >= 1.')
flags.DEFINE_float('label_fraction', 0.1, 'beta, labeled share of each class, in (0, 1).')
flags.DEFINE_integer('fold', 1, 'Labeled/unlabeled split seed, >= 1.')
flags.DEFINE_string('data_dir', None, 'Folder with the official files (see libml/datasets/).')
flags.DEFINE_integer('image_size', 0, 'folder/npz: square side to resize to; 0: median/own.')
flags.DEFINE_string(
    'class_order',
    '0',
    'Rare classes: 0 source order, k > 0 seeded permutation, or classes from the head '
    'down: 6,4,2,0,9,1,3,5,7,8.',
)
flags.DEFINE_enum('bad_images', 'stop', list(folds.BAD_IMAGES), 'folder: unreadable files.')
flags.DEFINE_enum(
    'unlabeled_distribution',
    'same',
    list(lt.UNLABELED_DISTRIBUTIONS),
    "Unlabeled images' class distribution (built-in long-tailed sets): see docs/data.md.",
)
flags.DEFINE_string('output_dir', None, 'Where to write the fold.')
flags.mark_flag_as_required('output_dir')

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
        cfg = config_lib.Config(
            dataset=FLAGS.dataset,
            imbalance=FLAGS.imbalance,
            label_fraction=FLAGS.label_fraction,
            fold=FLAGS.fold,
            data_dir=FLAGS.data_dir,
            image_size=FLAGS.image_size,
            bad_images=FLAGS.bad_images,
            class_order=config_lib.parse_class_order(FLAGS.class_order),
            unlabeled_distribution=FLAGS.unlabeled_distribution,
        )
        config_lib.validate(config_lib.resolve(cfg))  # The trainer's checks of these flags.
        if tf.io.gfile.exists(FLAGS.output_dir) and not tf.io.gfile.isdir(FLAGS.output_dir):
            raise ValueError(f'--output_dir {FLAGS.output_dir}: exists and is not a folder')
        summary = folds.create_fold(
            datasets.get(FLAGS.dataset), config_lib.fold_spec(cfg), FLAGS.output_dir
        )
    except (ValueError, records.DataError, OSError, tf.errors.OpError) as e:
        sys.exit(f'error: {(getattr(e, "message", None) or str(e)).splitlines()[0]}')
    for split in folds.fold_splits(summary):
        print(f'{split:10s} {sum(summary[split]):6d}  per class {summary[split]}')


if __name__ == '__main__':
    app.run(main)
