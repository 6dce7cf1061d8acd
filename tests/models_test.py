"""Tests for libml/models.py: fused BatchNorm vs Keras BN, the memory-saving LeakyReLU and
BN -> LReLU -> conv layers vs the plain ones, backbone shapes and counts."""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from libml import models
from tests import fakes


def macs_per_image(model):
    """Forward multiply-adds per image over the Conv2D and Dense layers of `model` (batch
    norm, activations, padding, pooling and adds left out: under 1% of WRN's cost), from
    each layer's output shape: every layer called once on a symbolic input."""
    total = 0
    for layer in models._layers(model):
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            spatial = layer.output.shape[1:-1]  # Channels last.
            # One multiply-add per kernel entry per output position.
            total += int(np.prod(spatial, dtype=np.int64)) * int(np.prod(layer.kernel.shape))
    return total


def _pair(momentum, shape):
    """Our BatchNorm and Keras' with the same random gamma / beta, both built."""
    ours = models.BatchNorm(momentum=momentum, epsilon=1e-3)
    ref = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-3)
    ours.build(shape)
    ref.build(shape)
    rng = np.random.RandomState(1)
    channels = shape[-1]
    for layer in (ours, ref):
        layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype('float32'))
        layer.beta.assign(rng.uniform(-1.0, 1.0, channels).astype('float32'))
        rng = np.random.RandomState(1)  # same values for both layers
    return ours, ref


def _batches(shape, count=3):
    """Random batches whose channels have distinct means and scales, as after a conv."""
    rng = np.random.RandomState(0)
    channels = shape[-1]
    scale = np.linspace(0.5, 3.0, channels).astype('float32')
    offset = np.linspace(-2.0, 2.0, channels).astype('float32')
    return [tf.constant(rng.randn(*shape).astype('float32') * scale + offset) for _ in range(count)]


# A small batch makes the fused kernel's n / (n - 1) variance correction large (8 / 7 for
# [2, 2, 2, C]); momentum 0.5 makes any error in the moving statistics large too.
@pytest.mark.parametrize('momentum', [0.999, 0.5])
@pytest.mark.parametrize('shape', [(2, 2, 2, 6), (16, 5, 5, 6), (32, 6)])
@pytest.mark.parametrize('compiled', [False, True])
def test_batchnorm_matches_keras_in_training(momentum, shape, compiled):
    ours, ref = _pair(momentum, shape)

    def step(x):
        return ours(x, training=True), ref(x, training=True)

    if compiled:
        step = tf.function(step)
    for x in _batches(shape):
        y_ours, y_ref = step(x)
        np.testing.assert_allclose(y_ours, y_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.moving_mean, ref.moving_mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ours.moving_variance, ref.moving_variance, rtol=1e-6, atol=1e-7)
    # The moving statistics did move: the comparison above is not between two initial values.
    assert np.abs(ours.moving_variance.numpy() - 1.0).max() > 1e-4
    assert np.abs(ours.moving_mean.numpy()).max() > 1e-4


@pytest.mark.parametrize('shape', [(8, 4, 4, 6), (32, 6)])
def test_batchnorm_matches_keras_in_inference(shape):
    ours, ref = _pair(0.5, shape)
    for x in _batches(shape):
        ours(x, training=True)
        ref(x, training=True)
    x = _batches(shape, count=4)[-1]
    mean, variance = ours.moving_mean.numpy(), ours.moving_variance.numpy()
    for training in (False, None):  # None is inference, as for Keras layers
        y = ours(x, training=training)
        np.testing.assert_allclose(y, ref(x, training=False), rtol=1e-5, atol=1e-5)
        expected = ours.gamma.numpy() * (x.numpy() - mean) / np.sqrt(variance + 1e-3)
        np.testing.assert_allclose(y, expected + ours.beta.numpy(), rtol=1e-4, atol=1e-4)
    # Inference leaves the moving statistics alone and differs from batch statistics.
    np.testing.assert_array_equal(ours.moving_mean.numpy(), mean)
    np.testing.assert_array_equal(ours.moving_variance.numpy(), variance)
    assert np.abs(ours(x, training=False) - ours(x, training=True)).max() > 1e-2


