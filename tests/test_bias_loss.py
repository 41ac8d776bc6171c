"""BiasLoss against a numpy re-computation of SPEC §1, and its edge cases."""

import numpy as np
import pytest

import keras
import keras_skipblock as ks
from tolerances import ELEMENTWISE_RTOL, REDUCTION_RTOL, assert_close, perturbed


def numpy_bias_loss(labels, logits, features, alpha=0.3, beta=0.3, clamp=(0.5, 1.5),
                    running_min=None, sample_weight=None, label_smoothing=0.0):
    """SPEC §1 written out independently in float64 numpy."""
    flat = features.reshape(len(features), -1).astype(np.float64)
    v = flat.var(axis=1, ddof=1)
    low = v.min() if running_min is None else min(running_min, v.min())
    spread = v.max() - v.min()
    scaled = np.zeros_like(v) if spread <= 1e-12 else (v - low) / spread
    z = np.exp(alpha * scaled) - beta
    if clamp is not None:
        z = np.clip(z, *clamp)
    logits = logits.astype(np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    onehot = np.eye(logits.shape[1])[labels] if labels.ndim == 1 else labels.astype(np.float64)
    onehot = onehot * (1 - label_smoothing) + label_smoothing / logits.shape[1]
    ce = -(onehot * log_p).sum(1)
    sw = np.ones_like(ce) if sample_weight is None else sample_weight
    return (z * ce * sw).sum() / len(ce), z


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    # Spread the per-sample scales so the scaled variances cover [0, 1].
    scales = np.linspace(0.2, 3.0, 6)[:, None, None, None]
    features = (rng.normal(size=(6, 4, 4, 8)) * scales).astype("float32")
    logits = rng.normal(size=(6, 5)).astype("float32")
    labels = rng.integers(0, 5, size=6).astype("int32")
    return labels, logits, features


def call(loss, labels, logits, features, **kwargs):
    # Ours gets the perturbed inputs when tools/check_tolerances.py asks; numpy the exact ones.
    return float(loss(labels, {"logits": perturbed(logits), "features": perturbed(features)}, **kwargs))


@pytest.mark.parametrize("clamp", [(0.5, 1.5), None])
@pytest.mark.parametrize("one_hot", [False, True])
def test_batch_normalization_matches_numpy(batch, clamp, one_hot):
    labels, logits, features = batch
    y = np.eye(5, dtype="float32")[labels] if one_hot else labels
    expected, _ = numpy_bias_loss(labels, logits, features, clamp=clamp)
    got = call(ks.BiasLoss(clamp=clamp), y, logits, features)
    assert_close(got, expected, ELEMENTWISE_RTOL, what="loss")


@pytest.mark.parametrize("clamp", [(0.5, 1.5), None])
def test_global_normalization_uses_running_minimum(batch, clamp):
    labels, logits, features = batch
    running_min = 0.01  # below this batch's minimum: scaled values exceed 1
    loss = ks.BiasLoss(normalization="global", clamp=clamp, alpha=2.0, beta=0.3)
    expected, z = numpy_bias_loss(labels, logits, features, alpha=2.0, clamp=clamp,
                                  running_min=running_min)
    got = float(loss(labels, {"logits": perturbed(logits), "features": perturbed(features),
                              "variance_min": running_min}))
    assert_close(got, expected, ELEMENTWISE_RTOL, what="loss")
    weights = loss.bias_weights(perturbed(features), running_min)
    assert_close(weights.weights.numpy(), z, ELEMENTWISE_RTOL, what="weights")
    assert float(weights.variance_min) == pytest.approx(running_min)
    if clamp is None:
        assert z.max() > np.exp(2.0) - 0.3  # the scaled variance went past 1


def test_bias_weights_function_and_alpha_beta(batch):
    _, _, features = batch
    _, z = numpy_bias_loss(np.zeros(6, int), np.zeros((6, 2), "float32"), features,
                           alpha=1.5, beta=0.1, clamp=None)
    got = ks.bias_weights(perturbed(features), alpha=1.5, beta=0.1, clamp=None)
    assert_close(got.weights.numpy(), z, ELEMENTWISE_RTOL, what="weights")
    assert_close(got.variances.numpy(), features.reshape(6, -1).var(axis=1, ddof=1), REDUCTION_RTOL,
                 what="variances")
    # Lowest variance gets 1 - beta, highest exp(alpha) - beta.
    assert z.min() == pytest.approx(0.9) and z.max() == pytest.approx(np.exp(1.5) - 0.1)


def test_clamped_fraction(batch):
    _, _, features = batch
    w = ks.bias_weights(features, alpha=3.0, beta=0.3, clamp=(0.8, 1.5))
    z = ks.bias_weights(features, alpha=3.0, beta=0.3, clamp=None).weights.numpy()
    np.testing.assert_array_equal(w.clamped.numpy(), (z < 0.8) | (z > 1.5))
    assert 0 < w.clamped.numpy().mean() < 1


def test_sample_weight_and_label_smoothing(batch):
    labels, logits, features = batch
    sw = np.array([0, 1, 2, 1, 0.5, 3], "float32")
    expected, _ = numpy_bias_loss(labels, logits, features, sample_weight=sw, label_smoothing=0.1)
    got = call(ks.BiasLoss(label_smoothing=0.1), labels, logits, features, sample_weight=sw)
    assert_close(got, expected, ELEMENTWISE_RTOL, what="loss")


def test_from_logits_false_takes_probabilities(batch):
    labels, logits, features = batch
    probs = keras.ops.softmax(logits).numpy()
    expected, _ = numpy_bias_loss(labels, logits, features)
    got = call(ks.BiasLoss(from_logits=False), labels, probs, features)
    # log of float32 probabilities (Keras clips them at 1e-7) vs log-softmax in float64
    assert_close(got, expected, REDUCTION_RTOL, what="loss")


def test_no_gradient_through_features(batch):
    import tensorflow as tf

    labels, logits, features = batch
    features, logits = tf.constant(features), tf.constant(logits)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([features, logits])
        loss = ks.BiasLoss(clamp=None)(labels, {"logits": logits, "features": features})
    grad = tape.gradient(loss, features)
    assert grad is None or not np.any(grad.numpy())
    assert np.any(tape.gradient(loss, logits).numpy())  # the CE path still learns


@pytest.mark.parametrize(
    "features",
    [
        np.random.default_rng(0).normal(size=(1, 3, 3, 4)),  # a batch of one
        np.repeat(np.random.default_rng(0).normal(size=(1, 3, 3, 4)), 4, axis=0),  # identical
        np.zeros((4, 3, 3, 4)),  # constant maps: max == min == 0
    ],
    ids=["batch_of_one", "identical_samples", "all_zero"],
)
@pytest.mark.parametrize("normalization", ["batch", "global"])
def test_degenerate_batches_give_documented_finite_weights(features, normalization):
    features = features.astype("float32")
    n = len(features)
    logits = np.tile(np.array([[2.0, 0.0, -1.0]], "float32"), (n, 1))
    labels = np.zeros(n, "int32")
    loss = ks.BiasLoss(normalization=normalization)
    got = float(loss(labels, {"logits": logits, "features": features, "variance_min": 0.0}))
    ce = -np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1)))
    assert np.isfinite(got)
    # Documented: no spread -> every scaled variance is 0 -> weight clamp(1 - beta) = 0.7.
    assert got == pytest.approx(0.7 * ce, rel=1e-5)


