"""Tests for libml/augment.py: every op eagerly and inside tf.data, on 28x28x1 and 32x32x3.

Each RandAugment op is compared with an independent expectation: the PIL function it imitates
(Pillow comes with matplotlib), a NumPy formula, or, for the geometric ops, NumPy nearest
sampling of the reference's 8-vectors for both signs of the random sign.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from libml import augment

SHAPES = [(28, 28, 1), (32, 32, 3)]
MODES = ['eager', 'tf.data']
# 0.5 would give the enhance ops factor 1.0 (no change); at 0.9, int(256m) != int(255m).
M_VALUES = (0.0, 0.3, 0.9)
# The geometric ops take a signed magnitude: both directions.
SIGNED_M_VALUES = (0.0, 0.3, -0.9)


def _seeds(n, key=0):
    """n distinct stateless seeds [n, 2]."""
    return np.stack([np.full(n, key), np.arange(n)], axis=1).astype(np.int64)


def _run(fn, inputs, mode):
    """fn applied to each element of `inputs` (a tuple of arrays), eagerly or in tf.data."""
    if mode == 'eager':
        outs = [fn(*(tf.constant(a[i]) for a in inputs)) for i in range(len(inputs[0]))]
        shape, dtype = outs[0].shape, outs[0].dtype
    else:
        ds = tf.data.Dataset.from_tensor_slices(inputs).map(fn)
        shape, dtype = ds.element_spec.shape, ds.element_spec.dtype
        outs = list(ds)
    assert shape == inputs[0].shape[1:], 'static shape must survive'
    assert dtype == tf.as_dtype(inputs[0].dtype)
    return np.stack([o.numpy() for o in outs])


def _uint8_images(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(20, 236, (n, *shape)).astype(np.uint8)  # Not full range: AutoContrast acts.
    if shape[-1] == 3:
        x[1, :, :, 0] = 77  # A constant channel, which AutoContrast and Equalize must keep.
    return x


def _pil(name, fn_name, x, *args):
    module = pytest.importorskip(f'PIL.{name}')
    image = pytest.importorskip('PIL.Image').fromarray(x[..., 0] if x.shape[-1] == 1 else x)
    if name == 'ImageEnhance':
        return np.asarray(getattr(module, fn_name)(image).enhance(*args)).reshape(x.shape)
    return np.asarray(getattr(module, fn_name)(image, *args)).reshape(x.shape)


def _spec_vector(name, level, h, w):
    if name == 'Rotate':
        cos, sin = math.cos(level), math.sin(level)
        x0 = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2
        y0 = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2
        return [cos, -sin, x0, sin, cos, y0]
    return {
        'ShearX': [1, level, 0, 0, 1, 0],
        'ShearY': [1, 0, 0, level, 1, 0],
        'TranslateX': [1, 0, level, 0, 1, 0],
        'TranslateY': [1, 0, 0, 0, 1, level],
    }[name]


def _np_transform(x, a):
    """Output (x, y) <- input (a0 x + a1 y + a2, a3 x + a4 y + a5), nearest; outside -> 128."""
    h, w, _ = x.shape
    ys, xs = np.mgrid[0:h, 0:w]

    def nearest(v):  # Half away from zero, like std::round in the TF kernel.
        return np.trunc(v + np.copysign(0.5, v)).astype(int)

    sx, sy = nearest(a[0] * xs + a[1] * ys + a[2]), nearest(a[3] * xs + a[4] * ys + a[5])
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    out = np.full_like(x, 128)
    out[inside] = x[sy[inside], sx[inside]]
    return out


def _expected(name, x, m):
    """The acceptable outputs of op `name` on uint8 image x at magnitude m."""
    xi = x.astype(np.int64)
    if name == 'Identity':
        return [x]
    if name == 'Invert':
        return [255 - x]
    if name == 'AutoContrast':  # Exact integer arithmetic, PIL's truncation.
        lo, hi = xi.min(axis=(0, 1)), xi.max(axis=(0, 1))
        return [np.where(hi > lo, (xi - lo) * 255 // np.maximum(hi - lo, 1), xi)]
    if name == 'Equalize':
        return [_pil('ImageOps', 'equalize', x)]
    if name == 'Posterize':
        return [x & ((0xFF << (8 - max(int(4 * m), 1))) & 0xFF)]  # int(4m) = 0 keeps 1 bit.
    if name == 'Solarize':
        return [np.where(xi >= int(256 * m), 255 - xi, xi)]
    if name == 'SolarizeAdd':
        return [np.where(xi < 128, np.minimum(xi + int(110 * m), 255), xi)]
    if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
        # The factor as float32 computes it: blends that land on an integer then truncate alike.
        factor = np.float32(0.1) + np.float32(1.8) * np.float32(m)
        return [_pil('ImageEnhance', name, x, float(factor))]
    level = {
        'Rotate': math.radians(30 * m),
        'ShearX': 0.3 * m,
        'ShearY': 0.3 * m,
        'TranslateX': 10 * m * x.shape[1] / 32,
        'TranslateY': 10 * m * x.shape[0] / 32,
    }[name]
    h, w, _ = x.shape
    return [_np_transform(x, _spec_vector(name, level, h, w))]


def test_registry_holds_the_16_ops_of_the_spec():
    assert sorted(augment.OPS) == sorted(
        'AutoContrast Equalize Invert Identity Posterize Solarize SolarizeAdd Color Contrast '
        'Brightness Sharpness Rotate ShearX ShearY TranslateX TranslateY'.split()
    )


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('shape', SHAPES, ids=str)
@pytest.mark.parametrize('name', sorted(augment.OPS))
def test_op_matches_its_definition(name, shape, mode):
    m_values = SIGNED_M_VALUES if name in augment.SIGNED else M_VALUES
    x = _uint8_images(shape, len(m_values))
    ms = np.array(m_values, np.float32)
    y = _run(augment.OPS[name], (x, ms), mode)
    for xi, m, yi in zip(x, m_values, y, strict=True):
        candidates = _expected(name, xi, m)
        assert any(np.array_equal(yi, c) for c in candidates), f'{name} at m={m}'
    # The expectations above could be identities by mistake: at m = 0.9 every op must act,
    # except Identity, and Color on one channel (a gray image is its own grayscale).
    if name != 'Identity' and not (name == 'Color' and shape[-1] == 1):
        assert not np.array_equal(y[-1], x[-1])


@pytest.mark.parametrize('m', [0.0, 0.2])
def test_posterize_below_a_quarter_keeps_the_top_bit_not_black(m):
    # The reference clamps its shift of 8 to 7: int(4m) = 0 behaves as 1 bit.
    x = tf.constant([[[200], [100], [128], [127]]], tf.uint8)
    np.testing.assert_array_equal(augment.posterize(x, m).numpy().ravel(), [128, 0, 128, 0])


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('name', ['TranslateX', 'TranslateY'])
def test_translate_moves_a_pixel_and_fills_with_gray(name, mode):
    x = np.zeros((20, 32, 32, 3), np.uint8)
    x[:, 10, 16] = 200
    ms = np.tile(np.float32([0.5, -0.5]), 10)  # 5 px at 32 px, one way or the other.
    y = _run(augment.OPS[name], (x, ms), mode)
    axis = 1 if name == 'TranslateX' else 0
    seen = set()
    for yi in y:
        (r,), (c,) = np.nonzero(yi[..., 0] == 200)
        shift = (c - 16) if axis == 1 else (r - 10)
        seen.add(shift)
        gray = np.take(yi, range(27, 32) if shift < 0 else range(5), axis=axis)
        assert np.all(gray == 128)
        assert np.sum(yi == 128) == 5 * 32 * 3
        assert np.sum(yi == 0) == 32 * 32 * 3 - 5 * 32 * 3 - 3
    assert seen == {-5, 5}, 'both signs, 5 px each'


def test_auto_contrast_and_equalize_keep_a_constant_image():
    x = tf.fill([28, 28, 1], tf.constant(90, tf.uint8))
    np.testing.assert_array_equal(augment.auto_contrast(x, 0.0), x)
    np.testing.assert_array_equal(augment.equalize(x, 0.0), x)


def _dispatch_stats(num_layers, mode, monkeypatch):
    """Runs randaugment with 16 fake ops that write their index and magnitude into the image."""

    def fake(index):
        def op(image, m):
            stamp = tf.stack([16 * index + 8, tf.cast(255.0 * m, tf.int32), 0])
            return tf.broadcast_to(tf.cast(stamp, tf.uint8), image.shape)

        return op

    monkeypatch.setattr(augment, 'OPS', {f'op{i}': fake(i) for i in range(16)})
    x = -np.ones((400, 8, 8, 3), np.float32)  # uint8 0, which no fake op writes.
    y = _run(lambda im, s: augment.randaugment(im, s, num_layers, 0.5), (x, _seeds(400, 1)), mode)
    u = np.round((y[:, 0, 0] + 1) * 127.5).astype(int)
    applied = u[:, 0] > 0
    return applied.mean(), (u[applied, 0] - 8) // 16, u[applied, 1] / 255


@pytest.mark.parametrize('mode', MODES)
def test_randaugment_draws_op_magnitude_and_coin_per_image(mode, monkeypatch):
    rate, ops, ms = _dispatch_stats(1, mode, monkeypatch)
    assert 0.4 < rate < 0.6
    assert set(ops) == set(range(16)), 'each of the 16 ops is drawn'
    assert ms.min() < 0.1 and ms.max() > 0.9 and len(set(ms)) > 50, 'continuous m ~ U[0, 1)'
    rate, _, _ = _dispatch_stats(2, mode, monkeypatch)
    assert 0.67 < rate < 0.83, 'two layers at p = 0.5 leave 25% of images untouched'


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_randaugment_range_and_identity_at_prob_0(shape, mode):
    x = np.random.default_rng(2).uniform(-1, 1, (8, *shape)).astype(np.float32)
    y = _run(augment.randaugment, (x, _seeds(8, 2)), mode)
    assert y.min() >= -1 and y.max() <= 1
    assert np.mean([not np.allclose(a, b, atol=0.01) for a, b in zip(x, y, strict=True)]) > 0.5
    # With no op applied only the uint8 round trip remains, which truncates.
    y = _run(lambda im, s: augment.randaugment(im, s, prob=0.0), (x, _seeds(8)), mode)
    u = np.floor((x + 1) * np.float32(127.5))
    np.testing.assert_array_equal(y, u / np.float32(127.5) - np.float32(1))


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_cutout_zeroes_one_clipped_square(shape, mode):
    size = shape[0] // 2
    x = np.full((400, *shape), 0.5, np.float32)
    y = _run(lambda im, s: augment.cutout(im, size, s), (x, _seeds(400, 3)), mode)
    interior, clipped = 0, set()  # Sides cut by the border: (edge, rows or columns left).
    for yi in y:
        assert set(np.unique(yi)) <= {0.0, 0.5}
        rows, cols = np.nonzero(yi[..., 0] == 0)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert np.all(yi[r0:r1, c0:c1] == 0), 'a filled rectangle'
        assert np.sum(yi == 0) == (r1 - r0) * (c1 - c0) * shape[-1]
        # A centre on the border (or one past it) leaves half of the square inside.
        assert size // 2 <= r1 - r0 <= size and size // 2 <= c1 - c0 <= size
        if r0 > 0 and c0 > 0 and r1 < shape[0] and c1 < shape[1]:
            interior += 1
            assert (r1 - r0, c1 - c0) == (size, size)
        clipped |= {('top', r1 - r0)} if r0 == 0 else set()
        clipped |= {('bottom', r1 - r0)} if r1 == shape[0] else set()
        clipped |= {('left', c1 - c0)} if c0 == 0 else set()
        clipped |= {('right', c1 - c0)} if c1 == shape[1] else set()
    assert interior > 0
    # round(U[0, side)) reaches both 0 and side, where only half of the square is left.
    for edge in ('top', 'bottom', 'left', 'right'):
        assert min(n for e, n in clipped if e == edge) == size // 2, edge


def _weak_views(image):
    """All outputs weak() may give: {(row offset, column offset, flipped): view}."""
    h, w, _ = image.shape
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)], mode='reflect')
    return {
        (dy, dx, flip): padded[dy : dy + h, dx : dx + w][:, :: -1 if flip else 1]
        for dy in range(9)
        for dx in range(9)
        for flip in (False, True)
    }


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_weak_is_a_reflect_padded_crop_maybe_flipped(shape, mode):
    image = (np.arange(np.prod(shape)).reshape(shape) / np.prod(shape) * 2 - 1).astype(np.float32)
    views = _weak_views(image)
    y = _run(augment.weak, (np.stack([image] * 48), _seeds(48, 4)), mode)
    seen = set()
    for yi in y:
        matches = [key for key, view in views.items() if np.array_equal(yi, view)]
        assert len(matches) == 1, 'exactly one crop offset and flip'
        seen.add(matches[0])
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in seen}) > 10, 'the offset is drawn per image'


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_strong_changes_most_images_and_always_cuts_out(shape, mode):
    x = np.random.default_rng(5).uniform(-1, 1, (32, *shape)).astype(np.float32)
    y = _run(augment.strong, (x, _seeds(32, 5)), mode)
    assert y.min() >= -1 and y.max() <= 1
    changed = [not np.allclose(a, b, atol=0.01) for a, b in zip(x, y, strict=True)]
    assert np.mean(changed) > 0.9
    # RandAugment outputs are k / 127.5 - 1, never 0.0, so the exact zeros are Cutout's.
    size = shape[0] // 2
    zeros = np.sum(y[..., 0] == 0, axis=(1, 2))
    assert np.all(zeros >= (size // 2) ** 2) and np.all(zeros <= size**2)
    # Outside the cut-out square, an image that no RandAugment op changed is a weak view of the
    # input on the uint8 grid. About 30% are (no layer applied, or ops like Identity).
    plain = []
    for xi, yi in zip(x, y, strict=True):
        kept = yi != 0
        for key, view in _weak_views(xi).items():
            grid = np.floor((view + 1) * np.float32(127.5)) / np.float32(127.5) - np.float32(1)
            if np.array_equal(yi[kept], grid[kept]):
                plain.append(key)
    assert 0.1 < len(plain) / len(y) < 0.6
    assert len(set(plain)) > 1, 'crop and flip happen before RandAugment'


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('name', ['weak', 'strong'])
def test_an_augmentation_is_a_function_of_image_and_seed(name, mode):
    augmentation = augment.AUGMENTATIONS[name]
    x = np.random.default_rng(6).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    first = _run(augmentation, (x, _seeds(16, 7)), mode)
    np.testing.assert_array_equal(_run(augmentation, (x, _seeds(16, 7)), mode), first)
    other = _run(augmentation, (x, _seeds(16, 8)), mode)
    assert np.mean([not np.array_equal(a, b) for a, b in zip(first, other, strict=True)]) > 0.8


def test_randaugment_draws_the_direction_of_the_geometric_ops(monkeypatch):
    monkeypatch.setattr(augment, 'OPS', {'TranslateX': augment.translate_x})
    x = np.zeros((64, 32, 32, 1), np.float32)
    x[:, :, 16] = 1.0  # A bright column in the middle.
    y = _run(lambda im, s: augment.randaugment(im, s, 1, 1.0), (x, _seeds(64, 9)), 'eager')
    column = np.argmax(y[:, 0, :, 0], axis=1)
    assert (column < 16).any() and (column > 16).any(), 'moved both ways'
