"""Backbones for the SSL algorithms: WRN-28-2 (the paper's) and a small CNN for CPU runs.

Both map float32 NHWC images in [-1, 1] to logits [N, num_classes] and share the
conventions of SPEC B section 3: batch norm momentum 0.999 / epsilon 1e-3 through
`BatchNorm` (the fused kernel, ~25% faster per WRN step on CPU than
`keras.layers.BatchNormalization`, TF-NOTES), LeakyReLU slope 0.1, bias-free convs with
VarianceScaling(2, fan_out) kernels, symmetric zero padding (explicit at stride 2).

Also here: `l2_variables`, the variables the coupled L2 weight decay applies to (SPEC B
section 4), and `macs_per_image` / `flops_per_image`, the forward cost a step benchmark
divides by.
"""

import keras
import numpy as np
import tensorflow as tf

BN_MOMENTUM = 0.999
BN_EPSILON = 1e-3
LRELU_SLOPE = 0.1


@keras.saving.register_keras_serializable(package='libml')
class BatchNorm(keras.layers.Layer):
    """Batch norm over the last axis, numerically the same as Keras' but on the fused kernel.

    Same semantics as `keras.layers.BatchNormalization(momentum, epsilon)`: in training
    mode it normalises with the batch's (biased) variance and updates
    `moving = moving * momentum + batch * (1 - momentum)` with the biased variance too;
    otherwise it normalises with the moving statistics. No per-replica synchronisation
    of batch statistics (Keras' `synchronized=False`).

    Inputs of rank other than 4 are viewed as [M, 1, 1, C] so that the same kernel
    serves them (e.g. the [N, C] features of an MLP head).
    """

    def __init__(self, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def build(self, input_shape):
        shape = (input_shape[-1],)
        # Same arguments as keras.layers.BatchNormalization.build, so that the variables
        # behave the same under a distribution strategy: default aggregation ('none') and
        # synchronization ('auto', i.e. ON_WRITE mirrored variables). With 'none', an
        # update in replica context writes the local copy only, so under MirroredStrategy
        # each replica keeps moving statistics of its own shard, exactly as Keras BN does;
        # checkpoints save the first replica's.
        self.gamma = self.add_weight(shape=shape, name='gamma', initializer='ones', autocast=False)
        self.beta = self.add_weight(shape=shape, name='beta', initializer='zeros', autocast=False)
        self.moving_mean = self.add_weight(
            shape=shape, name='moving_mean', initializer='zeros', trainable=False, autocast=False
        )
        self.moving_variance = self.add_weight(
            shape=shape, name='moving_variance', initializer='ones', trainable=False, autocast=False
        )

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        rank = x.shape.rank
        channels = x.shape[-1]
        if rank != 4:
            x = tf.reshape(x, [-1, 1, 1, channels])
        gamma = tf.convert_to_tensor(self.gamma)
        beta = tf.convert_to_tensor(self.beta)

        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True
            )[:3]
            # The kernel normalises with the biased variance but returns the unbiased one
            # (times n / (n - 1)); Keras averages the biased one, so undo the correction.
            n = tf.cast(tf.size(x) // channels, variance.dtype)
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            y = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=tf.convert_to_tensor(self.moving_mean),
                variance=tf.convert_to_tensor(self.moving_variance),
                epsilon=self.epsilon,
                is_training=False,
            )[0]

        if rank != 4:
            y = tf.reshape(y, tf.shape(inputs))
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), 'momentum': self.momentum, 'epsilon': self.epsilon}


def _conv(x, filters, kernel_size, strides=1, name=None):
    """A bias-free conv zero-padded by k // 2 on every side.

    At stride 1 that is 'SAME' padding. At stride 2 'SAME' would pad only after the
    image, so there the padding is explicit, then a VALID conv (SPEC B section 3, as the
    reference). Explicit padding everywhere would be the same function, but copying
    every activation tensor made the CPU WRN step slower.
    """
    pad = kernel_size // 2
    padding = 'same' if pad and strides == 1 else 'valid'
    if pad and strides != 1:
        x = keras.layers.ZeroPadding2D(pad, name=f'{name}_pad' if name else None)(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        # A fresh initializer per layer: an unseeded instance shared between layers may
        # hand every layer the same values.
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=2.0, mode='fan_out', distribution='truncated_normal'
        ),
        name=name,
    )(x)


