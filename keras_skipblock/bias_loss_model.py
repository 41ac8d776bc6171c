"""`BiasLossModel` and `with_features`: a functional classifier with outputs {"logits", "features"}
whose training logic routes both into `BiasLoss` and logits alone into any
other loss and into the metrics.

Keras cannot do this with compile alone: a dict-output model compiled with a
single loss looks for a "logits" key in the labels (SPEC §7).
"""

import inspect

import keras
from keras import ops

from keras_skipblock import _compat
from keras_skipblock.losses import BiasLoss

LOGITS = "logits"
FEATURES = "features"


@keras.saving.register_keras_serializable(package="keras_skipblock")
class BiasLossModel(keras.Model):
    """A classifier whose `fit` feeds its last-conv features to `BiasLoss`.

    Build it like a functional model:
    `BiasLossModel(inputs, {"logits": logits, "features": features})`.

    - With `BiasLoss`, the loss gets logits and features; the model keeps the
      loss's running minimum variance ("global" normalization) as the
      non-trainable variable `bias_loss_variance_min`, saved with the model.
    - With any other loss (a name, a function or a `keras.losses.Loss`), the
      loss gets logits only, or softmax probabilities when the loss expects
      probabilities (`from_logits=False`, Keras' default for its
      cross-entropies), so "sparse_categorical_crossentropy" just works.
    - Metrics see the logits. `predict` returns both outputs.
    - With `BiasLoss`, `fit` also reports `bias_weight` (mean z over the
      samples) and `bias_clamped` (fraction of samples the clamp changed).
    """

    # Same signature as keras' Functional so that .keras files revive it.
    def __init__(self, inputs, outputs, name=None, **kwargs):
        if not isinstance(outputs, dict) or set(outputs) != {LOGITS, FEATURES}:
            raise ValueError(
                "BiasLossModel needs outputs={'logits': ..., 'features': ...}; "
                f"got {type(outputs).__name__} "
                f"{sorted(outputs) if isinstance(outputs, dict) else ''}. "
                "Use keras_skipblock.with_features(model) to convert a classifier."
            )
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.bias_loss_variance_min = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float("inf")),
            trainable=False,
            name="bias_loss_variance_min",
            aggregation="only_first_replica",
        )
        self.bias_weight_tracker = keras.metrics.Mean(name="bias_weight")
        self.bias_clamped_tracker = keras.metrics.Mean(name="bias_clamped")

    # -- training logic ------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss_fn = _resolve_loss(self.loss)
        logits = y_pred[LOGITS]
        if isinstance(loss_fn, BiasLoss):
            losses, bias = loss_fn.per_sample(
                y, logits, y_pred[FEATURES], self.bias_loss_variance_min
            )
            if training and loss_fn.normalization == "global":
                self.bias_loss_variance_min.assign(bias.variance_min)
            self.bias_weight_tracker.update_state(bias.weights)
            self.bias_clamped_tracker.update_state(ops.cast(bias.clamped, "float32"))
            total = _reduce(losses, sample_weight, loss_fn.reduction)
        elif loss_fn is None:
            total = ops.zeros((), "float32")
        else:
            predictions = logits if _expects_logits(loss_fn) else ops.softmax(
                ops.cast(logits, "float32")
            )
            if isinstance(loss_fn, keras.losses.Loss):
                total = loss_fn(y, predictions, sample_weight)
            else:
                total = _reduce(loss_fn(y, predictions), sample_weight, "sum_over_batch_size")
        for extra in self.losses:  # weight regularizers and add_loss terms
            total = total + _compat.aggregate_additional_loss(self, extra)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # float32 so that every metric works under mixed precision.
        logits = ops.cast(y_pred[LOGITS], "float32")
        return super().compute_metrics(x, y, logits, sample_weight)

    @property
    def metrics(self):
        # Keras tracks the two bias trackers as attributes; show them only
        # when the compiled loss is BiasLoss (they would read 0 otherwise).
        if isinstance(_resolve_loss(getattr(self, "loss", None)), BiasLoss):
            return super().metrics
        bias = (self.bias_weight_tracker, self.bias_clamped_tracker)
        return [m for m in super().metrics if m not in bias]


