"""Backbones for the SSL algorithms: WRN-28-2 (the paper's) and a small CNN for CPU runs.

Both map float32 NHWC images in [-1, 1] to logits [N, num_classes] and share the
conventions of the reference code: batch norm momentum 0.999 / epsilon 1e-3 through
`BatchNorm` (the fused kernel, ~25% faster per WRN step on CPU than
`keras.layers.BatchNormalization`, TF-NOTES), LeakyReLU slope 0.1, bias-free convs with
VarianceScaling(2, fan_out) kernels, symmetric zero padding (explicit at stride 2).

Two layers cut the memory a train step holds for its backward pass, with the same
numbers bit for bit: `LeakyReLU` differentiates from its output, and `BNLReLUConv` fuses
BN -> LReLU -> conv and recomputes the first two when the gradient arrives (the WRN-28-2
FixMatch step: 6.3 GB peak before, 3.1 GB after, float32).

Also here: `l2_variables`, the variables the coupled L2 weight decay applies to.
"""

import keras
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
        # each replica keeps moving statistics of its own shard, exactly as Keras BN does
        # (the training loop averages them over the replicas before it evaluates or saves).
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
            y, mean, variance = self.normalize_batch(x, gamma, beta)
            self.update_moving(x, mean, variance)
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

    def normalize_batch(self, x, gamma, beta):
        """(normalised x, batch mean, unbiased batch variance) of NHWC `x`, training mode."""
        return tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, is_training=True
        )[:3]

    def update_moving(self, x, mean, variance):
        """Moves the moving statistics towards the batch's (`normalize_batch`'s output)."""
        # The kernel normalises with the biased variance but returns the unbiased one
        # (times n / (n - 1)); Keras averages the biased one, so undo the correction.
        n = tf.cast(tf.size(x) // x.shape[-1], variance.dtype)
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), 'momentum': self.momentum, 'epsilon': self.epsilon}


@keras.saving.register_keras_serializable(package='libml')
class LeakyReLU(keras.layers.Layer):
    """max(x, slope * x), differentiated from its output rather than its input.

    The same function and gradient as `keras.layers.LeakyReLU` (slope > 0: output and
    input have the same sign, so the output tells which slope applies, at 0 too). TF's
    own gradient reads the input, the batch norm output, which nothing else keeps: the
    backward pass would hold it for every layer. Read off the output, which the next
    convolution keeps anyway, it is freed after use: the WRN-28-2 step keeps 4 instead
    of 6 activation tensors per residual block.
    """

    def __init__(self, negative_slope=LRELU_SLOPE, **kwargs):
        super().__init__(**kwargs)
        if not negative_slope > 0:
            raise ValueError(f'negative_slope must be > 0, got {negative_slope}')
        self.negative_slope = float(negative_slope)

    def call(self, inputs):
        slope = self.negative_slope

        @tf.custom_gradient
        def leaky_relu(x):
            y = tf.nn.leaky_relu(x, alpha=slope)

            def grad(dy):
                return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=slope)

            return y, grad

        return leaky_relu(tf.convert_to_tensor(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), 'negative_slope': self.negative_slope}


@keras.saving.register_keras_serializable(package='libml')
class BNLReLUConv(keras.layers.Conv2D):
    """BatchNorm -> LeakyReLU -> a bias-free stride-1 'same' Conv2D, as one layer whose
    backward pass keeps only its input.

    The same function, gradients and batch norm updates as the three layers in a row
    (`BatchNorm`, `LeakyReLU`, `keras.layers.Conv2D`; the batch norm is the sublayer
    `bn`). Separately, the backward pass holds the batch norm input and the activation
    (the convolution's input) for the whole step. Here it holds the input only and
    recomputes normalisation and activation when the gradient arrives (a few per cent of
    a WRN step), then runs the convolution's own backward kernels on them: the WRN-28-2 train
    step's peak memory falls by a third. In inference mode it is the plain composition.
    """

    def __init__(self, filters, kernel_size, bn_momentum=BN_MOMENTUM, **kwargs):
        super().__init__(filters, kernel_size, padding='same', use_bias=False, **kwargs)
        if self.strides != (1, 1) or self.dilation_rate != (1, 1) or self.groups != 1:
            raise ValueError('BNLReLUConv: stride 1, no dilation and no groups only')
        if self.data_format != 'channels_last':
            raise ValueError('BNLReLUConv: channels_last only')
        self.bn_momentum = float(bn_momentum)
        self.bn = BatchNorm(momentum=bn_momentum, name=f'{self.name}_bn', dtype=self.dtype_policy)
        self.negative_slope = LRELU_SLOPE

    def build(self, input_shape):
        self.bn.build(input_shape)  # its variables first, as when it was a layer of its own
        super().build(input_shape)

    def _activate(self, x, gamma, beta):
        y, mean, variance = self.bn.normalize_batch(x, gamma, beta)
        return tf.nn.leaky_relu(y, alpha=self.negative_slope), mean, variance

    def _convolve(self, a, kernel):
        return tf.nn.conv2d(a, kernel, strides=1, padding='SAME')

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        kernel = tf.cast(self.kernel, x.dtype)
        if not (training and self.trainable):
            a = tf.nn.leaky_relu(self.bn(x, training=False), alpha=self.negative_slope)
            return self._convolve(a, kernel)
        gamma, beta = tf.convert_to_tensor(self.bn.gamma), tf.convert_to_tensor(self.bn.beta)

        @tf.custom_gradient
        def forward(x, gamma, beta, kernel):
            a, mean, variance = self._activate(x, gamma, beta)

            def grad(dy, *_):  # no gradient flows through the batch statistics outputs
                # Recompute when the gradient arrives, not as soon as x exists: a graph
                # runs an op once its inputs are ready, and would hold `a` all along.
                with tf.control_dependencies([dy]):
                    x_again = tf.identity(x)
                with tf.GradientTape() as tape:
                    tape.watch([x_again, gamma, beta])
                    a, _, _ = self._activate(x_again, gamma, beta)
                da = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(a),
                    filter=kernel,
                    out_backprop=dy,
                    strides=[1, 1, 1, 1],
                    padding='SAME',
                )
                dkernel = tf.raw_ops.Conv2DBackpropFilter(
                    input=a,
                    filter_sizes=tf.shape(kernel),
                    out_backprop=dy,
                    strides=[1, 1, 1, 1],
                    padding='SAME',
                )
                return (*tape.gradient(a, [x_again, gamma, beta], output_gradients=da), dkernel)

            return (self._convolve(a, kernel), mean, variance), grad

        y, mean, variance = forward(x, gamma, beta, kernel)
        self.bn.update_moving(x, mean, variance)
        return y

    def get_config(self):
        config = super().get_config()
        for key in ('padding', 'use_bias'):
            config.pop(key)
        return {**config, 'bn_momentum': self.bn_momentum}


