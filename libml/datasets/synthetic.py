"""A synthetic balanced source made long-tailed: tiny generated images, no files, no
download. For trying the whole pipeline in seconds, and for tests.

Class c's images are flat at a gray level of its own, evenly spaced from dark (class 0)
to bright (the last class), under uniform noise: flips, crops and the other
augmentations keep the class recognizable, so a small model learns it in a few steps.
The images follow `seed` through NumPy's legacy RandomState, whose streams are frozen
across versions: the same data set is the same images everywhere.
"""

import numpy as np

from libml.datasets import longtail

NOISE = 25  # Pixels are the class's level +- NOISE.


class Synthetic(longtail.LongTailed):
    """`train_per_class` and `test_per_class` generated images of each of `num_classes`
    classes, the train ones made long-tailed with N_1 = `head_count` (default: all of
    the head class's)."""

    def __init__(
        self,
        name: str,
        num_classes: int = 5,
        image_shape: tuple[int, int, int] = (16, 16, 3),
        train_per_class: int = 100,
        test_per_class: int = 20,
        head_count: int | None = None,
        darp_unlabeled_head: int | None = None,
        seed: int = 0,
        unlabeled_head: int | None = None,
    ):
        super().__init__(
            name,
            num_classes,
            image_shape,
            head_count or train_per_class,
            darp_unlabeled_head,
            unlabeled_head,
        )
        self.train_per_class = train_per_class
        self.test_per_class = test_per_class
        self.seed = seed

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(f'level_{c}' for c in range(self.num_classes))

    def load(self, data_dir: str | None) -> longtail.Source:
        """The generated source; `data_dir` is unused (nothing is read)."""
        del data_dir
        rng = np.random.RandomState(self.seed)
        levels = np.linspace(NOISE + 10, 255 - NOISE - 10, self.num_classes).round()

        def make(per_class):
            labels = rng.permutation(np.repeat(np.arange(self.num_classes), per_class))
            noise = rng.randint(-NOISE, NOISE + 1, (len(labels), *self.image_shape))
            images = levels[labels, None, None, None] + noise
            return images.astype(np.uint8), labels.astype(np.int64)

        x_train, y_train = make(self.train_per_class)
        x_test, y_test = make(self.test_per_class)
        origin = f'generated: {self.num_classes} gray levels, seed {self.seed}'
        return longtail.Source(x_train, y_train, x_test, y_test, self.class_names, origin)
