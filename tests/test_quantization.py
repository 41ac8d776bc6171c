"""Quantization-aware training (keras_skipblock.quantization): the fake-quant
arithmetic against numpy, the rebuilt graph, `.keras` round trips, training
with Bias Loss, and exact int8 conversion ("what you train is what you
deploy") on real Fashion-MNIST images.

One tiny SkipblockNet-like model (hard-swish stem, inverted residual with
ReLU6 depthwise, SE with hard-sigmoid, an adaptive-pooling skip, Add, a
hard-swish head, Dense layers) trained for seconds; ~60 s on 2 shared cores.
"""

import os

import numpy as np
import pytest

from tolerances import ELEMENTWISE_RTOL, SMALL_NETWORK_RTOL, assert_close

# Thresholds on trained results, with their spread measured over seeds (see the
# comment at each use and docs/quantization.md).
# int8 .tflite logits vs Keras QAT logits (whose inference emulates XNNPACK's integer arithmetic),
# in output quantization steps, 500 images (see the deploy test): max measured 0 / 0 / 0 steps and
# 99th percentile 0 over seeds 0 / 1 / 2 (seed 0 with TF_ENABLE_ONEDNN_OPTS=0 and one thread: 0, 0);
# asserted: 99th percentile <= 1, max <= 2. (Float simulation measured max 2, p99 1 on each seed.)
P99_LOGIT_STEPS = 1.0
MAX_LOGIT_STEPS = 2.0
# top-1 agreement .tflite vs Keras QAT on 500 test images: measured 1.000 on seeds 0 / 1 / 2
# (float simulation: 0.990 / 0.988 / 0.992); asserted >= 0.995, the bound (fails at 3 of 500).
MIN_AGREEMENT = 0.995


def _fake_quant_numpy(x, low, high, num_bits=8, narrow=False):
    """TensorFlow's FakeQuantWithMinMaxVars in float64: range nudged so that 0 is on the grid."""
    qmin, qmax = (1 if narrow else 0), 2 ** num_bits - 1
    scale = (high - low) / (qmax - qmin)
    zero = np.clip(np.round(qmin - low / scale), qmin, qmax)
    nlow, nhigh = (qmin - zero) * scale, (qmax - zero) * scale
    clipped = np.clip(x, nlow, nhigh)
    return np.floor((clipped - nlow) / scale + 0.5) * scale + nlow


def _tiny_model(keras, size=28):
    from keras import layers

    import keras_skipblock as ks
    from keras_skipblock.models.skipblocknet import AdaptiveAveragePooling2D

    def conv_bn(x, filters, kernel=1, stride=1, act="relu", depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False)(x)
        else:
            x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        if act == "relu6":
            return layers.ReLU(6.0)(x)
        if act == "relu":
            return layers.ReLU()(x)
        return layers.Activation(act)(x) if act else x

    image = keras.Input((size, size, 1), name="image")
    x = base = conv_bn(image, 16, 3, 2, "hard_swish")
    x = conv_bn(x, 32)
    x = conv_bn(x, None, 3, 2, "relu6", depthwise=True)
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Conv2D(8, 1, activation="relu")(gate)
    gate = layers.Activation("hard_sigmoid")(layers.Conv2D(32, 1)(gate))
    x = conv_bn(layers.Multiply()([x, gate]), 24, act=None)
    side = conv_bn(AdaptiveAveragePooling2D()([base, x]), 24, act=None)
    x = layers.Add()([x, side])
    features = conv_bn(x, 64, act="hard_swish")
    pooled = layers.Dense(32, activation="hard_swish")(layers.GlobalAveragePooling2D()(features))
    logits = layers.Dense(10, name="logits")(pooled)
    return ks.BiasLossModel(image, {"logits": logits, "features": features}, name="tiny")


