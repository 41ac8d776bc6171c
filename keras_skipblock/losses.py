"""Bias Loss (Abrahamyan et al., ICCV 2021): cross-entropy reweighted per sample
by the variance of the sample's last-conv feature map.

SPEC §1, step by step:
  1. v_i: unbiased variance of sample i's flattened feature map (float32);
  2. scale: (v_i - min) / (max - min) with min/max over the batch ("batch"),
     or min = the smallest variance seen so far in training ("global");
  3. z_i = exp(alpha * v_i) - beta, clamped to `clamp` (paper §5);
  4. loss = mean_i z_i * CE_i, with z_i treated as a constant (no gradient).

Degenerate batches: when every variance in the batch is equal (a batch of one,
identical samples, constant features) the batch carries no ranking, max - min
is 0, and every scaled variance is defined as 0, so each weight is
clamp(1 - beta). The authors' code divides by zero there.
"""

import collections
import warnings

import keras
from keras import ops

NORMALIZATIONS = ("batch", "global")

# A batch whose variances differ by no more than float32 rounding is degenerate:
# dividing by that spread would only amplify rounding noise, which differs
# between CPUs. Rounding of a variance over K <= 1e5 values is ~log2(K) u
# relative (u = 2^-24); _RELATIVE_RANGE = 2^-16 is 2^8 u, far below the spread of
# any real batch (percents).
_MIN_RANGE = 1e-12
_RELATIVE_RANGE = 2.0 ** -16

BiasWeights = collections.namedtuple(
    "BiasWeights", ["weights", "clamped", "variance_min", "variances"]
)
BiasWeights.__doc__ = """Per-sample bias weights and what produced them.

weights: (batch,) float32, z(v) after clamping.
clamped: (batch,) bool, True where the clamp changed z.
variance_min: scalar float32, the minimum used for scaling (for "global",
    the updated running minimum).
variances: (batch,) float32, the raw unbiased per-sample variances.
"""


def sample_variance(features):
    """Unbiased variance of each sample's flattened features, in float32.

    Float32 even under mixed precision: float16 squares of activations
    overflow and lose the small variances that the scaling compares.
    """
    features = _check_rank(ops.convert_to_tensor(features))
    flat = ops.reshape(ops.cast(features, "float32"), (ops.shape(features)[0], -1))
    n = ops.cast(ops.shape(flat)[1], "float32")
    mean = ops.mean(flat, axis=1, keepdims=True)
    squared = ops.sum(ops.square(flat - mean), axis=1)
    # One feature per sample has no spread: define its variance as 0.
    return squared / ops.maximum(n - 1.0, 1.0)


def _check_rank(features):
    if len(features.shape) < 2:
        raise ValueError(
            "BiasLoss: `features` must have a batch axis and at least one "
            f"feature axis (rank >= 2); got shape {tuple(features.shape)}. "
            "Pass the last conv layer's output (batch, h, w, c)."
        )
    return features