def _bn_lrelu(x, name, momentum=BN_MOMENTUM):
    x = BatchNorm(momentum=momentum, name=f'{name}_bn')(x)
    return keras.layers.LeakyReLU(negative_slope=LRELU_SLOPE, name=f'{name}_lrelu')(x)


def _head(x, num_classes, bn_momentum=BN_MOMENTUM):
    """BN -> LReLU -> global average pool -> Dense (bias, Keras default init).

    The Dense layer computes in float32 under any precision: logits, softmax and losses
    stay float32 (its cost is negligible).
    """
    x = _bn_lrelu(x, 'head', bn_momentum)
    x = keras.layers.GlobalAveragePooling2D(name='head_pool')(x)
    return keras.layers.Dense(num_classes, name='logits', dtype='float32')(x)


def _wrn_block(x, filters, strides, first, name):
    """Pre-activation residual block of the reference WRN (SPEC B section 3)."""
    p = _bn_lrelu(x, f'{name}_preact')
    # The first block of a stage branches its shortcut off the pre-activation; the others
    # off the raw input.
    shortcut = p if first else x
    # The reference projects when the channel count changes; a stride with unchanged
    # channels would not add up either, so it projects then too (never the case for
    # width >= 1).
    if shortcut.shape[-1] != filters or strides != 1:
        shortcut = _conv(shortcut, filters, 1, strides, name=f'{name}_shortcut')
    y = _conv(p, filters, 3, strides, name=f'{name}_conv1')
    y = _bn_lrelu(y, f'{name}_mid')
    y = _conv(y, filters, 3, name=f'{name}_conv2')
    return keras.layers.Add(name=f'{name}_add')([shortcut, y])


def wrn28(num_classes, input_shape, width=2):
    """WRN-28-`width`, pre-activation, as in the CReST / FixMatch reference code.

    For width 2, 32x32x3 and 10 classes: 1,467,610 trainable parameters (SPEC B section
    3's "1.468M", FixMatch's count) plus 3,616 BN moving statistics, 1,471,226 in all;
    214.4 M multiply-adds (0.43 GFLOP) per image.

    Args:
        num_classes: number of logits.
        input_shape: (H, W, C) of the float32 [-1, 1] images.
        width: widening factor; stage widths are 16 * width, 32 * width, 64 * width.

    Returns:
        A functional `keras.Model` from images [N, H, W, C] to logits [N, num_classes].
    """
    inputs = keras.Input(shape=tuple(input_shape), name='images')
    x = _conv(inputs, 16, 3, name='stem_conv')
    for stage, strides in enumerate((1, 2, 2)):
        filters = (16 << stage) * width
        for block in range(4):
            x = _wrn_block(
                x,
                filters,
                strides=strides if block == 0 else 1,
                first=block == 0,
                name=f'stage{stage + 1}_block{block + 1}',
            )
    return keras.Model(inputs, _head(x, num_classes), name=f'wrn28_{width}')


CNN_BN_MOMENTUM = 0.99


