"""The `--loss` choices: bias (BiasLoss), ce (cross-entropy), focal."""

import keras
from keras import ops

from keras_skipblock.losses import BiasLoss

LOSSES = ("bias", "ce", "focal")


@keras.saving.register_keras_serializable(package="keras_skipblock")
class SparseCategoricalFocalCrossentropy(keras.losses.Loss):
    """Focal loss (Lin et al. 2017) for integer labels: alpha * (1 - p_t)**gamma * CE.

    Our own because Keras' focal cross-entropy takes one-hot labels only.
    """

    def __init__(self, gamma=2.0, alpha=1.0, from_logits=True, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma, self.alpha, self.from_logits = float(gamma), float(alpha), from_logits

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        labels = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), y_pred.shape[-1])
        return keras.losses.categorical_focal_crossentropy(
            labels, y_pred, alpha=self.alpha, gamma=self.gamma, from_logits=self.from_logits
        )

    def get_config(self):
        return dict(super().get_config(), gamma=self.gamma, alpha=self.alpha, from_logits=self.from_logits)


def make_loss(name, alpha=0.3, beta=0.3, normalization="batch", clamp=(0.5, 1.5), label_smoothing=0.0,
              focal_gamma=2.0):
    """A loss for `BiasLossModel.compile` by its `--loss` name (label_smoothing: bias only)."""
    if name == "bias":
        return BiasLoss(alpha=alpha, beta=beta, clamp=clamp, normalization=normalization,
                        from_logits=True, label_smoothing=label_smoothing)
    if name == "ce":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="ce")
    if name == "focal":
        return SparseCategoricalFocalCrossentropy(gamma=focal_gamma)
    raise ValueError(f"Unknown loss {name!r}; use one of {LOSSES}.")

