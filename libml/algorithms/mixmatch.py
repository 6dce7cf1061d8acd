"""MixMatch (Berthelot et al., 2019) with optional distribution alignment, as used by CReST+.

Each unlabeled image comes in K weak views. Its label guess is the mean softmax over the
K views (training-mode forward, no gradient), aligned to the target distribution when
alignment is on, then sharpened with temperature T. Labeled images (one-hot labels) and
all unlabeled views (the guess, repeated per view) are mixed up with a random
permutation of themselves; each example keeps the larger weight max(l, 1 - l),
l ~ Beta(mixup_beta, mixup_beta). The mixed labeled part gets a soft cross-entropy, the mixed
unlabeled part a squared error between softmax and mixed target, weighted by wu ramped
linearly from 0 over MixMatch's 16,384 steps (`rampup_max`), or over the first `rampup`
share of a shorter run, 1/8: 16,384 is 1/8 of a paper generation of 2^17 steps (at
least one step). A longer run, e.g. the one-generation baseline of Table 2 (393,216
steps), still ramps over 16,384 steps.

Batch norm: as in the reference, the mixed batch [labeled; unlabeled] is forwarded in one
pass, so its statistics cover labeled and unlabeled rows together (MixMatch's own code
interleaves the two instead). The label-guess forward runs in training mode too, so each
step updates the moving statistics twice, guess pass first, as Keras batch norm does in
the reference. Under several replicas each replica mixes within its own share.
"""

import tensorflow as tf

from libml import pipeline
from libml.algorithms import ops
from libml.algorithms.base import HParam, SemiSupervised, assign_all


class MixMatch(SemiSupervised):
    TRACKED = (*SemiSupervised.TRACKED, 'monitor/wu')
    # Its own batch of 64 + 64 images, 2^17 steps per generation; alpha = 1/2, t_min = 0.8.
    PAPER_SETTINGS = dict(alpha=1 / 2, t_min=0.8, steps_per_generation=2**17, uratio=1)
    HPARAMS = {
        'K': HParam(
            'Weak views per unlabeled image, for its label guess.',
            'an integer in [1, 64]',  # Each view is a forward pass per unlabeled image.
            lambda v: isinstance(v, int) and 1 <= v <= 64,
        ),
        'T': HParam('Sharpening temperature of the label guess.', '> 0', lambda v: v > 0),
        'mixup_beta': HParam(
            'Mixup weights l ~ Beta(mixup_beta, mixup_beta).', '> 0', lambda v: v > 0
        ),
        'wu': HParam('Weight of the unlabeled loss after the ramp-up.', '>= 0', lambda v: v >= 0),
        'rampup': HParam(
            'Share of the training steps over which wu rises linearly from 0.',
            'in [0, 1]',
            lambda v: 0 <= v <= 1,
        ),
        'rampup_max': HParam(
            'Longest ramp-up of wu, in steps (MixMatch: 16,384).',
            'in [0, 10000000]',
            lambda v: 0 <= v <= 10_000_000,
        ),
    }

    def __init__(
        self,
        make_net,
        num_classes,
        K=2,
        T=0.5,
        mixup_beta=0.75,
        wu=75.0,
        rampup=0.125,
        rampup_max=16384,
        **kwargs,
    ):
        super().__init__(make_net, num_classes, **kwargs)
        self.K, self.T, self.mixup_beta, self.wu = K, T, mixup_beta, wu
        self.rampup_steps = min(ops.rampup_steps(rampup, self.total_steps), rampup_max)

    @property
    def views(self):
        return pipeline.Views('weak', ('weak',) * self.K)

    def guess_labels(self, x_u):
        """Sharpened, aligned mean softmax over the K views; and the raw mean (for p_model)."""
        logits = self.net(tf.concat(x_u, 0), training=True)
        probs = tf.stop_gradient(tf.reduce_mean(tf.split(tf.nn.softmax(logits), self.K), 0))
        return ops.sharpen(self.align(probs), self.T), probs

    def losses(self, logits, targets, y_l):
        """Soft cross-entropy of the first len(y_l) (labeled) rows, each weighted by its own
        label's class; squared error of the rest."""
        n_l = tf.shape(y_l)[0]
        loss_xe = self.labeled_loss(y_l, ops.soft_cross_entropy(targets[:n_l], logits[:n_l]))
        loss_xeu = tf.reduce_mean(ops.squared_error(targets[n_l:], tf.nn.softmax(logits[n_l:])))
        return loss_xe, loss_xeu

    def train_step(self, data):
        x_l, y_l, x_u = data['x_l'], data['y_l'], data['x_u']

        # Label guess for the unlabeled images
        guess, probs_u = self.guess_labels(x_u)

        # MixUp over [labeled; every unlabeled view]
        x = tf.concat([x_l, *x_u], 0)
        targets = tf.concat([tf.one_hot(y_l, self.num_classes)] + [guess] * self.K, 0)
        x_mix, targets_mix = ops.mixup(
            x, targets, *ops.mixup_draw(tf.shape(x)[0], self.mixup_beta, self.step_seed())
        )

        with tf.GradientTape() as tape:
            logits = self.net(x_mix, training=True)
            loss_xe, loss_xeu = self.losses(logits, targets_mix, y_l)

            # Coupled L2 weight decay; the unlabeled weight ramps up
            loss_wd = self.weight_decay_loss()
            wu = self.wu * ops.linear_rampup(self.optimizer.iterations, self.rampup_steps)
            loss = loss_xe + wu * loss_xeu + self.wd * loss_wd

        self.apply_gradients(tape, loss)
        assign_all(self.p_model_update(probs_u) + self.ema_update())
        return self.track(
            loss_total=loss, loss_xe=loss_xe, loss_xeu=loss_xeu, loss_wd=loss_wd, monitor_wu=wu
        )