def test_batchnorm_gradients_match_keras():
    shape = (8, 4, 4, 6)
    ours, ref = _pair(0.999, shape)
    x = _batches(shape, count=1)[0]
    upstream = tf.constant(np.random.RandomState(2).randn(*shape).astype('float32'))
    grads = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    for g_ours, g_ref in zip(*grads, strict=True):
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-4)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from libml.models import BatchNorm

    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    with strategy.scope():
        layers = {'ours': BatchNorm(), 'keras': keras.layers.BatchNormalization(
            momentum=0.999, epsilon=1e-3)}
        for layer in layers.values():
            layer.build((None, 4, 4, 3))
    rng = np.random.RandomState(0)
    # The two replicas see shards with different statistics.
    x = np.concatenate([rng.randn(4, 4, 4, 3), 3 * rng.randn(4, 4, 4, 3) + 2]).astype('float32')
    dist = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x).repeat(2))

    @tf.function
    def step(batch):
        return strategy.run(lambda b: [l(b, training=True) for l in layers.values()], (batch,))

    outputs = [step(batch) for batch in dist][-1]
    result = {'outputs_equal': bool(all(np.allclose(a, b, atol=1e-5) for a, b in zip(
        strategy.experimental_local_results(outputs[0]),
        strategy.experimental_local_results(outputs[1]))))}
    for name, layer in layers.items():
        for var in ('moving_mean', 'moving_variance'):
            replicas = strategy.experimental_local_results(getattr(layer, var).value)
            result[f'{name}/{var}'] = [np.asarray(r).tolist() for r in replicas]
    print('RESULT ' + json.dumps(result))
    """
)


def test_batchnorm_under_mirrored_strategy_behaves_like_keras():
    """Two logical CPUs need a fresh process: devices are fixed once TF has started."""
    result = fakes.run_python(_MIRRORED_SCRIPT, timeout=120)
    assert result['outputs_equal']
    for var in ('moving_mean', 'moving_variance'):
        ours, ref = np.array(result[f'ours/{var}']), np.array(result[f'keras/{var}'])
        assert ours.shape == (2, 3)  # one copy per replica
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
        # Like Keras BN, each replica tracks the statistics of its own shard.
        assert np.abs(ours[0] - ours[1]).max() > 1e-4


@pytest.fixture(scope='module')
def wrn():
    keras.utils.set_random_seed(0)
    return models.wrn28(10, (32, 32, 3))


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def test_wrn28_size_and_output(wrn):
    # The paper's 1.468M counts trainable variables (FixMatch's WRN-28-2 has the
    # same 1,467,610); the BN moving statistics add 2 per BN channel.
    assert _count(wrn.trainable_variables) == 1_467_610
    bn_channels = sum(
        layer.gamma.shape[0] for layer in models._layers(wrn) if isinstance(layer, models.BatchNorm)
    )
    assert bn_channels == 1_808
    assert wrn.count_params() == 1_467_610 + 2 * bn_channels == 1_471_226
    x = tf.random.stateless_uniform((3, 32, 32, 3), seed=(0, 1), minval=-1.0, maxval=1.0)
    logits = wrn(x, training=False)
    assert logits.shape == (3, 10) and logits.dtype == tf.float32
    assert np.all(np.isfinite(logits))
    assert 213e6 < macs_per_image(wrn) < 216e6  # about 214M MACs


def test_wrn28_layer_conventions(wrn):
    layers = list(models._layers(wrn))
    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    fused = [layer for layer in convs if isinstance(layer, models.BNLReLUConv)]
    # Every activation is a LeakyReLU layer or inside a fused BN -> LReLU -> conv layer.
    lrelus = [layer for layer in layers if isinstance(layer, models.LeakyReLU)] + fused
    bns = [layer for layer in layers if isinstance(layer, models.BatchNorm)]
    # Stem + 2 per block x 12 blocks, + a 1x1 projection shortcut in each stage.
    assert len(convs) == 1 + 24 + 3
    assert sum(conv.kernel_size == (1, 1) for conv in convs) == 3
    assert len(bns) == len(lrelus) == 2 * 12 + 1
    # All but the first block's first conv of each stage (its pre-activation also feeds
    # the shortcut) are fused with the BN -> LReLU before them.
    assert len(fused) == 24 - 3
    assert all(conv.bn in bns for conv in fused)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers)
    for conv in convs:
        assert not conv.use_bias and conv.bias is None
        # Symmetric padding: 'same' for 3x3 at stride 1, explicit then 'valid' at stride 2.
        stride1_3x3 = conv.strides == (1, 1) and conv.kernel_size == (3, 3)
        assert conv.padding == ('same' if stride1_3x3 else 'valid')
        if conv.strides == (2, 2) and conv.kernel_size == (3, 3):
            pad = wrn.get_layer(f'{conv.name}_pad')
            assert pad.padding == ((1, 1), (1, 1)) and conv.input is pad.output
        init = conv.kernel_initializer.get_config()
        assert (init['scale'], init['mode'], init['distribution']) == (
            2.0,
            'fan_out',
            'truncated_normal',
        )
    for lrelu in lrelus:
        assert lrelu.negative_slope == pytest.approx(0.1)
    for bn in bns:
        assert (bn.momentum, bn.epsilon) == (0.999, 1e-3)
    dense = wrn.get_layer('logits')
    assert dense.use_bias and dense.units == 10
    # Stage widths 32 / 64 / 128 at 32 / 16 / 8 pixels.
    for stage, (width, size) in enumerate([(32, 32), (64, 16), (128, 8)], start=1):
        assert wrn.get_layer(f'stage{stage}_block4_add').output.shape == (None, size, size, width)


def test_wrn28_shortcuts(wrn):
    """First block of a stage: 1x1 conv on the pre-activation; later blocks: identity on x."""
    for stage in (1, 2, 3):
        shortcut = wrn.get_layer(f'stage{stage}_block1_shortcut')
        assert shortcut.strides == ((1, 1) if stage == 1 else (2, 2))
        assert shortcut.input is wrn.get_layer(f'stage{stage}_block1_preact_lrelu').output
        for block in (2, 3, 4):
            add = wrn.get_layer(f'stage{stage}_block{block}_add')
            previous = wrn.get_layer(f'stage{stage}_block{block - 1}_add').output
            assert add.input[0] is previous


def test_leaky_relu_matches_keras():
    x = tf.constant([[-3.0, -1e-30, 0.0, 1e-30, 2.5]])
    ours, ref = models.LeakyReLU(0.1), keras.layers.LeakyReLU(negative_slope=0.1)
    for dtype in (tf.float32, tf.bfloat16):
        xs = tf.cast(x, dtype)
        grads = []
        for layer in (ours, ref):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                y = layer(xs)
            grads.append(tape.gradient(y, xs, output_gradients=tf.ones_like(y) * 3))
            np.testing.assert_array_equal(y, ref(xs))
        np.testing.assert_array_equal(grads[0], grads[1])
        np.testing.assert_allclose(grads[0][0], [0.3, 0.3, 0.3, 3.0, 3.0], rtol=1e-2)


@pytest.mark.parametrize('policy', ['float32', 'mixed_bfloat16'])
def test_bn_lrelu_conv_is_the_three_layers(policy):
    """Same outputs, gradients and moving statistics, bit for bit, as BatchNorm ->
    LeakyReLU -> Conv2D with the same weights, in training and inference mode."""
    shape = (4, 6, 6, 5)
    fused = models.BNLReLUConv(7, 3, bn_momentum=0.5, dtype=policy)
    bn = models.BatchNorm(momentum=0.5, dtype=policy)
    act = models.LeakyReLU(0.1, dtype=policy)
    conv = keras.layers.Conv2D(7, 3, padding='same', use_bias=False, dtype=policy)
    fused.build(shape)
    bn.build(shape)
    conv.build(shape)
    rng = np.random.RandomState(3)
    for layer in (fused.bn, bn):
        layer.gamma.assign(np.linspace(0.5, 1.5, 5))
        layer.beta.assign(np.linspace(-0.5, 0.5, 5))
    kernel = rng.randn(3, 3, 5, 7).astype('float32') * 0.3
    fused.kernel.assign(kernel)
    conv.kernel.assign(kernel)
    upstream = tf.constant(rng.randn(4, 6, 6, 7).astype('float32'))

    def plain(x, training):
        return conv(act(bn(x, training=training)))

    for x in _batches(shape, count=2):
        results = []
        for f, variables in (
            (fused, [fused.bn.gamma, fused.bn.beta, fused.kernel]),
            (plain, [bn.gamma, bn.beta, conv.kernel]),
        ):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = f(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
            results.append([y, *tape.gradient(loss, [x, *variables])])
        for ours, theirs in zip(*results, strict=True):
            np.testing.assert_array_equal(ours, theirs)
        assert results[0][0].dtype == (tf.float32 if policy == 'float32' else tf.bfloat16)
        np.testing.assert_array_equal(fused.bn.moving_mean.numpy(), bn.moving_mean.numpy())
        np.testing.assert_array_equal(fused.bn.moving_variance.numpy(), bn.moving_variance.numpy())
        np.testing.assert_array_equal(fused(x, training=False), plain(x, training=False))
    assert np.abs(bn.moving_mean.numpy()).max() > 0.1  # the updates did happen


def test_model_training_flag_reaches_batchnorm():
    keras.utils.set_random_seed(0)
    model = models.cnn_small(10, (28, 28, 1))
    bn = model.get_layer('conv1_bn')
    x = tf.random.stateless_normal((4, 28, 28, 1), seed=(0, 2))
    model(x, training=False)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(32))
    model(x, training=True)
    assert np.abs(bn.moving_variance.numpy() - 1.0).max() > 1e-5
    # The CPU model's faster-moving statistics (see its docstring); WRN keeps 0.999.
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, models.BatchNorm)}
    assert momenta == {0.99}


def _hand_cnn_small_macs(height, channels):
    """conv3x3 widths 32,32,64,64,128,128, strides 1,1,2,1,2,1, then Dense 128 -> 10."""
    macs, size, c_in = 0, height, channels
    for c_out, stride in [(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]:
        size = (size + 2 - 3) // stride + 1
        macs += size * size * 9 * c_in * c_out
        c_in = c_out
    return macs + 128 * 10


@pytest.mark.parametrize(
    'shape, macs, trainable',
    [((28, 28, 1), 29_128_448, 288_170), ((32, 32, 3), 38_634_752, 288_746)],
)
def test_cnn_small_counts(shape, macs, trainable):
    model = models.cnn_small(10, shape)
    assert model.output.shape == (None, 10)
    assert _hand_cnn_small_macs(shape[0], shape[2]) == macs == macs_per_image(model)
    assert _count(model.trainable_variables) == trainable
    assert model.count_params() <= 300_000
    if shape[0] == 28:
        assert 10e6 <= macs <= 30e6
    # BN: gamma, beta trainable; moving mean, variance not; 448 channels in all.
    assert model.count_params() == trainable + 2 * 448


def test_macs_of_a_single_conv_and_dense():
    inputs = keras.Input((28, 28, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(x)  # -> 14x14x8
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    conv = 14 * 14 * 8 * (3 * 3 * 3)
    assert macs_per_image(model) == conv + 8 * 5 == 42_376


def test_l2_variables_of_cnn_small_by_hand():
    model = models.cnn_small(10, (28, 28, 1))
    dense = model.get_layer('logits')
    expected = [model.get_layer(f'conv{i}').kernel for i in range(1, 7)]
    expected += [dense.kernel, dense.bias]
    chosen = models.l2_variables(model)
    assert len(chosen) == 8
    assert {id(v) for v in chosen} == {id(v) for v in expected}
    bn_vars = [
        v for layer in model.layers if isinstance(layer, models.BatchNorm) for v in layer.weights
    ]
    assert len(bn_vars) == 6 * 4
    assert not {id(v) for v in bn_vars} & {id(v) for v in chosen}
    # Everything trainable is either decayed or a BN gamma / beta.
    assert len(model.trainable_variables) == 8 + 6 * 2


def test_l2_variables_of_wrn_exclude_batchnorm(wrn):
    chosen = models.l2_variables(wrn)
    assert len(chosen) == 28 + 2  # conv kernels + Dense kernel and bias
    bn_ids = {
        id(v)
        for layer in models._layers(wrn)
        if isinstance(layer, models.BatchNorm)
        for v in layer.weights
    }
    assert len(bn_ids) == 25 * 4  # inside the fused layers too
    assert not bn_ids & {id(v) for v in chosen}
    assert any(v is wrn.get_layer('logits').bias for v in chosen)


def test_l2_variables_and_macs_recurse_into_nested_models():
    inner = models.cnn_small(10, (28, 28, 1))
    inputs = keras.Input((28, 28, 1))
    outer = keras.Model(inputs, keras.layers.Dense(3, name='extra')(inner(inputs)))
    assert len(models.l2_variables(outer)) == 8 + 2
    assert macs_per_image(outer) == 29_128_448 + 10 * 3


def test_build_model():
    model = models.build_model('cnn_small', 7, (32, 32, 3))
    assert model.output.shape == (None, 7)
    assert set(models.ARCHS) == {'wrn28_2', 'cnn_small', 'resnet50'}
    with pytest.raises(ValueError, match='wrn28_2') as error:
        models.build_model('resnet18', 10, (32, 32, 3))
    assert 'cnn_small' in str(error.value) and 'resnet18' in str(error.value)


def test_resnet50_size_and_mixed_precision_logits():
    model = models.build_model('resnet50', 127, (64, 64, 3), 'bf16')
    # Keras' ResNet-50 without its top has 23,534,592 trainable parameters; the head
    # adds 2048 x 127 + 127.
    assert _count(model.trainable_variables) == 23_534_592 + 2048 * 127 + 127
    # 3.8 G multiply-adds at 224 x 224 (He et al. 2016, Table 1); (64 / 224)^2 of it here,
    # every feature map's side being 3.5 times smaller.
    at_224 = macs_per_image(models.build_model('resnet50', 127, (224, 224, 3)))
    assert at_224 == pytest.approx(3.8e9, rel=0.03)
    assert macs_per_image(model) == pytest.approx(at_224 * (64 / 224) ** 2, rel=1e-3)
    logits = model(np.zeros((2, 64, 64, 3), np.float32), training=False)
    assert logits.shape == (2, 127) and logits.dtype == 'float32'
    assert len(models.l2_variables(model)) == 53 + 2  # 53 conv kernels, Dense kernel and bias


def test_bn_lrelu_conv_config_and_limits():
    layer = models.BNLReLUConv(7, 3, bn_momentum=0.5, name='unit')
    again = models.BNLReLUConv.from_config(layer.get_config())
    assert (again.filters, again.kernel_size, again.bn_momentum) == (7, (3, 3), 0.5)
    assert (again.padding, again.use_bias, again.bn.momentum) == ('same', False, 0.5)
    with pytest.raises(ValueError, match='stride 1'):
        models.BNLReLUConv(7, 3, strides=2)
