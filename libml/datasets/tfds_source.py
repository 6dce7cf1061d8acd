"""Balanced sources from tensorflow-datasets, the fallback when no local files are
given; it needs the network the first time.

Images keep the official files' order, so that the same fold selects the same images
and ids whichever way a source comes: tensorflow-datasets stores CIFAR shuffled, and its
`id` feature ('train_00042') gives back the index in the official archive.
tensorflow-datasets' Fashion-MNIST has no such feature, so its order differs from the
IDX files' (each fold records its source in counts.json).
"""

import os
import socket

import numpy as np

from libml.datasets import longtail
from libml.records import DataError


def load(name: str, host: str, data_dir: str | None = None) -> longtail.Source:
    """The tensorflow-datasets data set `name`, downloaded from `host` if not prepared."""
    import tensorflow_datasets as tfds  # Slow import; only needed on this path.

    builder = tfds.builder(name, data_dir=data_dir)
    if not os.path.isdir(builder.data_dir) or not builder.info.splits:
        # Offline, tfds hangs for minutes before failing: check the download host first.
        try:
            socket.create_connection((host, 443), timeout=5).close()
        except OSError as e:
            raise DataError(
                f'{name}: not in {builder.data_dir} and {host} is unreachable ({e}); '
                'pass --data_dir with the official files'
            ) from e
        builder.download_and_prepare()
    splits = tfds.as_numpy(builder.as_dataset(batch_size=-1))

    def official_order(split):
        examples = splits[split]
        images, labels = examples['image'], examples['label'].astype(np.int64)
        if 'id' in examples:  # '<split>_<index in the official files>'
            index = [int(i.rsplit(b'_', 1)[1]) for i in examples['id']]
            order = np.argsort(index, kind='stable')
            images, labels = images[order], labels[order]
        return images, labels

    (x_train, y_train), (x_test, y_test) = official_order('train'), official_order('test')
    names = tuple(builder.info.features['label'].names)
    return longtail.Source(x_train, y_train, x_test, y_test, names, f'tensorflow-datasets {name}')