@pytest.fixture(scope="session")
def fashion():
    from keras_skipblock.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist

    try:
        find_fashion_mnist()
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST not installed: {error}")
    (xt, yt), (xv, yv) = load_fashion_mnist()

    def prep(x):
        return (x[..., None].astype("float32") / 127.5 - 1.0)

    return prep(xt[:3000]), yt[:3000].astype("int32"), prep(xv[:500]), yv[:500].astype("int32")


@pytest.fixture(scope="session")
def trained(fashion, tmp_path_factory):
    """(float model, fine_tune summary, QAT model reloaded from best_qat.keras)."""
    import keras

    import keras_skipblock as ks
    from keras_skipblock.quantization import fine_tune

    keras.utils.set_random_seed(int(os.environ.get("KS_QAT_SEED", "0")))  # seeds measured: see below
    x, y, xv, yv = fashion
    model = _tiny_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=ks.BiasLoss(normalization="global"),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    directory = tmp_path_factory.mktemp("qat")
    summary = fine_tune(model, (x, y), (xv, yv), epochs=1, learning_rate=3e-4, model_dir=str(directory),
                        loss=ks.BiasLoss(normalization="global"), verbose=0)
    qat = keras.saving.load_model(summary["path"], compile=False)
    return model, summary, qat


# -- arithmetic against numpy ---------------------------------------------------------


def test_folded_conv_weights_are_per_channel_symmetric_int8():
    import keras

    from keras_skipblock.quantization import QuantConv, quantize_model

    rng = np.random.default_rng(0)
    image = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    model = keras.Model(image, bn(conv(image)))
    gamma, beta = rng.uniform(0.5, 2, 4), rng.normal(size=4)
    mean, var = rng.normal(size=4), rng.uniform(0.1, 3, 4)
    bn.set_weights([gamma, beta, mean, var])
    qat = quantize_model(model)
    layer = [lay for lay in qat.layers if isinstance(lay, QuantConv)][0]
    assert layer.batchnorm and not any(isinstance(lay, keras.layers.BatchNormalization) for lay in qat.layers)
    kernel = np.asarray(conv.kernel, "float64")
    g = gamma / np.sqrt(var + 1e-3)
    folded = kernel * g
    scale = np.abs(folded).max(axis=(0, 1, 2)) / 127.0
    expected = np.clip(np.round(folded / scale), -127, 127) * scale
    actual = np.asarray(layer.quantized_kernel())
    assert_close(actual, expected, ELEMENTWISE_RTOL, what="per-channel int8 folded kernel")
    # 255 levels at most per channel, symmetric, the extreme weight exactly representable
    for c in range(4):
        levels = np.round(actual[..., c] / scale[c])
        assert np.abs(levels).max() == 127 and len(np.unique(levels)) <= 255
    _, bias = layer.folded_kernel_and_bias()
    assert_close(np.asarray(bias), beta - mean * g, ELEMENTWISE_RTOL, what="folded bias")
    # The pre-activation the layer computes is conv(x, quantized kernel) + folded bias.
    # (the input quantizer's range set to [-1, 1], the output's to [-50, 50])
    x = rng.uniform(-1, 1, (2, 6, 6, 3)).astype("float32")
    from keras_skipblock.quantization import ActivationQuantizer

    quantizer = [lay for lay in qat.layers if isinstance(lay, ActivationQuantizer)][0]
    quantizer.output_min.assign(-1.0), quantizer.output_max.assign(1.0)
    from keras_skipblock.quantization.layers import INPUT_MARGIN

    wide = 1.0 + INPUT_MARGIN  # the image input's range is widened (see ActivationQuantizer)
    x_int8 = _fake_quant_numpy(x.astype("float64"), -wide, wide).astype("float32")
    # LiteRT stores the bias as int32 at scale s_in * s_w (per channel): the layer adds it rounded so.
    s_in = 2 * wide / 255.0
    rounded = np.round(np.asarray(bias, "float64") / (s_in * scale)) * (s_in * scale)
    got_bias = np.asarray(layer.quantized_bias(bias, layer.folded_kernel_and_bias()[0]), "float64")
    assert_close(got_bias, rounded, ELEMENTWISE_RTOL, what="bias on the int32 grid s_in * s_w")
    assert np.abs(got_bias - np.asarray(bias, "float64")).max() > 0  # the rounding is not a no-op here
    pre = keras.ops.conv(x_int8, actual, padding="same") + got_bias.astype("float32")
    layer.output_min.assign(-50.0), layer.output_max.assign(50.0)
    got = np.asarray(qat(x, training=False))
    assert np.abs(got - np.asarray(pre)).max() <= 100.0 / 255 / 2 * 1.001  # one half step of [-50, 50]


