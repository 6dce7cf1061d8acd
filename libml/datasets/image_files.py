"""Image files decoded on all cores, a chunk at a time, and images resized: how the
user's folders and ImageNet are read.
"""

import concurrent.futures
import os

import numpy as np
import tensorflow as tf

from libml.records import DataError


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """`image` [H, W, C] resized to [size, size, C], antialiased, still uint8."""
    if image.shape[:2] == (size, size):
        return image
    resized = tf.image.resize(image, (size, size), method='bilinear', antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def decode_file(path: str) -> np.ndarray | str:
    """The image in `path` as uint8 [H, W, C], or the reason it cannot be read."""
    try:
        with open(path, 'rb') as f:
            content = f.read()
        return tf.io.decode_image(content, expand_animations=False).numpy()
    except (OSError, tf.errors.InvalidArgumentError) as e:
        reason = getattr(e, 'message', None) or str(e)
        return reason.splitlines()[0] if reason else type(e).__name__


def read_images(root, paths, bad_images, log, skipped, transform=None, chunk=512):
    """Yields (position in `paths`, image) for the files root/path, decoded (then passed
    through `transform`, e.g. resize and encode) on all cores `chunk` at a time, in
    order, so that no more than a chunk is held. An unreadable file raises DataError
    naming it (`bad_images` 'stop') or is left out and appended to `skipped` ('skip')."""

    def load(path):
        image = decode_file(os.path.join(root, path))
        return image if isinstance(image, str) or transform is None else transform(image)

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, len(paths), chunk):
            positions = range(start, min(start + chunk, len(paths)))
            loaded = pool.map(lambda i: load(paths[i]), positions)
            for i, image in zip(positions, loaded, strict=True):
                if isinstance(image, str):
                    message = f'{os.path.join(root, paths[i])}: not a readable image ({image})'
                    if bad_images == 'stop':
                        raise DataError(f'{message}; --bad_images=skip leaves such files out')
                    log(f'skipped {message}')
                    skipped.append(paths[i])
                    continue
                yield i, image
            if (start // chunk) % 100 == 99:
                log(f'  {positions.stop}/{len(paths)} images')
