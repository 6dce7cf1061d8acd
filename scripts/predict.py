r"""Classifies images with a trained run's model.

  python scripts/predict.py --model=runs/demo --images=my_images/ --output=preds.csv

--model: a run folder (its last finished generation's model, named in model.json), or
one generation's export folder (runs/demo/gen_01, or its saved_model/). --images: a
folder (image files in it and its sub-folders), one image file, or an .npz file (its
uint8 array `images`, or its only array). Images are resized to the model's size as
training resized them; their channels must be the model's (gray or RGB), as in
training. Writes a CSV (file, class, confidence, top 3 classes as name:probability)
and prints how many images each class got. --la: logit-adjusted probabilities (the
class prior of the generation's labeled set divided out), which favour the rare
classes. With the demo's model (runs/demo), on a 2-core Intel Xeon shared with two
training runs: 700-1,500 images per second by the load (10,000 Fashion-MNIST PNG files
in 6.5-14 s), after 4-6 s of start-up; 20 files in 4-8 s all told.
"""

import os
import sys

if not __package__:  # Run as a file, python scripts/<name>.py: import the checkout's code.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from libml.startup import import_tensorflow  # noqa: E402

tf = import_tensorflow()  # First, so that TF's start-up lines are held back.

from absl import app, flags  # noqa: E402

from crest import predict  # noqa: E402
from libml import folds  # noqa: E402
from libml.records import DataError  # noqa: E402

flags.DEFINE_string('model', None, 'A run folder, or an export folder (gen_XX).')
flags.DEFINE_string('images', None, 'A folder of images, an image file, or an .npz file.')
flags.DEFINE_bool('la', False, 'Logit-adjusted probabilities (favour the rare classes).')
flags.DEFINE_string('output', 'predictions.csv', 'The CSV file to write.')
flags.DEFINE_integer('batch_size', 256, 'Images per batch.', lower_bound=1)
flags.DEFINE_enum(
    'bad_images',
    'stop',
    folds.BAD_IMAGES,
    'An unreadable image file stops the command, naming it (stop), or is left out with '
    'a warning (skip).',
)
flags.mark_flags_as_required(['model', 'images'])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
        model = predict.load_model(FLAGS.model)
        print(f'model: {model.export_dir} ({len(model.class_names)} classes)')
        predictions = predict.predict(
            model, FLAGS.images, FLAGS.la, FLAGS.batch_size, FLAGS.bad_images, log=print
        )
        predict.write_csv(predictions, FLAGS.output)
    except (ValueError, DataError, OSError, tf.errors.OpError) as e:
        sys.exit(f'error: {(getattr(e, "message", None) or str(e)).splitlines()[0]}')
    except KeyboardInterrupt:
        print('stopped', file=sys.stderr)
        sys.exit(130)
    print('\n'.join(predict.histogram(predictions)))
    if predictions.skipped:
        print(f'{len(predictions.skipped)} unreadable file(s) skipped')
    print(f'wrote {FLAGS.output}')


def run():
    """The `crest-predict` command of the installed package (pyproject.toml)."""
    from . import run_as_program

    run_as_program(sys.modules[__name__])


if __name__ == '__main__':
    app.run(main)