def test_inference_emulates_xnnpack_integer_arithmetic_exactly():
    """In inference a QAT conv / depthwise / dense computes what XNNPACK computes from the int8
    input: the int32 accumulator plus the int32 bias, times the float32 multiplier
    s_in * s_w / s_out, rounded half to even and clamped; an Add XNNPACK's integer ADD.
    Checked two ways: against those formulas in numpy, and against the int8 .tflite itself,
    which must agree on every value of every tensor."""
    import keras

    from keras_skipblock import litert
    from keras_skipblock.litert.layer_diff import layer_diff
    from keras_skipblock.quantization import QuantConv, calibrate_ranges, freeze_ranges, quantize_model

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    image = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, padding="same")(image)
    x = first = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Add(name="add")([x, keras.layers.Conv2D(6, 1, strides=2)(first)])
    x = keras.layers.Dense(5, name="logits")(keras.layers.Flatten()(x))
    model = keras.Model(image, x)
    for layer in model.layers:  # BN statistics and biases away from their defaults
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6),
                               rng.uniform(0.5, 2, 6)])
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape))
    qat = quantize_model(model)
    images = rng.uniform(-1, 1, (96, 8, 8, 2)).astype("float32")
    calibrate_ranges(qat, images[:64])
    freeze_ranges(qat)
    conv = next(layer for layer in qat.layers if isinstance(layer, QuantConv))
    # numpy by hand for the first conv (input: the image quantizer's int8 levels)
    quantizer = qat.layers[1]
    s_in = np.float32(float(quantizer.range_qparams("output")[0]))
    s_out, zero = (float(v) for v in conv.range_qparams("output"))
    folded, bias = (np.asarray(v, "float64") for v in conv.folded_kernel_and_bias())
    s_w = (np.abs(folded).max(axis=(0, 1, 2)) / 127).astype("float32")
    levels_w = np.clip(np.round(folded / s_w), -127, 127)
    levels_in = np.round(np.asarray(quantizer(images[64:], training=False), "float64") / s_in)
    accumulator = np.array(keras.ops.conv(levels_in, levels_w, padding="same"), "float64")
    accumulator += np.round(bias / (np.float64(s_in) * s_w))
    multiplier = (s_in * s_w / np.float32(s_out)).astype("float32")
    levels = np.rint((accumulator.astype("float32") * multiplier).astype("float32"))  # half to even
    levels = np.clip(levels, max(-128 - zero, 0), min(127 - zero, np.round(6 / s_out)))
    probe = keras.Model(qat.inputs[0], conv.output)
    got = np.asarray(probe(images[64:], training=False)) / np.float32(s_out)
    assert np.array_equal(np.round(got), levels) and np.abs(got - levels).max() < 1e-3
    # XNNPACK rounds ties to even (TensorFlow's FakeQuant rounds them up), and the emulation is wired in
    from keras_skipblock.quantization.layers import _requantize

    ties = np.asarray(_requantize(np.float32([2.5, 3.5, -2.5, 300.0]), np.float32(1.0), -128.0, 127.0))
    assert ties.tolist() == [2.0, 4.0, -2.0, 127.0]
    assert conv.integer_output(images[:1], *conv.folded_kernel_and_bias()) is not None
    # the ADD by hand (xnn_init_qs8_add_minmax_scalar_params): ratios as ~21-bit multipliers, one shift
    from keras_skipblock.quantization import QuantAdd

    add = qat.get_layer("add_quant")
    assert isinstance(add, QuantAdd)
    (s_a, _), (s_b, _) = (source() for source in add._input_scales)
    s_a, s_b = np.float32(float(s_a)), np.float32(float(s_b))
    s_o, z_o = (np.float32(float(v)) for v in add.range_qparams("output"))
    ratios = np.float32([s_a / s_o, s_b / s_o])
    shift = 20 - int(np.floor(np.log2(ratios.max())))
    m_a, m_b = np.rint(ratios.astype("float64") * 2.0 ** shift)
    q_a, q_b = np.array([[-7.0, 100.0, 3.0]]), np.array([[5.0, -128.0, 0.0]])  # levels - zero points
    expected = np.clip(np.floor((q_a * m_a + q_b * m_b + 2.0 ** (shift - 1)) / 2.0 ** shift), -128 - z_o, 127 - z_o)
    got = np.asarray(add.integer_output(q_a.astype("float32") * s_a, q_b.astype("float32") * s_b)) / s_o
    assert np.array_equal(np.round(got), expected), (got, expected)
    # the .tflite, every int8 tensor of the network: 0 values apart
    flatbuffer = litert.convert(qat, quantize="int8", io_type="int8")
    rows = layer_diff(qat, flatbuffer, images[64:])
    assert {row["layer"] for row in rows} >= {conv.name, "logits"}, rows
    assert all(row["max_levels"] == 0 for row in rows), rows


