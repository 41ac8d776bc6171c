"""Schedules, EMA warm-up, L2 decay and optimizer semantics against their formulas."""

import math

import keras
import numpy as np
import pytest

from keras_skipblock.training import (
    WarmupExponentialDecay,
    add_weight_decay,
    build_optimizer,
    multistep_schedule,
    paper_schedule,
    scaled_learning_rate,
)
from tolerances import ELEMENTWISE_RTOL, REDUCTION_RTOL


def paper_formula(step, peak, warmup, decay_steps, initial=1e-6, rate=0.97):
    if step < warmup:
        return initial + (peak - initial) * step / warmup
    return peak * rate ** math.floor((step - warmup) / decay_steps)


def test_learning_rate_scales_linearly_with_global_batch():
    assert scaled_learning_rate(512) == pytest.approx(0.032)
    assert scaled_learning_rate(128) == pytest.approx(0.008)
    assert scaled_learning_rate(4096) == pytest.approx(0.256)


@pytest.mark.parametrize("batch", [128, 512])
def test_paper_schedule_matches_formula(batch):
    steps_per_epoch = 100
    schedule = paper_schedule(batch, steps_per_epoch)
    peak = 0.032 * batch / 512
    warmup, decay = 3 * steps_per_epoch, 2.4 * steps_per_epoch
    for step in [0, 1, 150, 299, 300, 301, 539, 540, 541, 779, 780, 2000, 10_000]:
        expected = paper_formula(step, peak, warmup, decay)
        assert float(schedule(step)) == pytest.approx(expected, rel=ELEMENTWISE_RTOL), step
    assert float(schedule(0)) == pytest.approx(1e-6, rel=ELEMENTWISE_RTOL)
    assert float(schedule(300)) == pytest.approx(peak, rel=ELEMENTWISE_RTOL)  # the peak is reached
    assert float(schedule(539)) == float(schedule(300))  # staircase
    assert float(schedule(540)) == pytest.approx(peak * 0.97, rel=ELEMENTWISE_RTOL)


def test_reference_variant_decays_from_step_zero():
    schedule = WarmupExponentialDecay(0.032, warmup_steps=300, decay_steps=240,
                                      decay_from_warmup_end=False)
    assert float(schedule(300)) == pytest.approx(0.032 * 0.97 ** math.floor(300 / 240), rel=ELEMENTWISE_RTOL)
    assert float(schedule(150)) == pytest.approx(1e-6 + (0.032 - 1e-6) * 0.5, rel=ELEMENTWISE_RTOL)


def test_schedule_serializes():
    schedule = paper_schedule(256, 50)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, WarmupExponentialDecay)
    for step in (0, 10, 149, 500):
        assert float(restored(step)) == pytest.approx(float(schedule(step)))


def test_multistep_schedule_for_cifar():
    schedule = multistep_schedule(0.1, [60, 120, 160], steps_per_epoch=10, factor=0.2)
    for epoch, lr in [(0, 0.1), (59.9, 0.1), (60.1, 0.02), (125, 0.004), (199, 0.0008)]:
        assert float(schedule(int(epoch * 10))) == pytest.approx(lr, rel=ELEMENTWISE_RTOL), epoch


def test_rmsprop_epsilon_inside_sqrt_and_momentum():
    """One RMSprop step: v = (1-rho) g^2, update = lr g / sqrt(v + eps) (TF1's semantics)."""
    opt = build_optimizer("rmsprop", 0.1, ema_decay=None, epsilon=1e-3)
    var = keras.Variable(np.array([1.0, 1.0], "float32"))
    grad = np.array([0.01, 1.0], "float32")
    opt.apply_gradients([(keras.ops.convert_to_tensor(grad), var)])
    velocity = 0.1 * grad**2
    expected = 1.0 - 0.1 * grad / np.sqrt(velocity + 1e-3)
    np.testing.assert_allclose(var.numpy(), expected, rtol=ELEMENTWISE_RTOL)


def test_ema_warms_up_like_the_reference():
    opt = build_optimizer("sgd", 0.1, ema_decay=0.9999, momentum=0.0)
    var = keras.Variable(np.array([0.0], "float32"))
    average = None
    for step in range(20):
        opt.apply_gradients([(keras.ops.convert_to_tensor(np.array([-1.0], "float32")), var)])
        decay = min(0.9999, (1 + step) / (10 + step))
        value = var.numpy()[0]
        average = value if average is None else decay * average + (1 - decay) * value
        if step == 0:  # the first update starts from the initial weights
            average = (1 / 10) * 0.0 + (9 / 10) * value
    ema = opt._model_variables_moving_average[0].numpy()[0]
    assert ema == pytest.approx(average, rel=1e-4)
    # Keras' fixed-decay EMA would still sit near the initial value 0.
    assert ema > 0.5 * var.numpy()[0]


def test_l2_weight_decay_on_kernels_only():
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, use_bias=True),
        keras.layers.BatchNormalization(),
        keras.layers.DepthwiseConv2D(3),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
    ])
    assert add_weight_decay(model, 1e-3) == 3
    kernels = [model.layers[0].kernel, model.layers[2].kernel, model.layers[4].kernel]
    expected = 1e-3 / 2 * sum(float(np.sum(k.numpy() ** 2)) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=REDUCTION_RTOL)
    assert add_weight_decay(model, 0) == 0
