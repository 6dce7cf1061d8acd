"""Losses and operations that semi-supervised algorithms share, written once.

Losses return one value per example, so that a caller can weight or mask them before it
averages. Labels are integer class indices, targets are probability rows.
"""

import tensorflow as tf


def cross_entropy(labels, logits):
    """-log softmax(logits)[label], per example."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def soft_cross_entropy(targets, logits):
    """-sum_c targets_c * log softmax(logits)_c, per example."""
    return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def squared_error(targets, probs):
    """Mean over classes of (targets - probs)^2, per example (MixMatch's L2 loss)."""
    return tf.reduce_mean(tf.square(targets - probs), axis=-1)


def sharpen(probs, temperature):
    """Normalize(probs^(1/T)): T < 1 makes a distribution more confident."""
    sharpened = tf.pow(probs, 1.0 / temperature)
    return sharpened / tf.reduce_sum(sharpened, axis=-1, keepdims=True)


def mixup_draw(n, beta, seed):
    """Mixup's random choices for n examples, a function of the stateless `seed`:
    (weights, partners).

    weights[i] = max(l, 1 - l) with l ~ Beta(beta, beta), drawn as g1 / (g1 + g2) with
    g1, g2 ~ Gamma(beta); taking the max keeps every mixed example closer to its own
    original (weight >= 0.5). partners is a random permutation of 0..n-1.
    """
    gamma_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    g1, g2 = tf.unstack(tf.random.stateless_gamma([2, n], gamma_seed, alpha=beta))
    lam = tf.math.divide_no_nan(g1, g1 + g2)  # A small beta can draw 0 twice: weight 1.
    partners = tf.argsort(tf.random.stateless_uniform([n], order_seed))
    return tf.maximum(lam, 1.0 - lam), partners


def mixup(x, targets, weights, partners):
    """Mixes each example with its partner, images and targets with the same weight.

    x_mix[i] = w[i] * x[i] + (1 - w[i]) * x[partners[i]], and likewise for targets.
    """

    def mix(v):
        w = tf.reshape(weights, [-1] + [1] * (len(v.shape) - 1))
        return w * v + (1.0 - w) * tf.gather(v, partners)

    return mix(x), mix(targets)


def linear_rampup(step, length):
    """min(step / length, 1): a weight that rises linearly from 0; 1 when length <= 0."""
    if length <= 0:
        return tf.constant(1.0)
    return tf.minimum(tf.cast(step, tf.float32) / float(length), 1.0)


def rampup_steps(share: float, total_steps: int | None) -> int:
    """Length in steps of a ramp-up over `share` of `total_steps`: at least one step when
    share > 0 (0: no ramp-up)."""
    if share <= 0:
        return 0
    if not total_steps:
        raise ValueError('a ramp-up over a share of training needs total_steps')
    return max(1, round(share * total_steps))