@pytest.mark.parametrize("kind, kwargs", [
    ("conv", dict(filters=5, kernel_size=(3, 3), strides=(2, 2), padding="same")),
    ("conv", dict(filters=4, kernel_size=(3, 2), strides=(2, 1), padding="valid")),
    ("conv", dict(filters=3, kernel_size=(3, 3), dilation_rate=(2, 2), padding="valid")),
    ("depthwise", dict(kernel_size=(5, 5), strides=(2, 2), padding="same", depth_multiplier=2)),
    ("depthwise", dict(kernel_size=(3, 3), strides=(3, 3), padding="valid")),
    ("dense", dict(filters=6)),
])
def test_conv_output_shape_is_what_it_computes(kind, kwargs):
    """QuantConv states its output shape (Keras then need not trace `call` to build a model):
    the shape of what it computes, odd sizes and unknown ones included."""
    from keras_skipblock.quantization import QuantConv

    shape = (2, 9, 7, 3) if kind != "dense" else (2, 3)
    layer = QuantConv(kind, **kwargs)
    computed = tuple(layer(np.zeros(shape, "float32")).shape)
    assert tuple(layer.compute_output_shape(shape)) == computed
    if kind != "dense":
        assert tuple(layer.compute_output_shape((None, None, 7, 3))) == (None, None, *computed[2:])


def test_activation_ranges_are_moving_averages_then_frozen():
    from keras_skipblock.quantization import ActivationQuantizer
    from keras_skipblock.quantization.transform import freeze_ranges

    rng = np.random.default_rng(1)
    batches = [rng.normal(0.5, s, (8, 5)).astype("float32") for s in (1.0, 2.0, 0.5, 3.0)]
    layer = ActivationQuantizer(momentum=0.9, freeze_after=3)
    low = high = None
    for i, batch in enumerate(batches):
        layer(batch, training=True)
        b_low, b_high = min(batch.min(), 0.0), max(batch.max(), 0.0)
        if i == 0:
            low, high = b_low, b_high
        elif i < 3:  # freeze_after=3: the 4th batch does not move the range
            low, high = 0.9 * low + 0.1 * b_low, 0.9 * high + 0.1 * b_high
        assert_close([float(layer.output_min.numpy()), float(layer.output_max.numpy())], [low, high],
                     ELEMENTWISE_RTOL, what=f"range after batch {i}")
    # inference: TensorFlow's fake quantization of the stored range
    x = rng.uniform(-8, 8, (64,)).astype("float32")
    assert_close(np.asarray(layer(x, training=False)), _fake_quant_numpy(x.astype("float64"), low, high),
                 ELEMENTWISE_RTOL, what="fake quantization")
    # the flag freezes too
    layer2 = ActivationQuantizer(momentum=0.5)
    layer2(batches[0], training=True)
    assert freeze_ranges(layer2) == 1  # walks a model's layers; here the layer itself
    before = float(layer2.output_max.numpy())
    layer2(batches[3], training=True)
    assert float(layer2.output_max.numpy()) == before


