"""A trained backbone as files that run without this code: a Keras 3 `.keras` model and
a TensorFlow SavedModel, both taking raw pixel values and returning probabilities.

The backbones of `libml.models` use this project's own layers (the fused `BatchNorm`,
the memory-saving `LeakyReLU` and `BNLReLUConv`), which a `.keras` file would name and
its reader would need to import. `portable_model` rebuilds the network from Keras'
built-in layers (in inference they compute the same function: `BatchNormalization`,
`LeakyReLU`, and `BNLReLUConv` as a `Sequential` of the three), copies the weights,
and wraps it with the training's preprocessing (pixels p -> p / 127.5 - 1, as
`pipeline.to_float`) and a softmax. It computes in float32 whatever precision trained
it: a bf16 run's variables are float32 already, and a float32 model runs on every
device and converter.
"""

import os
import random

import keras
import numpy as np
import tensorflow as tf

from libml import models

KERAS_FILE = 'model.keras'
SAVED_MODEL = 'saved_model'


def _builtin_layer(layer):
    """A new layer of Keras' own computing what `layer` computes in inference, float32."""
    if isinstance(layer, models.BNLReLUConv):
        return keras.Sequential(
            [
                keras.layers.BatchNormalization(
                    momentum=layer.bn.momentum, epsilon=layer.bn.epsilon, name=layer.bn.name
                ),
                keras.layers.LeakyReLU(layer.negative_slope, name=f'{layer.name}_lrelu'),
                keras.layers.Conv2D(
                    layer.filters,
                    layer.kernel_size,
                    padding='same',
                    use_bias=False,
                    name=f'{layer.name}_conv',
                ),
            ],
            name=layer.name,
        )
    if isinstance(layer, models.BatchNorm):
        return keras.layers.BatchNormalization(
            momentum=layer.momentum, epsilon=layer.epsilon, name=layer.name
        )
    if isinstance(layer, models.LeakyReLU):
        return keras.layers.LeakyReLU(layer.negative_slope, name=layer.name)
    config = layer.get_config()
    if 'dtype' in config:
        config['dtype'] = 'float32'
    return layer.__class__.from_config(config)


def _copy_weights(source, target) -> None:
    if isinstance(source, models.BNLReLUConv):
        bn, _, conv = target.layers
        bn.set_weights(source.bn.get_weights())
        conv.set_weights([source.kernel.numpy()])
    else:
        target.set_weights(source.get_weights())


def portable_model(net: keras.Model, name: str = 'classifier') -> keras.Model:
    """`net` (a backbone of `libml.models`: float images in [-1, 1] -> logits) as a
    float32 model of Keras' built-in layers from pixel values in [0, 255] [N, H, W, C]
    (uint8 or float) to probabilities [N, classes].

    Draws no random numbers (new layers' initialisers would draw from Python's `random`:
    its state is put back), so a run exporting its model trains on exactly as before.
    """
    state = random.getstate()
    pairs = []

    def clone(layer):
        pairs.append((layer, _builtin_layer(layer)))
        return pairs[-1][1]

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy('float32')
    try:
        copy = keras.models.clone_model(net, clone_function=clone, recursive=True)
        for source, target in pairs:
            _copy_weights(source, target)
        pixels = keras.Input(net.input_shape[1:], name='pixels')
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name='to_float')(pixels)
        probs = keras.layers.Softmax(name='probabilities')(copy(x))
        return keras.Model(pixels, probs, name=name)
    finally:
        keras.config.set_dtype_policy(policy)
        random.setstate(state)


def save_keras(model: keras.Model, path: str) -> None:
    """`model` as a Keras 3 file at `path` (ending in .keras), written whole or not at all."""
    tmp = f'{path}.tmp-{os.getpid()}.keras'  # Keras wants the suffix.
    try:
        keras.saving.save_model(model, tmp)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


class _Serving(tf.Module):
    """The SavedModel's content: `model` and the logit adjustment's prior."""

    def __init__(self, model: keras.Model, prior: np.ndarray):
        super().__init__()
        self.model = model
        self.log_prior = tf.constant(np.log(np.asarray(prior, np.float64)), tf.float32)
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8, name='images')
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images):
        probs = self.model(tf.cast(images, tf.float32), training=False)
        # softmax(logits - log prior), from the probabilities: Normalize(probs / prior).
        adjusted = tf.nn.softmax(tf.math.log(probs) - self.log_prior)
        return {'probabilities': probs, 'probabilities_la': adjusted}


def save_serving(model: keras.Model, prior, path: str) -> None:
    """`model` (`portable_model`'s) as a SavedModel folder at `path`, its default
    signature from uint8 images [N, H, W, C] (any N) to `probabilities` and
    `probabilities_la`, the latter adjusted post hoc by the class `prior` (tau = 1);
    the folder is replaced whole."""
    tmp = f'{path}.tmp-{os.getpid()}'
    serving = _Serving(model, prior)
    tf.saved_model.save(serving, tmp, signatures={'serving_default': serving.serve})
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
    tf.io.gfile.rename(tmp, path)


def remove_leftovers(folder: str) -> None:
    """Removes what an export interrupted by a crash left in `folder`."""
    for leftover in tf.io.gfile.glob(os.path.join(folder, '*.tmp-*')):
        if tf.io.gfile.isdir(leftover):
            tf.io.gfile.rmtree(leftover)
        else:
            tf.io.gfile.remove(leftover)