def _resolve_loss(loss):
    if loss is None or isinstance(loss, keras.losses.Loss):
        return loss
    if isinstance(loss, (dict, list, tuple)):
        raise ValueError(
            "BiasLossModel takes one loss for its logits (BiasLoss also reads the "
            f"features); got {type(loss).__name__}."
        )
    return keras.losses.get(loss)  # a Loss instance or a plain function


def _expects_logits(loss):
    """Whether a (non-bias) loss wants logits rather than probabilities."""
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        if "from_logits" in config:
            return bool(config["from_logits"])
        loss = getattr(loss, "fn", None)  # LossFunctionWrapper subclasses
    parameters = inspect.signature(loss).parameters if callable(loss) else {}
    if "from_logits" in parameters:
        return bool(parameters["from_logits"].default)
    return True  # a custom loss with no such switch gets what the model outputs


def _reduce(losses, sample_weight, reduction):
    # Keras' own reduction keeps sample_weight/class_weight and tf.distribute
    # scaling identical to its built-in losses.
    return _compat.reduce_weighted_values(losses, sample_weight, reduction)


# -- wrapping any classifier ------------------------------------------------

_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def with_features(model, feature_layer=None):
    """Turn a single-output Keras classifier into a `BiasLossModel`.

    Args:
        model: a built functional or Sequential classifier with one output.
        feature_layer: name of the layer whose output Bias Loss reads. By
            default, the input of the model's last global pooling layer
            (the last 4-D feature map before pooling).

    A final softmax is removed so the `logits` output holds logits: a
    separate softmax `Activation` is skipped; a `Dense`/`Conv2D` with softmax
    is replaced by a linear copy holding the same weights.
    """
    if isinstance(model, BiasLossModel):
        return model
    if not getattr(model, "inputs", None) or len(model.outputs) != 1:
        raise ValueError(
            "with_features needs a built functional or Sequential model with one "
            "output (build it with an explicit input shape, e.g. keras.Input)."
        )
    features = _feature_tensor(model, feature_layer)
    logits = _logits_tensor(model)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return BiasLossModel(inputs=inputs, outputs={LOGITS: logits, FEATURES: features}, name=model.name)


def _feature_tensor(model, feature_layer):
    if feature_layer is not None:
        try:
            layer = model.get_layer(feature_layer)
        except ValueError:
            raise ValueError(
                f"with_features: no layer named {feature_layer!r} in {model.name}. "
                "See model.summary() for layer names."
            ) from None
        tensor = layer.output
        if len(tensor.shape) < 2:
            raise ValueError(f"with_features: layer {feature_layer!r} output has rank < 2.")
        return tensor
    pools = [layer for layer in model.layers if isinstance(layer, _POOLING)]
    if not pools or len(pools[-1].input.shape) != 4:
        raise ValueError(
            f"with_features: could not find the last feature map of {model.name}: it has "
            "no GlobalAveragePooling2D/GlobalMaxPooling2D layer. Pass "
            "feature_layer='<name of the last conv block's output layer>'."
        )
    return pools[-1].input


def _is_softmax(activation):
    return getattr(activation, "__name__", None) == "softmax" or activation in (
        keras.activations.softmax,
        "softmax",
    )


def _logits_tensor(model):
    last = model.layers[-1]
    output = model.outputs[0]
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
    ):
        return last.input
    if _is_softmax(getattr(last, "activation", None)):
        config = dict(last.get_config(), activation="linear", name=f"{last.name}_logits")
        linear = last.__class__.from_config(config)
        logits = linear(last.input)
        linear.set_weights(last.get_weights())
        return logits
    return output