# -- the rebuilt graph ---------------------------------------------------------------


def test_bias_loss_model_stays_one_and_layers_are_mapped():
    import keras

    import keras_skipblock as ks
    from keras_skipblock.quantization import QuantAveragePooling, QuantConv, QuantHardActivation
    from keras_skipblock.quantization import is_quantized, quantize_model

    model = _tiny_model(keras)
    model.bias_loss_variance_min.assign(0.25)
    qat = quantize_model(model)
    assert isinstance(qat, ks.BiasLossModel) and set(qat.output) == {"logits", "features"}
    assert is_quantized(qat) and not is_quantized(model)
    assert float(qat.bias_loss_variance_min.numpy()) == 0.25
    kinds = [type(layer) for layer in qat.layers]
    assert kinds.count(QuantConv) == 10  # 5 conv+BN, 1 depthwise+BN, 2 SE convs, 2 Dense
    assert kinds.count(QuantHardActivation) == 4  # stem, head, dense (hard-swish); SE gate (hard-sigmoid)
    assert kinds.count(QuantAveragePooling) == 1
    assert not any(isinstance(layer, (keras.layers.BatchNormalization, keras.layers.ReLU)) for layer in qat.layers)


def test_unsupported_layer_fails_naming_it():
    import keras

    from keras_skipblock.quantization import QuantizationError, quantize_model

    image = keras.Input((8, 8, 1))
    x = keras.layers.Conv2DTranspose(4, 3, name="upsampler")(image)
    with pytest.raises(QuantizationError, match="'upsampler'"):
        quantize_model(keras.Model(image, x))
    x = keras.layers.Conv2D(4, 3)(image)
    x = keras.layers.Activation("softmax", name="probabilities")(x)
    with pytest.raises(QuantizationError, match="'probabilities'"):
        quantize_model(keras.Model(image, x))


def test_keras_applications_idioms_via_with_features():
    """What keras.applications' MobileNetV3 is made of, at test size: Rescaling, hard-sigmoid
    written as `ReLU(6)(x + 3) * (1 / 6)` (keras ops, not layers), SE Multiply, hard-swish,
    softmax classifier removed by with_features. (The full MobileNetV2/V3 and SkipblockNet
    XS/S/M/L: tools/qat_check_models.py, ~45 s each on 2 shared cores.)"""
    import keras
    from keras import layers

    import keras_skipblock as ks
    from keras_skipblock.quantization import QuantRescaling, calibrate_ranges, quantize_model

    image = keras.Input((16, 16, 3))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(image)
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.Activation("hard_swish")(layers.BatchNormalization()(x))
    gate = layers.Conv2D(8, 1)(layers.GlobalAveragePooling2D(keepdims=True)(x))
    gate = layers.ReLU(6.0)(gate + 3.0) * (1.0 / 6.0)
    x = layers.Multiply()([x, gate])
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(16, 1, use_bias=False)(x)))
    x = layers.GlobalAveragePooling2D()(x)
    probabilities = layers.Dense(10, activation="softmax")(layers.Dropout(0.2)(x))
    model = ks.with_features(keras.Model(image, probabilities))
    qat = quantize_model(model)
    assert isinstance(qat, ks.BiasLossModel)
    assert any(isinstance(layer, QuantRescaling) for layer in qat.layers)
    x = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    calibrate_ranges(qat, x, batch_size=8)
    reference = np.asarray(model(x, training=False)["logits"])
    logits = np.asarray(qat(x, training=False)["logits"])
    # int8 noise, not a different function: within a few output steps of the float logits
    assert np.isfinite(logits).all() and np.abs(logits - reference).max() < 0.25 * np.abs(reference).max() + 0.05


