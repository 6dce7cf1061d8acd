"""What every semi-supervised algorithm shares: the backbone and its EMA copy, coupled
L2 weight decay, distribution-alignment state and the loss trackers.

An algorithm is a subclass that declares
  - `HPARAMS`: its own hyperparameters, each a constructor keyword argument whose default
    is the paper's value, with a help text and an allowed range (the driver turns them
    into `--<algorithm>.<name>` flags without naming them);
  - `views`: what its train step reads from the input pipeline (`pipeline.Views`);
and overrides `train_step`. State is updated through `assign_all`, which also works
inside `strategy.run` with several replicas.
"""

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from libml import models, pipeline


@dataclasses.dataclass(frozen=True)
class HParam:
    """An algorithm hyperparameter's help text and allowed values."""

    help: str
    allowed: str = ''  # Shown in the error for a bad value, e.g. '>= 0'.
    check: Callable[[Any], bool] = lambda value: True


def assign_all(pairs) -> None:
    """Assigns [(variable, value)] from a train step, on one device or many.

    Under a multi-replica strategy a variable cannot be assigned from replica context;
    the assignment moves to cross-replica context, each replica keeping its own value.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        for var, value in pairs:
            var.assign(value)
        return
    tf_vars = [getattr(var, 'value', var) for var, _ in pairs]
    values = [value for _, value in pairs]

    def update(strategy, tf_vars, values):
        for var, value in zip(tf_vars, values, strict=True):
            strategy.extended.update(var, lambda v, x: v.assign(x), args=(value,))

    ctx.merge_call(update, args=(tf_vars, values))


class SemiSupervised(keras.Model):
    """Base class. `make_net()` builds a fresh backbone mapping images to logits.

    `total_steps`, the length of training, is for losses whose weights follow a schedule
    (e.g. a ramp-up over a share of training). `class_weights`, one per class, weight
    each labeled example's loss by its class (class-balanced loss); None weighs all 1.
    `seed` keys the random draws a train step makes (`step_seed`).
    """

    # Logged names of the scalars a train step reports, in logging order.
    TRACKED = ('loss/total', 'loss/xe', 'loss/xeu', 'loss/wd')
    # name -> HParam, for the constructor's own keyword arguments.
    HPARAMS: dict[str, HParam] = {}
    # The paper's settings of a run with this learner (section 4.1): unlabeled images per
    # labeled one, steps per generation, and the sampling power alpha and final alignment
    # temperature t_min of the self-training around it. Every algorithm declares all four.
    PAPER_SETTINGS: dict[str, float] = {}
    # Labeled images only, weakly augmented; subclasses add unlabeled views.
    views = pipeline.Views()

    def __init__(
        self,
        make_net,
        num_classes: int,
        wd: float = 5e-4,
        ema_decay: float = 0.999,
        ema_warmup: bool = False,
        p_target=None,
        da_history: int = 128,
        total_steps: int | None = None,
        class_weights=None,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.seed = seed
        self.total_steps = total_steps
        self.class_weights = (
            None if class_weights is None else tf.constant(class_weights, tf.float32)
        )
        self.wd = wd
        self.ema_decay = ema_decay
        self.ema_warmup = ema_warmup
        self.net = make_net()
        self.ema_net = make_net()
        self.ema_net.set_weights(self.net.get_weights())
        self._l2_vars = models.l2_variables(self.net)

        # Distribution alignment: p_target is Normalize(p(y)^t) or None (no alignment);
        # p_model is the mean of a FIFO of the last `da_history` batch means of the raw
        # weak-view softmax, starting uniform.
        self.use_da = p_target is not None
        uniform = 1.0 / num_classes
        self.p_target = self.add_weight(
            shape=(num_classes,),
            initializer=keras.initializers.Constant(p_target if self.use_da else uniform),
            trainable=False,
            name='p_target',
        )
        self.p_model_history = self.add_weight(
            shape=(da_history, num_classes),
            initializer=keras.initializers.Constant(uniform),
            trainable=False,
            name='p_model_history',
        )
        self.p_model_index = self.add_weight(
            shape=(), initializer='zeros', dtype='int64', trainable=False, name='p_model_index'
        )
        self.ema_updates = self.add_weight(
            shape=(), initializer='zeros', dtype='int64', trainable=False, name='ema_updates'
        )
        self.trackers = {
            name: keras.metrics.Mean(name=name.replace('/', '_')) for name in self.TRACKED
        }
        self.test_accuracy = keras.metrics.Mean(name='acc_ema')

    @classmethod
    def hparam_defaults(cls) -> dict:
        """{name: default} of the hyperparameters in HPARAMS, read off the constructor."""
        params = inspect.signature(cls.__init__).parameters
        return {name: params[name].default for name in cls.HPARAMS}

    def call(self, x, training=False):
        return self.net(x, training=training)

    @property
    def metrics(self):
        return [*self.trackers.values(), self.test_accuracy]

    # ------------------------------------------------------------------------------
    # Pieces a train step is built from.

    def step_seed(self):
        """A stateless seed for the random draws of this train step: a function of the
        model's seed, the replica and the step, so a resumed run draws the same."""
        ctx = tf.distribute.get_replica_context()
        replica = 0 if ctx is None else ctx.replica_id_in_sync_group
        key = tf.cast(self.seed, tf.int64) * 1024 + tf.cast(replica, tf.int64)
        return tf.stack([key, tf.cast(self.optimizer.iterations, tf.int64)])

    def labeled_loss(self, y_l, losses):
        """Mean of the labeled examples' `losses`, each weighted by its class's weight."""
        if self.class_weights is None:
            return tf.reduce_mean(losses)
        return tf.reduce_mean(tf.gather(self.class_weights, y_l) * losses)

    def weight_decay_loss(self):
        """sum(0.5 * ||w||^2) over conv/dense kernels and dense biases (coupled L2)."""
        return tf.add_n([tf.reduce_sum(tf.square(v)) for v in self._l2_vars]) * 0.5

    def p_model(self):
        p = tf.reduce_mean(self.p_model_history, axis=0)
        return p / tf.reduce_sum(p)

    def align(self, probs):
        """q~ = Normalize(q * p_target / p_model); identity without alignment."""
        if not self.use_da:
            return probs
        q = probs * (1e-6 + self.p_target) / (1e-6 + self.p_model())
        return q / tf.reduce_sum(q, axis=-1, keepdims=True)

    def p_model_update(self, probs):
        """(variable, value) pairs pushing this batch's mean prediction into the FIFO."""
        batch_mean = tf.reduce_mean(probs, axis=0)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            batch_mean = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, batch_mean)
        slot = tf.math.floormod(self.p_model_index, self.p_model_history.shape[0])
        history = tf.tensor_scatter_nd_update(self.p_model_history, [[slot]], batch_mean[None])
        return [(self.p_model_history, history), (self.p_model_index, self.p_model_index + 1)]

    def ema_update(self):
        """(variable, value) pairs for ema <- ema - (1 - decay) * (ema - w).

        Non-trainable variables (BN moving statistics) are copied, not averaged. With
        `ema_warmup` the decay is min(decay, (1 + k) / (10 + k)) at update k, so that
        short runs do not evaluate a model that is mostly its random initialisation.
        """
        decay = tf.constant(self.ema_decay, tf.float32)
        if self.ema_warmup:
            k = tf.cast(self.ema_updates, tf.float32)
            decay = tf.minimum(decay, (1.0 + k) / (10.0 + k))
        pairs = [
            (e, e - (1.0 - decay) * (e - w))
            for e, w in zip(
                self.ema_net.trainable_variables, self.net.trainable_variables, strict=True
            )
        ]
        pairs += [
            (e, w)
            for e, w in zip(
                self.ema_net.non_trainable_variables, self.net.non_trainable_variables, strict=True
            )
        ]
        return pairs + [(self.ema_updates, self.ema_updates + 1)]

    def average_replica_state(self):
        """In replica context: sets the state each replica updates from its own shard
        (the floating-point non-trainable variables of the net and its EMA copy, i.e. the
        batch norm moving statistics) to its mean over all replicas."""
        local = [
            v
            for v in self.net.non_trainable_variables + self.ema_net.non_trainable_variables
            if tf.as_dtype(v.dtype).is_floating
        ]
        ctx = tf.distribute.get_replica_context()
        means = [ctx.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v)) for v in local]
        assign_all(list(zip(local, means, strict=True)))

    def apply_gradients(self, tape, loss):
        """Differentiates the replica's share of `loss` w.r.t. the raw net and steps."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tape:  # Record the division too; gradients are summed over replicas.
            loss = loss / replicas
        variables = self.net.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply(grads, variables)

    def track(self, **values):
        """Updates trackers from keyword names ('loss_xe' -> 'loss/xe'); returns results."""
        for key, value in values.items():
            self.trackers[key.replace('_', '/', 1)].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    # ------------------------------------------------------------------------------

    def test_step(self, data):
        """Accuracy of the EMA model, for `evaluate()`; the driver computes more."""
        x, y = data
        logits = self.ema_net(x, training=False)
        correct = tf.equal(tf.argmax(logits, -1), tf.cast(y, tf.int64))
        self.test_accuracy.update_state(tf.cast(correct, tf.float32))
        return {'acc/ema': self.test_accuracy.result()}
