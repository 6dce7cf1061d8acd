"""Weak and strong image augmentations of FixMatch / CReST, in pure TF.

`weak` is the labeled / weak-unlabeled view (pad-and-crop, then horizontal flip), `strong` the
strong-unlabeled view (weak, then RandAugment, then Cutout). Both take one float image [H, W, C]
in [-1, 1] with a static shape (28x28x1 Fashion-MNIST or 32x32x3 CIFAR) and a seed, return the
same shape and dtype, and run eagerly or inside `tf.data.Dataset.map`.

Every random draw is a stateless op of the seed (a [2] integer tensor; `tf.random.
experimental.stateless_split` derives one seed per draw), so an image's augmentation is a
function of the image and its seed: the same on every run, in any thread, after any resume.

The RandAugment ops follow the PIL semantics of the reference code (google-research/crest,
`third_party/augment_ops.py`) without tensorflow-addons: each takes a uint8 image and a
magnitude m and returns a uint8 image of the same shape; they draw nothing themselves. `OPS`
is their registry; the geometric ones (`SIGNED`) take a signed magnitude in (-1, 1), the sign
choosing the direction.
"""

import functools
import math

import tensorflow as tf

# Value of the pixels that a geometric op uncovers: mid-gray rather than black, so that the
# intensity ops that may follow do not see an artificial dark border.
FILL_VALUE = 128


def _enhance_factor(m):
    # Color, Contrast, Brightness and Sharpness share the reference's factor range [0.1, 1.9).
    return 0.1 + 1.8 * m


def _blend(degenerate, image, factor):
    """PIL `ImageEnhance`: factor 0 gives `degenerate`, 1 `image`, above 1 extrapolates."""
    degenerate = tf.cast(degenerate, tf.float32)
    blended = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
    return tf.saturate_cast(blended, tf.uint8)  # Clips, then truncates like PIL.


def _grayscale(image):
    """PIL's `convert('L')` in its fixed-point form; a one-channel image is its own grayscale."""
    if image.shape[-1] == 1:
        return image
    weighted = tf.cast(image, tf.int32) * tf.constant([19595, 38470, 7471])
    return tf.cast((tf.reduce_sum(weighted, -1, keepdims=True) + 32768) // 65536, tf.uint8)


def _transform(image, transform):
    """Samples output pixel (x, y) at input (a0 x + a1 y + a2, b0 x + b1 y + b2), nearest.

    The op fills uncovered pixels with 0, which is a legitimate pixel value; an appended channel
    of ones tells them apart (its 0s mark them), and they become FILL_VALUE.
    """
    h, w, _ = image.shape
    wrapped = tf.concat([image, tf.ones([h, w, 1], image.dtype)], axis=-1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=wrapped[None],
        transforms=tf.cast(tf.stack(transform), tf.float32)[None],
        output_shape=[h, w],
        fill_value=0.0,
        interpolation='NEAREST',
        fill_mode='CONSTANT',
    )[0]
    return tf.where(out[..., -1:] == 0, tf.constant(FILL_VALUE, image.dtype), out[..., :-1])


# RandAugment ops: (uint8 image [H, W, C], magnitude m in [0, 1)) -> uint8 image [H, W, C];
# the geometric ones take m in (-1, 1). Ops without a magnitude still take m, so that every
# op has the same signature.


def identity(image, m):
    del m
    return tf.identity(image)


def auto_contrast(image, m):
    """Stretches each channel's min..max to 0..255; constant channels are left unchanged."""
    del m
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=[0, 1])
    hi = tf.reduce_max(x, axis=[0, 1])
    stretched = (x - lo) * (255.0 / tf.maximum(hi - lo, 1.0))
    # PIL truncates. The exact value is an integer or at least 1/255 below one, so adding 1e-3
    # absorbs float32 error (which could turn 255 into 254) without changing any result.
    return tf.saturate_cast(tf.where(hi > lo, tf.floor(stretched + 1e-3), x), tf.uint8)