# -- training, saving, deploying -------------------------------------------------------


def summary_line(trained):
    summary = trained[1]
    return f"{summary['val_loss_before']:.4f} -> {summary['val_loss']:.4f}"


def test_fine_tune_with_bias_loss_lowers_the_loss(trained):
    import keras_skipblock as ks

    model, summary, qat = trained
    assert isinstance(qat, ks.BiasLossModel)
    # The calibrated (PTQ-like) start vs after one QAT epoch at lr 3e-4, 500 test images.
    # Measured val loss before -> after (KS_QAT_SEED=0 / 1 / 2): 0.820 -> 0.744 / 1.012 -> 0.751 /
    # 0.730 -> 0.689 (inference emulating XNNPACK; float simulation: 0.823 -> 0.746 / 1.013 -> 0.767 /
    # 0.730 -> 0.697): lowered by 0.04-0.26 on every seed.
    assert summary["val_loss"] < summary["val_loss_before"]
    assert np.isfinite(float(qat.bias_loss_variance_min.numpy()))


def test_fine_tune_keeps_the_best_epoch_of_its_monitor(trained, fashion, tmp_path):
    """monitor="val_accuracy" (what the recipes' --qat_epochs uses): the returned model and
    best_qat.keras hold the epoch with the highest val_accuracy, restored when it is not the last."""
    import keras

    import keras_skipblock as ks
    from keras_skipblock.quantization import fine_tune

    model = trained[0]
    x, y, xv, yv = fashion
    # a rate high enough for the epochs to differ
    qat, summary = fine_tune(model, (x[:256], y[:256]), (xv[:200], yv[:200]), epochs=3, learning_rate=3e-3,
                             model_dir=str(tmp_path), loss=ks.BiasLoss(normalization="global"), batch_size=64,
                             calibration_batches=2, monitor="val_accuracy", return_model=True, verbose=0)
    accuracies = summary["history"]["val_accuracy"]
    # Seed 0: [0.605, 0.660, 0.655], best epoch 2 of 3, so the restore path runs (the assertions
    # below hold whichever epoch wins).
    print(f"QAT epochs val_accuracy {accuracies}, best epoch {summary['best_epoch']}")
    assert summary["best_epoch"] == int(np.argmax(accuracies)) + 1
    assert summary["val_accuracy"] == max(accuracies)
    for candidate in (qat, keras.saving.load_model(summary["path"], compile=False)):
        logits = np.asarray(candidate(xv[:200], training=False)["logits"])
        assert abs(float(np.mean(logits.argmax(1) == yv[:200])) - max(accuracies)) < 1e-6


def test_keras_round_trip_keeps_outputs_and_ranges(trained, fashion, tmp_path):
    import keras

    from keras_skipblock.quantization import is_quantized
    from keras_skipblock.quantization.transform import quant_layers

    _, _, qat = trained
    path = str(tmp_path / "again.keras")
    qat.save(path)
    again = keras.saving.load_model(path, compile=False)
    assert is_quantized(again) and type(again) is type(qat)
    x = fashion[2][:32]
    for key in ("logits", "features"):
        assert_close(np.asarray(again(x, training=False)[key]), np.asarray(qat(x, training=False)[key]),
                     SMALL_NETWORK_RTOL, what=key)
    assert [layer.ranges() for layer in quant_layers(again)] == [layer.ranges() for layer in quant_layers(qat)]