def test_variances_equal_up_to_rounding_count_as_degenerate():
    # The identical-samples case as another CPU may compute it: variances that differ by a
    # few float32 ulps. Scaling by that spread would turn rounding noise into weights.
    base = np.random.default_rng(0).normal(size=(1, 3, 3, 4))
    features = (base * (1 + 2.0 ** -21 * np.array([-1.0, 0.0, 0.5, 1.0]))[:, None, None, None]).astype("float32")
    assert np.ptp(ks.sample_variance(features).numpy()) > 0  # not identical
    weights = ks.bias_weights(features).weights.numpy()
    np.testing.assert_array_equal(weights, np.float32(0.7))  # clamp(1 - beta), as documented


def test_nan_features_raise_a_clear_error(batch):
    import tensorflow as tf

    labels, logits, features = batch
    features = features.copy()
    features[2, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        call(ks.BiasLoss(), labels, logits, features)


def test_variance_in_float32_under_mixed_precision():
    # Activations of ~300 square to 9e4, past float16's 65504.
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(4, 6, 6, 8)) * np.array([50, 150, 300, 400])[:, None, None, None])
    expected = features.reshape(4, -1).var(axis=1, ddof=1)
    got = ks.sample_variance(perturbed(features.astype("float16"))).numpy()
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    # float16 inputs: each value rounded by <= 2^-11 relative, a variance by <= 2 x 2^-11 ~ 1e-3;
    # bound 2e-3 (float16 overflow would give inf, a float16 accumulator errors of ~1e-2)
    assert_close(got, expected, 2e-3, atol=0.0, what="float16 variance")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(clamp=(1.5, 0.5)), "0 < low < high"),
        (dict(clamp=(0.0, 1.5)), "0 < low < high"),
        (dict(clamp=(-1.0, 1.5)), "0 < low < high"),
        (dict(beta=1.2, clamp=None), "1 - beta <= 0"),
        (dict(normalization="local"), "unknown normalization"),
        (dict(label_smoothing=1.0), "label_smoothing"),
    ],
)
def test_bad_arguments_fail_at_once(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ks.BiasLoss(**kwargs)


def test_bad_inputs_name_the_problem(batch):
    labels, logits, features = batch
    loss = ks.BiasLoss()
    with pytest.raises(ValueError, match="rank >= 2"):
        call(loss, labels, logits, features.reshape(-1))
    with pytest.raises(ValueError, match="batch sizes disagree"):
        call(loss, labels[:5], logits, features)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        call(loss, labels, logits, features[:4])
    with pytest.raises(ValueError, match="with_features"):
        loss(labels, logits)  # a plain model's output: no features


def test_config_round_trip():
    loss = ks.BiasLoss(alpha=0.5, beta=0.2, clamp=(0.4, 2.0), normalization="global",
                       label_smoothing=0.1)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, ks.BiasLoss)
    assert restored.get_config() == loss.get_config()