def equalize(image, m):
    """Per-channel histogram equalization with the lookup table of PIL `ImageOps.equalize`."""
    del m
    h, w, c = image.shape
    x = tf.reshape(tf.cast(image, tf.int32), [h * w, c])
    # One bincount for all channels: channel k counts into bins 256k .. 256k + 255.
    offset = 256 * tf.range(c)
    hist = tf.reshape(tf.math.bincount(x + offset, minlength=256 * c, maxlength=256 * c), [c, 256])
    # PIL's step ignores the count of the highest value present; step 0 means nothing to spread.
    top_count = tf.gather(hist, tf.reduce_max(x, axis=0), batch_dims=1)
    step = (h * w - top_count) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(hist, axis=1, exclusive=True) + safe_step // 2) // safe_step
    equalized = tf.gather(tf.reshape(tf.minimum(lut, 255), [-1]), x + offset)
    out = tf.where(step > 0, equalized, x)
    return tf.cast(tf.reshape(out, [h, w, c]), tf.uint8)


def invert(image, m):
    del m
    return 255 - image


def posterize(image, m):
    """Keeps the max(int(4m), 1) high bits of each pixel.

    int(4m) = 0 would shift by 8, which TF leaves undefined for uint8; the reference's
    shift of 8 is clamped to 7, i.e. it keeps 1 bit, and so does this.
    """
    shift = tf.cast(8 - tf.maximum(tf.cast(4.0 * m, tf.int32), 1), tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, m):
    """Inverts the pixels >= int(256m): m = 0 inverts every pixel."""
    threshold = tf.cast(256.0 * m, tf.int32)
    return tf.where(tf.cast(image, tf.int32) >= threshold, 255 - image, image)


def solarize_add(image, m):
    """Adds int(110m) to the pixels below 128."""
    added = tf.saturate_cast(tf.cast(image, tf.int32) + tf.cast(110.0 * m, tf.int32), tf.uint8)
    return tf.where(image < 128, added, image)


def color(image, m):
    """PIL Color (saturation). A one-channel image is its own grayscale, so this is identity."""
    return _blend(_grayscale(image), image, _enhance_factor(m))


def contrast(image, m):
    """PIL Contrast: blend with a flat image at the rounded mean gray level."""
    mean = tf.reduce_mean(tf.cast(_grayscale(image), tf.float32))
    return _blend(tf.floor(mean + 0.5), image, _enhance_factor(m))


def brightness(image, m):
    """PIL Brightness: blend with black."""
    return _blend(tf.zeros_like(image), image, _enhance_factor(m))


def sharpness(image, m):
    """PIL Sharpness: blend with the image smoothed by PIL's SMOOTH kernel, border unsmoothed."""
    h, w, c = image.shape
    x = tf.cast(image, tf.float32)
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, c, 1])
    smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], 'VALID')[0]
    smooth = tf.pad(tf.round(smooth), [[1, 1], [1, 1], [0, 0]])  # PIL rounds its filters.
    border = tf.pad(
        tf.zeros([h - 2, w - 2, 1], tf.bool), [[1, 1], [1, 1], [0, 0]], constant_values=True
    )
    return _blend(tf.where(border, x, smooth), image, _enhance_factor(m))


def rotate(image, m):
    """Rotates by 30m degrees about the image centre, m in (-1, 1)."""
    h, w, _ = image.shape
    theta = 30.0 * m * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    x0 = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y0 = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    return _transform(image, [cos, -sin, x0, sin, cos, y0, 0.0, 0.0])


def shear_x(image, m):
    """Shears by 0.3m, m in (-1, 1): row y moves sideways by 0.3m * y pixels."""
    return _transform(image, [1.0, 0.3 * m, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, m):
    return _transform(image, [1.0, 0.0, 0.0, 0.3 * m, 1.0, 0.0, 0.0, 0.0])


def translate_x(image, m):
    """Moves the content by 10m pixels at 32 px (TRANSLATE_CONST = 10), scaled to the width."""
    pixels = 10.0 * m * image.shape[1] / 32.0
    return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, m):
    pixels = 10.0 * m * image.shape[0] / 32.0
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