def test_converted_qat_model_is_int8_and_deploy_exact(trained, fashion):
    from ai_edge_litert.interpreter import Interpreter

    from keras_skipblock import litert

    _, _, qat = trained
    flatbuffer = litert.convert(qat, quantize="int8", io_type="int8")  # no calibration images
    summary = litert.op_summary(flatbuffer)
    assert summary["partitions"] == 1 and not summary["outside_xnnpack"], summary
    assert not {"QUANTIZE", "DEQUANTIZE", "HARD_SWISH", "AVERAGE_POOL_2D"} & set(summary["ops"]), summary["ops"]
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    floats = [d["name"] for d in interpreter.get_tensor_details() if d["dtype"] == np.float32]
    assert not floats, f"float tensors in the int8 network: {floats}"
    runner = litert.LiteRTModel(flatbuffer)
    images = fashion[2]
    keras_logits = litert.keras_logits(qat, images)
    tflite_logits = runner.predict(images)
    step = runner.output["quantization"][0]
    steps = np.abs(tflite_logits - keras_logits) / step
    agreement = float(np.mean(tflite_logits.argmax(1) == keras_logits.argmax(1)))
    print(f"QAT deploy check: max {steps.max():.2f} steps, p99 {np.percentile(steps, 99):.2f}, "
          f"agreement {agreement:.4f}, loss {summary_line(trained)}")
    # Measured (KS_QAT_SEED=0, 1, 2; 500 images): see P99_LOGIT_STEPS above. A disagreement may
    # only be an image whose two best Keras logits lie within the logits' distance (a near-tie).
    assert np.percentile(steps, 99) <= P99_LOGIT_STEPS + 1e-3, np.percentile(steps, 99)
    assert steps.max() <= MAX_LOGIT_STEPS + 1e-3, steps.max()
    ordered = np.sort(keras_logits, axis=1)
    disagree = tflite_logits.argmax(1) != keras_logits.argmax(1)
    gaps = (ordered[disagree, -1] - ordered[disagree, -2]) / step
    assert np.all(gaps <= 2 * steps.max() + 1e-3), gaps
    assert agreement >= MIN_AGREEMENT, agreement


def test_convert_script_turns_best_qat_into_int8_without_calibration_and_checks_it(trained, fashion, tmp_path):
    """The product path: tflite/convert.py --checkpoint best_qat.keras --quantize int8 (what a
    recipe's --qat_epochs writes) converts with no calibration images and passes the QAT
    check (litert.verify: agreement >= MIN_QAT_AGREEMENT, 99th percentile within
    MAX_QAT_P99_STEPS output steps) on real Fashion-MNIST test images."""
    from keras_skipblock import litert
    from test_recipes import run_script  # its entry point in this process (a shell's: test_tflite.py)

    _, summary, qat = trained
    output = str(tmp_path / "qat.tflite")
    result = run_script("tflite/convert.py", [f"--checkpoint={summary['path']}", "--quantize=int8",
                                              f"--output={output}", "--num_verify=200"])
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    lines = result.stdout.splitlines()
    assert any(line.startswith("calibration: none (a quantization-aware model") for line in lines), lines
    check = [line for line in lines if line.startswith("verification (int8, quantization-aware model")]
    assert len(check) == 1 and check[0].endswith("-> PASS"), lines
    assert f"top-1 agreement >= {litert.MIN_QAT_AGREEMENT:g}" in check[0], check[0]
    print(check[0])
    assert os.path.getsize(output) > 0
    # The same bound in the API; a file that moves logits by more than the bound fails it.
    step = litert.qat_output_step(qat)
    logits = litert.keras_logits(qat, fashion[2][:200])
    assert step and litert.compare(logits, logits + step, "int8", output_step=step).passed
    shifted = logits.copy()
    shifted[:, 0] += (litert.MAX_QAT_P99_STEPS + 2) * step  # 1 logit in 10 moved beyond the bound
    worse = litert.compare(logits, shifted, "int8", output_step=step)
    assert not worse.passed and worse.p99_steps > litert.MAX_QAT_P99_STEPS and "QAT" in worse.threshold
