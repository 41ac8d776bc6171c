"""Variance analysis (Table 5) against numpy, and the figure functions."""

import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_skipblock import with_features
from keras_skipblock.analysis import (
    conv_layers,
    feature_variances,
    loss_curve,
    plot_bias_function,
    plot_loss_vs_probability,
    resolve_layers,
    table5_markdown,
    z_curve,
)
from keras_skipblock.analysis.variance import VarianceTable
from tolerances import ELEMENTWISE_RTOL, SMALL_NETWORK_RTOL, assert_close, perturbed


def _tiny_model():
    """4 convs: conv-BN-ReLU, dwconv-BN-hard_swish, conv-BN (linear), conv-relu."""
    layers = keras.layers
    x = inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Activation("hard_swish", name="act2")(x)
    x = layers.Conv2D(6, 1, use_bias=False, name="c3")(x)
    x = layers.BatchNormalization(name="bn3")(x)
    x = layers.Conv2D(5, 1, activation=None, name="c4")(x)
    x = layers.Activation("relu", name="relu4")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    # Non-trivial BN statistics so that "after BN" differs from the conv.
    for bn in ("bn1", "bn2", "bn3"):
        layer = model.get_layer(bn)
        gamma, beta, mean, var = layer.get_weights()
        rng = np.random.default_rng(len(bn))
        layer.set_weights([
            gamma * 1.5, beta + 0.1, mean + rng.normal(0, 0.1, mean.shape), var * 2.0
        ])
    return model


def _numpy_stats(model, layer_names, x):
    taps = keras.Model(model.inputs, [model.get_layer(n).output for n in layer_names])
    outs = taps.predict(x, batch_size=len(x), verbose=0)
    stats = []
    for out in outs:
        v = out.reshape(len(x), -1).astype(np.float64).var(axis=1, ddof=1)
        stats.append((v.mean(), v.max(), v.min(), v.std()))
    return stats


@pytest.fixture(scope="session")
def images(digits):
    x, y = digits
    return x[:200] * 2.0 - 1.0, y[:200]  # [-1, 1], the project's convention


def test_conv_layers_in_model_order():
    model = _tiny_model()
    assert [l.name for l in conv_layers(model)] == ["c1", "dw2", "c3", "c4"]


def test_read_points_after_bn_and_activation():
    model = _tiny_model()
    picked = resolve_layers(model, [1, 2, 3, "last"])
    assert [p[0] for p in picked] == ["1st", "2nd", "3rd", "last"]
    assert [p[2].name for p in picked] == ["relu1", "act2", "bn3", "relu4"]
    raw = resolve_layers(model, [1, -1], point="conv")
    assert [p[2].name for p in raw] == ["c1", "c4"]
    # The default (5th, 20th, last) keeps only what a 4-conv model has.
    assert [p[0] for p in resolve_layers(model)] == ["last"]


@pytest.mark.parametrize("point", ["activation", "conv"])
def test_statistics_match_numpy(images, point):
    model = _tiny_model()
    x, y = images
    table = feature_variances(model, perturbed(x), layers=[1, 2, 3, 4], point=point, batch_size=64)
    names = [r.read_at for r in table.rows]
    expected = _numpy_stats(model, names, x)
    for row, (mean, vmax, vmin, std) in zip(table.rows, expected):
        assert row.count == len(x)
        # the small network run twice (other batch sizes), then reduced: tests/tolerances.py
        assert_close([row.mean, row.max, row.min, row.std], [mean, vmax, vmin, std],
                     SMALL_NETWORK_RTOL, what=f"{row.read_at} statistics")
    assert table.rows[0].shape == (8, 8, 4) and table.rows[2].shape == (4, 4, 6)


def test_streams_tf_data_with_labels_and_max_batches(images):
    model = _tiny_model()
    x, y = images
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(48)  # ragged last batch
    table = feature_variances(model, dataset, layers=["act2", "last"])
    (mean, vmax, vmin, _), (mean4, _, _, _) = _numpy_stats(model, ["act2", "relu4"], x)
    assert table["act2"].count == 200 and table["act2"].conv_index is None
    assert_close([table["act2"].mean, table["act2"].max, table["act2"].min], [mean, vmax, vmin],
                 SMALL_NETWORK_RTOL, what="act2 statistics")
    assert_close(table["last"].mean, mean4, SMALL_NETWORK_RTOL, what="last mean")
    first = feature_variances(model, dataset, layers=["last"], max_batches=1)
    assert first["last"].count == 48