def cnn_small(num_classes, input_shape):
    """A 6-conv CNN for CPU runs: [conv3x3 -> BN -> LReLU] x 6, then the WRN head.

    Widths 32, 32 | 64, 64 | 128, 128; the first conv of the 2nd and 3rd pair has stride
    2 (28 -> 14 -> 7, 32 -> 16 -> 8). Same conventions as `wrn28` except the batch
    norm momentum, 0.99 instead of 0.999: CPU runs are a few hundred to a few thousand
    steps, and after k steps the moving statistics still hold momentum^k of their
    initial (0, 1) values, 61% after 500 steps at 0.999 against 0.7% at 0.99 (at 0.999
    a short trial's evaluated model stayed at chance level). Counted by `count_params`
    and `macs_per_image` with 10 classes:

    - 28x28x1: 288,170 trainable parameters (289,066 with BN moving statistics),
      29.1 M multiply-adds (58.3 MFLOP) per image.
    - 32x32x3: 288,746 trainable parameters (289,642 in all), 38.6 M multiply-adds
      (77.3 MFLOP).

    Args:
        num_classes: number of logits.
        input_shape: (H, W, C) of the float32 [-1, 1] images.

    Returns:
        A functional `keras.Model` from images [N, H, W, C] to logits [N, num_classes].
    """
    inputs = keras.Input(shape=tuple(input_shape), name='images')
    x = inputs
    for i, (filters, strides) in enumerate(
        [(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)], start=1
    ):
        x = _conv(x, filters, 3, strides, name=f'conv{i}')
        if i < 6:  # the head's BN -> LReLU follows the last conv
            x = _bn_lrelu(x, f'conv{i}', CNN_BN_MOMENTUM)
    return keras.Model(inputs, _head(x, num_classes, CNN_BN_MOMENTUM), name='cnn_small')


ARCHS = {'wrn28_2': wrn28, 'cnn_small': cnn_small}

# --precision -> the Keras dtype policy of the backbone's layers. 'bf16' is mixed
# precision: float32 variables, bfloat16 compute, the logits layer in float32.
PRECISIONS = {'float32': 'float32', 'bf16': 'mixed_bfloat16'}


def build_model(arch, num_classes, input_shape, precision='float32'):
    """The backbone registered as `arch` in `ARCHS`, computing in `precision`."""
    if arch not in ARCHS:
        raise ValueError(f'Unknown arch {arch!r}; allowed: {", ".join(sorted(ARCHS))}.')
    if precision not in PRECISIONS:
        raise ValueError(f'Unknown precision {precision!r}; allowed: {", ".join(PRECISIONS)}.')
    # Layers take the global policy when created: set it for this build only.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        return ARCHS[arch](num_classes, input_shape)
    finally:
        keras.config.set_dtype_policy(previous)


def _layers(model):
    """Every layer inside `model`, nested models and layers included, each once."""
    # Keras' own traversal (behind `model.weights`); there is no public recursive one.
    return model._flatten_layers(include_self=False, recursive=True)


def l2_variables(model):
    """The variables coupled L2 weight decay applies to (SPEC A / B section 4).

    Conv2D and Dense kernels plus Dense biases, chosen by layer type: variable names in
    Keras 3 no longer carry the layer name, and a name filter silently misses renamed
    layers. Batch-norm variables are never included.
    """
    variables = []
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            variables.append(layer.kernel)
        elif isinstance(layer, keras.layers.Dense):
            variables.append(layer.kernel)
            if layer.bias is not None:
                variables.append(layer.bias)
    return variables


def macs_per_image(model):
    """Forward multiply-adds per image over the Conv2D and Dense layers of `model`.

    Batch norm, activations, padding, pooling and adds are left out (under 1% of WRN's
    cost). Reads each layer's output shape, so every counted layer must have been called
    exactly once on a symbolic input, as in a functional model.
    """
    total = 0
    for layer in _layers(model):
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            continue
        try:
            out_shape = layer.output.shape
        except (AttributeError, ValueError) as e:
            raise ValueError(f'Layer {layer.name} has no single output shape.') from e
        channels_first = getattr(layer, 'data_format', None) == 'channels_first'
        spatial = out_shape[2:] if channels_first else out_shape[1:-1]
        # Conv kernel (kh, kw, in_channels / groups, filters), Dense kernel (in, out):
        # either way one multiply-add per kernel entry per output position.
        per_position = int(np.prod(layer.kernel.shape))
        total += int(np.prod(spatial, dtype=np.int64)) * per_position
    return total


def flops_per_image(model):
    """Forward FLOPs per image, counting a multiply-add as 2 (TF-NOTES' convention)."""
    return 2 * macs_per_image(model)
