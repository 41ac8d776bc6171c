"""Optimizers with the paper's weight EMA, and EfficientNet-style L2 weight decay.

RMSprop epsilon: Keras 3's RMSprop adds epsilon *inside* the square root,
`lr * g / sqrt(ms + epsilon)`, like TF1's RMSPropOptimizer that EfficientNet's
reference used, so the reference's epsilon=0.001 is used unchanged. The
one difference left: TF1 starts the mean square `ms` at 1, Keras at 0; the
warm-up from 1e-6 covers the first steps where that matters.
"""

import keras
from keras import ops

from keras_skipblock import _compat
from keras_skipblock.models.registry import set_bn_momentum  # noqa: F401  where it was; a model operation

PAPER_EMA_DECAY = 0.9999  # EfficientNet's reference; the paper prints 0.99995
RMSPROP_EPSILON = 0.001


class _EMAWarmup:
    """Weight EMA whose decay ramps up as min(decay, (1 + n) / (10 + n)), n = step."""

    # Our own because Keras' EMA uses a fixed decay: with 0.9999 the average
    # stays near the random initial weights for ~10^4 steps, whereas the
    # reference's tf.train.ExponentialMovingAverage(num_updates=step) ramps up.
    def __init__(self, *args, ema_warmup=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_warmup = ema_warmup

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        if not self.ema_warmup:
            return _compat.keras_ema_update(super(), trainable_variables)
        steps = ops.cast(self.iterations, "float32")
        momentum = ops.minimum(self.ema_momentum, (1.0 + steps) / (10.0 + steps))
        for var, average in zip(trainable_variables, _compat.ema_averages(self)):
            if average is not None:
                m = ops.cast(momentum, var.dtype)
                average.assign(m * average + (1.0 - m) * var)

    def get_config(self):
        return dict(super().get_config(), ema_warmup=self.ema_warmup)


@keras.saving.register_keras_serializable(package="keras_skipblock")
class RMSprop(_EMAWarmup, keras.optimizers.RMSprop):
    """keras.optimizers.RMSprop with `ema_warmup` (see `_EMAWarmup`)."""


@keras.saving.register_keras_serializable(package="keras_skipblock")
class SGD(_EMAWarmup, keras.optimizers.SGD):
    """keras.optimizers.SGD with `ema_warmup` (see `_EMAWarmup`)."""


def build_optimizer(name, learning_rate, ema_decay=PAPER_EMA_DECAY, ema_warmup=True,
                    momentum=0.9, rho=0.9, epsilon=RMSPROP_EPSILON, nesterov=False):
    """"rmsprop" (ImageNet set-up) or "sgd" (CIFAR-100); ema_decay None/0 turns EMA off."""
    ema = dict(use_ema=bool(ema_decay), ema_momentum=ema_decay or 0.99, ema_warmup=ema_warmup)
    name = name.lower()
    if name == "rmsprop":
        return RMSprop(learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, **ema)
    if name == "sgd":
        return SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **ema)
    raise ValueError(f"Unknown optimizer {name!r}; use 'rmsprop' or 'sgd'.")


KERNEL_ATTRIBUTES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def add_weight_decay(model, weight_decay):
    """Add `weight_decay * sum(w**2) / 2` over every conv/dense kernel to the loss.

    This is EfficientNet's reference decay (`weight_decay * sum(tf.nn.l2_loss(w))`,
    an L2 term in the loss, not decoupled decay) on kernels only: no BN
    parameters, no biases. It sets an L2 regularizer on the kernel variables;
    `model.losses` then carries the term, which `BiasLossModel.compute_loss`
    adds to the loss and Keras scales correctly across replicas. Returns the
    number of kernels regularized.
    """
    if not weight_decay:
        return 0
    regularizer = keras.regularizers.L2(weight_decay / 2.0)
    count = 0
    for layer in _compat.flatten_layers(model):
        for attribute in KERNEL_ATTRIBUTES:
            variable = getattr(layer, attribute, None)
            if isinstance(variable, keras.Variable) and variable.trainable:
                variable.regularizer = regularizer
                count += 1
    return count