def _kernel_initializer():
    # A fresh instance per layer: an unseeded instance shared between layers may hand
    # every layer the same values.
    return keras.initializers.VarianceScaling(
        scale=2.0, mode='fan_out', distribution='truncated_normal'
    )


def _conv(x, filters, kernel_size, strides=1, name=None):
    """A bias-free conv zero-padded by k // 2 on every side.

    At stride 1 that is 'SAME' padding. At stride 2 'SAME' would pad only after the
    image, so there the padding is explicit, then a VALID conv (as the
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
        kernel_initializer=_kernel_initializer(),
        name=name,
    )(x)


def _bn_lrelu(x, name, momentum=BN_MOMENTUM):
    x = BatchNorm(momentum=momentum, name=f'{name}_bn')(x)
    return LeakyReLU(LRELU_SLOPE, name=f'{name}_lrelu')(x)


def _head(x, num_classes, bn_momentum=BN_MOMENTUM):
    """BN -> LReLU -> global average pool -> Dense (bias, Keras default init).

    The Dense layer computes in float32 under any precision: logits, softmax and losses
    stay float32 (its cost is negligible).
    """
    x = _bn_lrelu(x, 'head', bn_momentum)
    x = keras.layers.GlobalAveragePooling2D(name='head_pool')(x)
    return keras.layers.Dense(num_classes, name='logits', dtype='float32')(x)


def _bn_lrelu_conv(x, filters, name):
    """BN -> LReLU -> conv3x3 at stride 1, fused to save memory (`BNLReLUConv`)."""
    return BNLReLUConv(filters, 3, kernel_initializer=_kernel_initializer(), name=name)(x)


def _wrn_block(x, filters, strides, first, name):
    """Pre-activation residual block of the reference WRN:
    BN -> LReLU -> conv3x3 (stride) -> BN -> LReLU -> conv3x3, plus the shortcut."""
    if first:
        # The first block of a stage branches its shortcut off the pre-activation, which
        # its 1x1 convolution keeps anyway; the others off the raw input.
        p = _bn_lrelu(x, f'{name}_preact')
        # The reference projects when the channel count changes; a stride with unchanged
        # channels would not add up either, so it projects then too (never the case for
        # width >= 1).
        shortcut = p
        if shortcut.shape[-1] != filters or strides != 1:
            shortcut = _conv(shortcut, filters, 1, strides, name=f'{name}_shortcut')
        y = _conv(p, filters, 3, strides, name=f'{name}_conv1')
    else:
        if x.shape[-1] != filters or strides != 1:
            raise ValueError(f'{name}: only the first block of a stage changes the shape')
        shortcut = x
        y = _bn_lrelu_conv(x, filters, f'{name}_conv1')
    y = _bn_lrelu_conv(y, filters, f'{name}_conv2')
    return keras.layers.Add(name=f'{name}_add')([shortcut, y])


def wrn28(num_classes, input_shape, width=2):
    """WRN-28-`width`, pre-activation, as in the CReST / FixMatch reference code.

    For width 2, 32x32x3 and 10 classes: 1,467,610 trainable parameters (the
    paper's "1.468M", FixMatch's count) plus 3,616 BN moving statistics, 1,471,226 in all;
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
    and tests/models_test.py with 10 classes:

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


def resnet50(num_classes, input_shape):
    """ResNet-50, the paper's ImageNet127 backbone: Keras' ResNet-50 v1 (ReLU, batch
    norm momentum 0.99), randomly initialised, global average pooling, then a float32
    Dense layer of `num_classes` logits (as `_head`'s). Its input is at least 32x32.

    With 127 classes: 23.8 M trainable parameters; 3.86 G multiply-adds per 224x224
    image (He et al.: 3.8 G), 0.32 G per 64x64.
    """
    inputs = keras.Input(shape=tuple(input_shape), name='images')
    backbone = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=tuple(input_shape), pooling='avg'
    )
    logits = keras.layers.Dense(num_classes, name='logits', dtype='float32')(backbone(inputs))
    return keras.Model(inputs, logits, name='resnet50')


ARCHS = {'wrn28_2': wrn28, 'cnn_small': cnn_small, 'resnet50': resnet50}

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
    """The variables coupled L2 weight decay applies to, as in the reference code.

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
