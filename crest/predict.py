"""Classifies new images with a run's exported model (crest/export.py): the image files
of a folder (sub-folders included), one image file, or the uint8 array of an .npz
file. Images are decoded and resized as training read the user's own images
(libml/datasets/image_files.py: as they are, then resized, antialiased, to the model's
square size), and go through the SavedModel in batches.

As in training, an image whose channel count is not the model's (e.g. RGB or RGBA for
a gray model) is an error; an unreadable file stops the run or is skipped, as
--bad_images says.
"""

import csv
import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from crest import export
from libml.datasets import folder, image_files, npz
from libml.records import DataError

LOG_EVERY = 2000  # Images between two progress lines.
TOP = 3  # Classes listed per image in the CSV.


@dataclasses.dataclass
class Model:
    """An export, ready to classify: its classes.json and serving function."""

    export_dir: str
    classes: dict
    serve: object  # uint8 images [N, H, W, C] -> {'probabilities', 'probabilities_la'}

    @property
    def class_names(self) -> list[str]:
        return self.classes['class_names']

    @property
    def image_size(self) -> int:
        return self.classes['image_size']

    @property
    def channels(self) -> int:
        return self.classes['channels']


@dataclasses.dataclass
class Predictions:
    """Per image, in input order: its name (path or array row) and probabilities."""

    files: list[str]
    probs: np.ndarray  # [N, classes]
    class_names: list[str]
    skipped: list[str]  # Unreadable files left out (bad_images='skip').


def load_model(path: str) -> Model:
    """The export `path` names: a run folder, a gen_XX folder or its saved_model."""
    export_dir = export.find(path)
    classes = export.read_classes(export_dir)
    missing = [k for k in ('class_names', 'image_size', 'channels', 'files') if k not in classes]
    if missing or 'saved_model' not in classes.get('files', {}):
        raise ValueError(
            f'{export_dir}/{export.CLASSES}: lacks {", ".join(missing or ["files.saved_model"])}'
        )
    if not isinstance(classes['image_size'], int):
        raise ValueError(f'{export_dir}: square images only, got {classes["image_size"]}')
    loaded = tf.saved_model.load(os.path.join(export_dir, classes['files']['saved_model']))
    return Model(export_dir, classes, loaded.signatures['serving_default'])


def predict(model: Model, images: str, la=False, batch_size=256, bad_images='stop', log=print):
    """`Predictions` of `model` for the images at `images` (see the module docstring);
    `la`: the logit-adjusted probabilities. Logs progress every LOG_EVERY images."""
    names, source, skipped = _images(images, model, bad_images, log)
    output = 'probabilities_la' if la else 'probabilities'
    kept, probs, batch = [], [], []
    start = time.time()

    def flush():
        probs.append(model.serve(images=tf.constant(np.stack(batch)))[output].numpy())
        batch.clear()
        done = sum(len(p) for p in probs)
        if len(names) > LOG_EVERY and done // LOG_EVERY > (done - len(probs[-1])) // LOG_EVERY:
            log(f'  {done}/{len(names)} images, {done / (time.time() - start):.0f} per second')

    for i, image in source:
        if image.shape[2] != model.channels:
            kinds = {1: 'gray', 3: 'RGB'}
            raise DataError(
                f'{names[i]}: {image.shape[2]} channel(s); the model takes '
                f'{kinds.get(model.channels, model.channels)} images (as in training, '
                'convert the file)'
            )
        kept.append(names[i])
        batch.append(image)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not kept:
        raise DataError(f'{images}: no readable image')
    seconds = time.time() - start
    log(f'{len(kept)} images classified in {seconds:.1f} s ({len(kept) / seconds:.0f} per second)')
    return Predictions(kept, np.concatenate(probs), model.class_names, skipped)


def _images(path: str, model: Model, bad_images: str, log):
    """(names, iterator of (index in names, uint8 image resized), skipped list)."""
    size = model.image_size
    skipped = []
    if path.endswith('.npz') and os.path.isfile(path):
        array = _npz_images(path)
        names = [f'{path}[{i}]' for i in range(len(array))]
        return names, ((i, image_files.resize(x, size)) for i, x in enumerate(array)), skipped
    if os.path.isdir(path):  # Named by their path in the folder.
        root, (paths, others) = path, folder.list_images(path)
        if not paths:
            raise DataError(f'{path}: no image files ({"/".join(folder.IMAGE_EXTENSIONS)})')
        if others:
            log(f'{path}: {len(others)} file(s) that are not images left out, e.g. {others[0]}')
        names = paths
    elif os.path.isfile(path):
        root, paths, names = os.path.dirname(path), [os.path.basename(path)], [path]
    else:
        raise DataError(f'{path}: not found')
    source = image_files.read_images(
        root, paths, bad_images, log, skipped, transform=lambda x: image_files.resize(x, size)
    )
    return names, source, skipped


def _npz_images(path: str) -> np.ndarray:
    """The images of an .npz file: its array `images`, or its only array; uint8
    [N, H, W] or [N, H, W, C]."""
    with npz.open_npz(path) as archive:
        keys = list(archive.files)
        key = 'images' if 'images' in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise DataError(f'{path}: no array named images (it holds {", ".join(keys) or "none"})')
        try:
            array = archive[key]
        except npz.UNREADABLE as e:
            raise DataError(f'{path}: array {key} cannot be read ({e})') from e
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or not len(array):
        raise DataError(
            f'{path}: {key} is {array.dtype} {array.shape}; expected uint8 images '
            '[N, H, W] or [N, H, W, C], N > 0'
        )
    return array[..., None] if array.ndim == 3 else array


def write_csv(predictions: Predictions, path: str) -> None:
    """One row per image: file, class (the most probable), confidence (its
    probability) and the TOP most probable classes as name:probability."""
    names = predictions.class_names
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['file', 'class', 'confidence', f'top{TOP}'])
        for name, p in zip(predictions.files, predictions.probs, strict=True):
            top = np.argsort(-p, kind='stable')[:TOP]
            writer.writerow(
                [
                    name,
                    names[top[0]],
                    f'{p[top[0]]:.4f}',
                    ' '.join(f'{names[c]}:{p[c]:.4f}' for c in top),
                ]
            )


def histogram(predictions: Predictions, width: int = 40) -> list[str]:
    """Lines of a bar chart: images per predicted class, in class order."""
    names = predictions.class_names
    counts = np.bincount(predictions.probs.argmax(axis=1), minlength=len(names))
    total, pad = counts.sum(), max(len(n) for n in names)
    lines = [f'predicted classes of {total} images:']
    for name, n in zip(names, counts.tolist(), strict=True):
        bar = '#' * round(width * n / max(counts.max(), 1))
        lines.append(f'  {name:{pad}}  {n:6d}  {n / total:6.1%}  {bar}'.rstrip())
    return lines
