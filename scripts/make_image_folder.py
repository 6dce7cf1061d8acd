r"""Writes a long-tailed fold of a built-in data set as a folder of PNG files, in the
layout `--dataset=folder` reads: an example of your own images.

  python scripts/make_image_folder.py --output_dir=data/fashion_mnist_folder

makes, from Fashion-MNIST-LT (imbalance 100, 10% labeled, fold 1; offline from the
Debian files):
  OUTPUT_DIR/labeled/<class>/<id>.png     1,244 images of 10 classes (500 ... 5)
  OUTPUT_DIR/unlabeled/<class>/<id>.png   11,162 images; --nounlabeled_classes puts
                                          them all in unlabeled/ (class unknown)
  OUTPUT_DIR/test/<class>/<id>.png        10,000 images (balanced)
<id> is the image's index in the source's train (test) split, so a run's picks can be
traced back. Class folders are named after the classes ('/' becomes '-'). About 15 s on
2 CPU cores. Then: bash scripts/demo_folder.sh (or scripts/crest.py --dataset=folder
--data_dir=OUTPUT_DIR).
"""

import os
import sys

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from libml.startup import import_tensorflow  # noqa: E402

tf = import_tensorflow()  # First, so that TF's start-up lines are held back.

from absl import app, flags  # noqa: E402

from crest import config as config_lib  # noqa: E402
from libml import datasets, records  # noqa: E402

flags.DEFINE_enum(
    'dataset',
    'fashion_mnist_lt',
    datasets.long_tailed(),
    'Built-in data set.',
)
flags.DEFINE_float('imbalance', 100.0, 'gamma = N_1 / N_L, >= 1.')
flags.DEFINE_float('label_fraction', 0.1, 'beta, labeled share of each class, in (0, 1).')
flags.DEFINE_integer('fold', 1, 'Labeled/unlabeled split seed, >= 1.')
flags.DEFINE_string('data_dir', None, 'Folder with the official files (see libml/datasets/).')
flags.DEFINE_bool('unlabeled_classes', True, 'Put unlabeled images in class folders.')
flags.DEFINE_string('output_dir', None, 'The folder to write; must not exist or be empty.')
flags.mark_flag_as_required('output_dir')

FLAGS = flags.FLAGS


def folder_name(class_name: str) -> str:
    return class_name.replace('/', '-')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    cfg = config_lib.Config(
        dataset=FLAGS.dataset,
        imbalance=FLAGS.imbalance,
        label_fraction=FLAGS.label_fraction,
        fold=FLAGS.fold,
        data_dir=FLAGS.data_dir,
    )
    try:
        config_lib.validate(config_lib.resolve(cfg))
        if os.path.exists(FLAGS.output_dir) and os.listdir(FLAGS.output_dir):
            raise ValueError(f'--output_dir {FLAGS.output_dir}: exists and is not empty')
        splits, entries = datasets.get(FLAGS.dataset).splits(config_lib.fold_spec(cfg))
        names = [folder_name(n) for n in entries['class_names']]
        for split, examples in splits.items():
            by_class = split != 'unlabeled' or FLAGS.unlabeled_classes
            for c in set(examples.labels.tolist()) if by_class else [None]:
                os.makedirs(
                    os.path.join(FLAGS.output_dir, split, *([names[c]] if by_class else []))
                )
            pngs = tf.data.Dataset.from_tensor_slices(examples.images).map(
                tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE
            )
            for png, label, id_ in zip(
                pngs.as_numpy_iterator(), examples.labels, examples.ids, strict=True
            ):
                folder = os.path.join(
                    FLAGS.output_dir, split, *([names[label]] if by_class else [])
                )
                with open(os.path.join(folder, f'{id_:05d}.png'), 'wb') as f:
                    f.write(png)
            print(
                f'{split:10s} {len(examples):6d} images in {os.path.join(FLAGS.output_dir, split)}'
            )
    except (ValueError, records.DataError, OSError, tf.errors.OpError) as e:
        sys.exit(f'error: {(getattr(e, "message", None) or str(e)).splitlines()[0]}')


if __name__ == '__main__':
    app.run(main)
