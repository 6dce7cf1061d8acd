"""A generation's final EMA model, exported for use without this code, and the run's
pointer at the last finished generation's export:

  WORKDIR/gen_XX/model.keras     Keras 3 model: pixel values [N, H, W, C] (uint8 or
                                 float, 0..255) -> class probabilities [N, classes]
  WORKDIR/gen_XX/saved_model/    SavedModel, signature 'serving_default': uint8 images
                                 [N, H, W, C] -> probabilities, probabilities_la
  WORKDIR/gen_XX/classes.json    class names in index order, labeled counts, the logit
                                 adjustment's prior, the input's shape (written last)
  WORKDIR/model.json             which generation's export is the run's model

Both model files hold Keras' built-in layers only and compute in float32
(`libml.export`). A generation exports before its metrics.json is written, so every
finished generation has its export, except those of runs that finished before exports
existed: those are left as they are (their checkpoints hold the model).
"""

import os

import numpy as np
import tensorflow as tf

from libml import export, records

CLASSES = 'classes.json'
POINTER = 'model.json'


def export_generation(
    gen_dir: str,
    net,
    class_names: list[str],
    labeled_counts,
    train_counts,
    la_prior,
    settings: dict,
) -> None:
    """Writes `net`'s export into `gen_dir` (see the module docstring).

    Args:
      net: the generation's final EMA backbone (float images in [-1, 1] -> logits).
      labeled_counts: the original labeled set's images per class.
      train_counts: this generation's labeled set's (original + picks).
      la_prior: the class prior of the logit-adjusted probabilities.
      settings: what else classes.json records (e.g. dataset, arch, precision).
    """
    export.remove_leftovers(gen_dir)
    model = export.portable_model(net)
    export.save_keras(model, os.path.join(gen_dir, export.KERAS_FILE))
    export.save_serving(model, la_prior, os.path.join(gen_dir, export.SAVED_MODEL))
    height, width, channels = (int(d) for d in net.input_shape[1:])
    records.write_json(
        os.path.join(gen_dir, CLASSES),
        {
            'class_names': list(class_names),
            'labeled_counts': np.asarray(labeled_counts).tolist(),
            'train_counts': np.asarray(train_counts).tolist(),
            'la_prior': np.asarray(la_prior, np.float64).tolist(),
            'image_size': height if height == width else [height, width],
            'channels': channels,
            'input': 'pixel values 0..255, images resized as in training, then / 127.5 - 1',
            'compute_dtype': 'float32',
            **settings,
            'files': {'keras': export.KERAS_FILE, 'saved_model': export.SAVED_MODEL},
        },
    )


def exported(gen_dir: str) -> bool:
    return tf.io.gfile.exists(os.path.join(gen_dir, CLASSES))


def point_to(workdir: str, g: int, gen_dir: str) -> None:
    """Writes WORKDIR/model.json naming generation g's export (paths relative to
    WORKDIR, so that a moved run folder still works)."""
    folder = os.path.relpath(gen_dir, workdir)
    records.write_json(
        os.path.join(workdir, POINTER),
        {
            'generation': g,
            'export': folder,
            'keras': f'{folder}/{export.KERAS_FILE}',
            'saved_model': f'{folder}/{export.SAVED_MODEL}',
            'classes': f'{folder}/{CLASSES}',
        },
    )


def find(path: str) -> str:
    """The export folder (gen_XX) `path` names: a run folder (through its model.json),
    an export folder, or its saved_model folder. ValueError (one line) otherwise."""
    path = os.path.normpath(path)
    if not tf.io.gfile.isdir(path):
        raise ValueError(f'{path}: not a folder (a run folder or a gen_XX export folder)')
    if tf.io.gfile.exists(os.path.join(path, CLASSES)):
        return path
    parent = os.path.dirname(path)
    if os.path.basename(path) == export.SAVED_MODEL and exported(parent):
        return parent
    pointer = os.path.join(path, POINTER)
    if tf.io.gfile.exists(pointer):
        return os.path.join(path, records.read_json(pointer)['export'])
    if tf.io.gfile.exists(os.path.join(path, 'args.json')):
        raise ValueError(
            f'{path}: no exported model yet (a run exports one when a generation finishes '
            f'and names it in {POINTER})'
        )
    raise ValueError(f'{path}: neither a run folder nor an export folder (no {CLASSES})')


def read_classes(export_dir: str) -> dict:
    return records.read_json(os.path.join(export_dir, CLASSES))