def _check_finite(variances):
    """Fail loudly on NaN/Inf features instead of returning a NaN loss."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.debugging.check_numerics(
            variances,
            "BiasLoss: the feature map contains NaN or Inf (training has "
            "diverged or the input holds non-finite values). Lower the "
            "learning rate, check the input pipeline, or add "
            "keras.callbacks.TerminateOnNaN().",
        )
    # Other backends cannot raise from a compiled step: a non-finite sample
    # gets the lowest weight, and its (non-finite) CE still surfaces in the loss.
    return ops.where(ops.isfinite(variances), variances, ops.zeros_like(variances))


def _check_finite_logits(logits):
    """Fail loudly on NaN/Inf logits: softmax cross-entropy of an infinite logit is
    inf - inf = NaN, which would otherwise spread silently into the weights."""
    if keras.backend.backend() != "tensorflow":
        return logits
    import tensorflow as tf

    return tf.debugging.check_numerics(
        logits,
        "BiasLoss: the logits contain NaN or Inf (training has diverged, or the model's "
        "output overflowed). Lower the learning rate or check the model's last layer.",
    )


def _cross_replica_min_max(batch_min, batch_max):
    """Min and max over all replicas of a tf.distribute strategy.

    The weights must equal those of one device seeing the global batch, so
    each replica gathers every replica's extremes (two scalars) and reduces.
    """
    if keras.backend.backend() != "tensorflow":
        return batch_min, batch_max
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return batch_min, batch_max
    extremes = context.all_gather(ops.stack([batch_min, -batch_max])[None], axis=0)
    reduced = ops.min(extremes, axis=0)
    return reduced[0], -reduced[1]


def bias_weights(
    features,
    alpha=0.3,
    beta=0.3,
    clamp=(0.5, 1.5),
    normalization="batch",
    variance_min=None,
):
    """Bias Loss's per-sample weights z(v) for a batch of feature maps.

    Args:
        features: (batch, ...) last-conv feature maps.
        alpha, beta, clamp, normalization: as in `BiasLoss`.
        variance_min: for `normalization="global"`, the running minimum of
            the variances seen so far (None or +inf before the first batch).

    Returns:
        `BiasWeights(weights, clamped, variance_min, variances)`; weights are
        float32 and carry no gradient.
    """
    _validate(alpha, beta, clamp, normalization)
    features = ops.stop_gradient(ops.convert_to_tensor(features))
    variances = _check_finite(sample_variance(features))
    batch_min, batch_max = _cross_replica_min_max(ops.min(variances), ops.max(variances))
    if normalization == "global" and variance_min is not None:
        low = ops.minimum(ops.cast(variance_min, "float32"), batch_min)
    else:
        low = batch_min
    spread = batch_max - batch_min
    degenerate = spread <= ops.maximum(_MIN_RANGE, _RELATIVE_RANGE * ops.abs(batch_max))
    scaled = ops.where(
        degenerate,
        ops.zeros_like(variances),
        (variances - low) / ops.where(degenerate, ops.ones_like(spread), spread),
    )
    z = ops.exp(alpha * scaled) - beta
    if clamp is None:
        weights, clamped = z, ops.zeros_like(z, dtype="bool")
    else:
        weights = ops.clip(z, clamp[0], clamp[1])
        clamped = ops.logical_or(z < clamp[0], z > clamp[1])
    return BiasWeights(ops.stop_gradient(weights), clamped, low, variances)


def _validate(alpha, beta, clamp, normalization, warn=False):
    from keras_skipblock.validation import bias_loss_clamp_problem, check_bias_loss_numbers

    check_bias_loss_numbers(alpha, beta)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"BiasLoss: unknown normalization {normalization!r}; use one of "
            f"{NORMALIZATIONS} ('batch': min/max of the batch's variances; "
            "'global': running minimum, the authors' default)."
        )
    if clamp is not None:
        if len(clamp) != 2:
            raise ValueError(f"BiasLoss: clamp must be (low, high) or None; got {clamp!r}.")
        low, high = clamp
        if not 0 < low < high:
            raise ValueError(
                f"BiasLoss: clamp bounds must satisfy 0 < low < high; got {clamp!r}. "
                "The paper uses (0.5, 1.5); pass clamp=None to disable."
            )
    elif beta >= 1.0:
        # With no clamp the smallest weight is exp(0) - beta = 1 - beta.
        raise ValueError(
            f"BiasLoss: beta={beta} makes the weight 1 - beta <= 0 for the "
            "lowest-variance samples, which would reward their errors. Use "
            "beta < 1 or set a clamp such as (0.5, 1.5)."
        )
    problem = bias_loss_clamp_problem(alpha, beta, clamp)
    if problem and warn:
        # Legal but almost surely a mistake (beta >= 1 with the paper's clamp): say so.
        warnings.warn(f"BiasLoss: {problem}", UserWarning, stacklevel=3)


@keras.saving.register_keras_serializable(package="keras_skipblock")
class BiasLoss(keras.losses.Loss):
    """Cross-entropy weighted per sample by its feature map's variance.

    Bias Loss needs the logits *and* the last conv feature map. Compile a
    `keras_skipblock.BiasLossModel` (or a model wrapped with
    `keras_skipblock.with_features`) with it; called directly it takes
    `y_pred = {"logits": ..., "features": ...}`.

    Args:
        alpha: growth of the weight with variance, `z = exp(alpha*v) - beta`.
        beta: offset of the weight; the lowest-variance sample gets `1 - beta`.
        clamp: `(low, high)` bounds for z (paper §5), or None for none.
        normalization: "batch" (min/max of the batch's variances) or
            "global" (min = running minimum over training; the model keeps it
            as a saved, non-trainable variable).
        from_logits: whether `logits` are logits (True) or probabilities.
        label_smoothing: as in Keras' categorical cross-entropy.
        reduction, name, dtype: as for any `keras.losses.Loss`.

    Labels may be sparse integers (batch,) or one-hot (batch, classes).
    """

    def __init__(
        self,
        alpha=0.3,
        beta=0.3,
        clamp=(0.5, 1.5),
        normalization="batch",
        from_logits=True,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="bias_loss",
        dtype=None,
    ):
        clamp = None if clamp is None else tuple(float(c) for c in clamp)
        _validate(alpha, beta, clamp, normalization, warn=True)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"BiasLoss: label_smoothing must be in [0, 1); got {label_smoothing}.")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.clamp = clamp
        self.normalization = normalization
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)

    def bias_weights(self, features, variance_min=None):
        """Per-sample weights for `features`; see `bias_weights`."""
        return bias_weights(
            features, self.alpha, self.beta, self.clamp, self.normalization, variance_min
        )

    def crossentropy(self, y_true, logits):
        """Per-sample cross-entropy, float32, sparse or one-hot labels."""
        logits = _check_finite_logits(ops.cast(logits, "float32"))
        y_true = ops.convert_to_tensor(y_true)
        num_classes = logits.shape[-1]
        sparse = len(y_true.shape) < len(logits.shape) or (
            len(y_true.shape) == len(logits.shape) and y_true.shape[-1] == 1 and num_classes != 1
        )
        if sparse:
            y_true = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), num_classes)
        y_true = ops.cast(y_true, "float32")
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return keras.losses.categorical_crossentropy(y_true, logits, from_logits=self.from_logits)

    def per_sample(self, y_true, logits, features, variance_min=None):
        """(z * CE per sample, BiasWeights): the loss before reduction."""
        _check_batch_sizes(y_true, logits, features)
        bias = self.bias_weights(features, variance_min)
        return bias.weights * self.crossentropy(y_true, logits), bias

    def call(self, y_true, y_pred):
        if not isinstance(y_pred, dict) or not {"logits", "features"} <= set(y_pred):
            raise ValueError(
                "BiasLoss needs the logits and the last conv feature map: pass "
                "y_pred={'logits': ..., 'features': ...}, or compile a "
                "keras_skipblock.BiasLossModel (wrap your model with "
                "keras_skipblock.with_features(model))."
            )
        losses, _ = self.per_sample(
            y_true, y_pred["logits"], y_pred["features"], y_pred.get("variance_min")
        )
        return losses

    def get_config(self):
        config = super().get_config()
        config.update(
            alpha=self.alpha,
            beta=self.beta,
            clamp=None if self.clamp is None else list(self.clamp),
            normalization=self.normalization,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )
        return config


def _check_batch_sizes(y_true, logits, features):
    _check_rank(features)
    sizes = {
        "labels": ops.shape(y_true)[0],
        "logits": ops.shape(logits)[0],
        "features": ops.shape(features)[0],
    }
    static = {k: v for k, v in sizes.items() if isinstance(v, int)}
    if len(set(static.values())) > 1:
        raise ValueError(
            "BiasLoss: batch sizes disagree: "
            + ", ".join(f"{k}={v}" for k, v in static.items())
            + ". Labels, logits and features must come from the same batch."
        )