def test_last_row_is_the_bias_loss_feature(images):
    """On a BiasLossModel the 'last' row measures exactly its features output."""
    model = with_features(_tiny_model())
    x, _ = images
    table = feature_variances(model, x[:64])
    features = model.predict(x[:64], verbose=0)["features"]
    v = features.reshape(64, -1).var(axis=1, ddof=1)
    assert_close(table["last"].mean, v.mean(), SMALL_NETWORK_RTOL, what="last mean")


def test_keras_applications_model(images):
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, include_preprocessing=False
    )
    x = np.repeat(tf.image.resize(images[0][:16], (32, 32)).numpy(), 3, axis=-1)
    table = feature_variances(model, x, batch_size=8)
    assert [r.label for r in table.rows] == ["5th", "20th", "last"]
    last = table["last"]
    # The last conv before pooling (not the classifier's 1x1 convs after it),
    # read after its BN and hard-swish: the map with_features gives BiasLoss.
    pool = [l for l in model.layers if isinstance(l, keras.layers.GlobalAveragePooling2D)][-1]
    assert model.get_layer(last.read_at).output is pool.input
    assert len(last.shape) == 3 and last.shape[-1] == 576
    feats = with_features(model).predict(x, verbose=0)["features"]
    assert_close(last.mean, feats.reshape(16, -1).var(axis=1, ddof=1).mean(), SMALL_NETWORK_RTOL,
                 what="last mean")
    assert all(np.isfinite([r.mean, r.max, r.min]).all() and r.min <= r.mean <= r.max
               for r in table.rows)


def test_bad_layer_specs():
    model = _tiny_model()
    with pytest.raises(ValueError, match="conv #5"):
        resolve_layers(model, [5])
    with pytest.raises(ValueError, match="no layer named"):
        resolve_layers(model, ["nope"])
    with pytest.raises(ValueError, match="point"):
        resolve_layers(model, point="bn")


def test_table_round_trip_and_markdown(images):
    model = _tiny_model()
    table = feature_variances(model, images[0][:32], layers=[1, "last"])
    again = VarianceTable.from_dict(table.to_dict())
    assert again == table
    md = table.to_markdown()
    assert md.count("\n") == 3 and "1st (c1)" in md
    five = table5_markdown({"CE": table, "BL": again})
    assert five.splitlines()[0].count("avg") == 2 and len(five.splitlines()) == 4


# -- figures ----------------------------------------------------------------


def test_curves_use_bias_loss_math():
    v = np.linspace(0, 1, 21)
    assert_close(z_curve(perturbed(v)), np.clip(np.exp(0.3 * v) - 0.3, 0.5, 1.5), ELEMENTWISE_RTOL)
    assert_close(z_curve(perturbed(v), 2.0, 0.5, clamp=None), np.exp(2 * v) - 0.5, ELEMENTWISE_RTOL)
    p = np.linspace(0.05, 0.95, 7)
    assert_close(loss_curve(perturbed(p)), -np.log(p), ELEMENTWISE_RTOL)
    assert_close(loss_curve(perturbed(p), 0.0, correct=True), -0.7 * np.log(p), ELEMENTWISE_RTOL)
    assert_close(loss_curve(perturbed(p), 1.0, correct=False), -(np.exp(0.3) - 0.3) * np.log(1 - p),
                 ELEMENTWISE_RTOL)


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize(
    "plot, size, dpi, pixels",
    [(plot_bias_function, (6.4, 4.0), 100, (640, 400)),
     (plot_loss_vs_probability, (8.0, 3.0), 50, (400, 150))],
)
def test_figures_write_png_of_the_right_size(tmp_path, plot, size, dpi, pixels):
    path = tmp_path / "figure.png"
    assert plot(str(path), size=size, dpi=dpi) == str(path)
    assert path.stat().st_size > 1000
    assert _png_size(path) == pixels