OPS = {
    'AutoContrast': auto_contrast,
    'Equalize': equalize,
    'Invert': invert,
    'Identity': identity,
    'Posterize': posterize,
    'Solarize': solarize,
    'SolarizeAdd': solarize_add,
    'Color': color,
    'Contrast': contrast,
    'Brightness': brightness,
    'Sharpness': sharpness,
    'Rotate': rotate,
    'ShearX': shear_x,
    'ShearY': shear_y,
    'TranslateX': translate_x,
    'TranslateY': translate_y,
}

# The ops that move the image one way or the other: RandAugment draws the direction.
SIGNED = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def _to_uint8(image):
    # Saturating cast truncates, so a pixel can lose one level, as in the reference.
    return tf.saturate_cast((image + 1.0) * 127.5, tf.uint8)


def _to_float(image):
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def _uniform(seed, minval=0.0, maxval=1.0, dtype=tf.float32):
    return tf.random.stateless_uniform([], seed, minval, maxval, dtype)


def _random_layer(image, ops, prob, seed):
    """With probability `prob`, applies one op drawn uniformly from `ops` at m ~ U[0, 1),
    with a random sign for the SIGNED ops."""
    m_seed, sign_seed, op_seed, coin_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4)
    )
    m = _uniform(m_seed)
    signed_m = tf.where(_uniform(sign_seed) < 0.5, -m, m)
    index = _uniform(op_seed, 0, len(ops), tf.int32)
    branches = [functools.partial(op, image, signed_m if name in SIGNED else m) for name, op in ops]
    # switch_case keeps the choice inside the graph: a fresh op for every image in tf.data.
    return tf.cond(
        _uniform(coin_seed) < prob,
        lambda: tf.switch_case(index, branches),
        lambda: image,
    )


def randaugment(image, seed, num_layers=2, prob=0.5):
    """FixMatch's RandAugment variant (`randaug2-0.5---all`).

    Each of the `num_layers` layers draws its own op from `OPS` and its own continuous magnitude,
    and is applied with probability `prob`. The ops work on uint8, as the reference's PIL-like
    ops do. Returns a float image in [-1, 1] of the input's shape.
    """
    ops = list(OPS.items())  # Read at call time, so that a test can swap the registry.
    x = _to_uint8(image)
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
        x = _random_layer(x, ops, prob, layer_seed)
    return _to_float(x)


def cutout(image, size, seed):
    """Sets a size x size square to 0 (mid-gray in [-1, 1]); it may stick out of the image.

    The centre is round(U[0, side)) on each axis, so it can sit on the last row or column, or
    one beyond it, and then only part of the square is inside.
    """
    h, w, _ = image.shape
    y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    cy = tf.cast(tf.round(_uniform(y_seed, 0.0, h)), tf.int32)
    cx = tf.cast(tf.round(_uniform(x_seed, 0.0, w)), tf.int32)

    def inside(center, side):
        start = center - size // 2
        return (tf.range(side) >= start) & (tf.range(side) < start + size)

    square = inside(cy, h)[:, None, None] & inside(cx, w)[None, :, None]
    return tf.where(square, tf.zeros_like(image), image)


def weak(image, seed):
    """Reflect-pads by 4 pixels and crops back at a random offset, then flips with p = 0.5."""
    h, w, c = image.shape
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode='REFLECT')
    cropped = tf.image.stateless_random_crop(padded, [h, w, c], crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, flip_seed)


def strong(image, seed):
    """weak, then RandAugment, then Cutout of half the image side (16 px at 32, 14 at 28)."""
    weak_seed, ra_seed, cut_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = randaugment(weak(image, weak_seed), ra_seed)
    return cutout(image, min(image.shape[0], image.shape[1]) // 2, cut_seed)


# The views an algorithm may ask the input pipeline for (`pipeline.Views`), by name.
AUGMENTATIONS = {'weak': weak, 'strong': strong}
