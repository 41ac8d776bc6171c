"""count_flops against hand counts and published figures; SkipblockNet
XS/S/L against their Table 1 targets (SPEC §3)."""

import numpy as np
import pytest

import keras
import keras_skipblock as ks
from keras_skipblock.models import get_model


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_counts_each_layer_kind_by_hand():
    inputs = keras.Input((10, 12, 4))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)  # 5x6x8, 3*3*4 each
    x = keras.layers.DepthwiseConv2D(5, padding="same", depth_multiplier=2)(x)  # 5x6x16, 25 each
    x = keras.layers.Conv2D(16, 1, groups=4)(x)  # 5x6x16, 4 inputs each
    x = keras.layers.SeparableConv2D(6, 3, padding="valid")(x)  # 3x4: dw 16*9, pw 16*6
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(7)(x)
    model = keras.Model(inputs, x)
    expected = (5 * 6 * 8 * 9 * 4) + (5 * 6 * 16 * 25) + (5 * 6 * 16 * 4) + (3 * 4 * (16 * 9 + 16 * 6)) + 6 * 7
    assert ks.count_flops(model) == expected


def test_needs_a_static_input_size():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="static input size"):
        ks.count_flops(model)


def test_calibrated_on_mobilenet_v3_large():
    # MobileNetV3 paper (Howard et al. 2019), Large 1.0 at 224: 219 M MAdds.
    model = keras.applications.MobileNetV3Large(
        input_shape=(224, 224, 3), weights=None, include_preprocessing=False)
    assert abs(ks.count_flops(model) / 219e6 - 1) < 0.03


def test_skipblocknet_m_matches_the_authors_model():
    # SPEC §2: about 236.6 M multiply-accumulates, counted on the authors' model.
    assert abs(ks.count_flops(get_model("skipblocknet_m")) / 236.6e6 - 1) < 0.002


@pytest.mark.parametrize("name,target_macs,target_params", [
    ("skipblocknet_xs", 81e6, 2.3e6),
    ("skipblocknet_s", 152e6, 3.6e6),
    ("skipblocknet_l", 364e6, 7.1e6),
])
def test_designed_variants_meet_table_1_targets(name, target_macs, target_params):
    model = get_model(name)
    assert abs(ks.count_flops(model) / target_macs - 1) <= 0.05
    assert abs(trainable(model) / target_params - 1) <= 0.05
    # All parameters (BN statistics included) are within the band too.
    assert abs(model.count_params() / target_params - 1) <= 0.05


def test_scales_with_input_size():
    from keras_skipblock.flops import layer_macs

    at_224 = layer_macs(get_model("skipblocknet_m"))
    at_448 = layer_macs(get_model("skipblocknet_m", input_shape=(448, 448, 3)))
    assert at_224.keys() == at_448.keys()
    for name, macs in at_224.items():
        # Feature-map layers see 4x the positions at twice the side; dense
        # layers and SE convolutions (on globally pooled 1x1 maps) do not.
        fixed = name in ("head_dense", "logits") or "_se_" in name
        assert at_448[name] == (macs if fixed else 4 * macs), name
