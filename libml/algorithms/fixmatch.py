"""FixMatch (Sohn et al., 2020) with optional distribution alignment, as used by CReST+.

One training-mode forward pass over [x_l; x_w; x_s], so batch-norm statistics cover the
whole concatenation. Hard pseudo-labels come from the weak view's softmax, aligned to
the target distribution when alignment is on, and count only where the aligned
confidence reaches the threshold. The unlabeled loss is averaged over all unlabeled
images, masked or not.
"""

import tensorflow as tf

from libml import pipeline
from libml.algorithms import ops
from libml.algorithms.base import HParam, SemiSupervised, assign_all


class FixMatch(SemiSupervised):
    TRACKED = (*SemiSupervised.TRACKED, 'monitor/mask')

    # 7 unlabeled images per labeled one; CReST's alpha = 1/3, t_min = 0.5.
    PAPER_SETTINGS = dict(alpha=1 / 3, t_min=0.5, steps_per_generation=2**16, uratio=7)
    HPARAMS = {
        'threshold': HParam(
            'Aligned confidence a pseudo-label needs to count.', 'in [0, 1]', lambda v: 0 <= v <= 1
        ),
        'wu': HParam('Weight of the unlabeled loss.', '>= 0', lambda v: v >= 0),
    }
    views = pipeline.Views('weak', ('weak', 'strong'))

    def __init__(self, make_net, num_classes, threshold=0.95, wu=1.0, **kwargs):
        super().__init__(make_net, num_classes, **kwargs)
        self.threshold = threshold
        self.wu = wu

    def losses(self, y_l, logits_l, logits_w, logits_s):
        """Supervised and unlabeled losses of one batch, and the pseudo-label mask."""
        # Supervised loss
        loss_xe = self.labeled_loss(y_l, ops.cross_entropy(y_l, logits_l))

        # Pseudo-labels: hard, from the (aligned) weak-view prediction
        probs_w = tf.stop_gradient(tf.nn.softmax(logits_w))
        probs_aligned = self.align(probs_w)
        pseudo_labels = tf.argmax(probs_aligned, axis=-1)
        mask = tf.cast(tf.reduce_max(probs_aligned, axis=-1) >= self.threshold, tf.float32)

        # Unsupervised loss, divided by all unlabeled images
        loss_xeu = tf.reduce_mean(mask * ops.cross_entropy(pseudo_labels, logits_s))
        return loss_xe, loss_xeu, mask, probs_w

    def train_step(self, data):
        x_l, y_l = data['x_l'], data['y_l']
        x_w, x_s = data['x_u']
        n_l = tf.shape(x_l)[0]
        with tf.GradientTape() as tape:
            logits = self.net(tf.concat([x_l, x_w, x_s], 0), training=True)
            logits_w, logits_s = tf.split(logits[n_l:], 2)
            loss_xe, loss_xeu, mask, probs_w = self.losses(y_l, logits[:n_l], logits_w, logits_s)

            # Coupled L2 weight decay
            loss_wd = self.weight_decay_loss()
            loss = loss_xe + self.wu * loss_xeu + self.wd * loss_wd

        self.apply_gradients(tape, loss)
        assign_all(self.p_model_update(probs_w) + self.ema_update())
        return self.track(
            loss_total=loss,
            loss_xe=loss_xe,
            loss_xeu=loss_xeu,
            loss_wd=loss_wd,
            monitor_mask=tf.reduce_mean(mask),
        )
