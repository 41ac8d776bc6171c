"""The scripts' quiet output: INFO lines written straight to file descriptor 2
are dropped when TF_CPP_MIN_LOG_LEVEL >= 1, everything else is kept, and a
block that fails shows all it printed."""

import os

import numpy as np
import pytest

from keras_skipblock.logging_utils import native_info_filtered

INFO = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795459076.371875    3754 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
    "I1123 18:39:14.221700 140486077774720 functional_saver.py:440] Sharding callback "
    "duration: 8 microseconds\n"
    "I1123 18:39:14.454891 140486077774720 builder_impl.py:838] Assets written to: /tmp/x/assets\n"
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
    "output_inference_type: FLOAT32\n"
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
)
KEPT = (
    "W0000 00:00:1795464386.956198   18589 flatbuffer_helpers.cc:364] Ignored output_format.\n"
    "E0000 00:00:1795464368.242976   18589 some_op.cc:52] an error\n"
    "Traceback (most recent call last):\n"
    "ValueError: something\n"
)


def write_native(text):
    os.write(2, text.encode())  # as C++ code does, below Python's sys.stderr


def test_info_lines_dropped_the_rest_kept_in_order(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_info_filtered():
        write_native(INFO[:150])  # lines may arrive in pieces
        write_native(INFO[150:] + KEPT)
    assert capfd.readouterr().err == KEPT


def test_a_failing_block_shows_everything(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    with pytest.raises(RuntimeError, match="boom"):
        with native_info_filtered():
            write_native(INFO + KEPT)
            raise RuntimeError("boom")
    assert capfd.readouterr().err == INFO + KEPT


def test_verbose_level_passes_everything_through(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with native_info_filtered():
        write_native(INFO)
    assert capfd.readouterr().err == INFO


def test_the_converters_own_info_line(capfd, monkeypatch):
    """The TFLite converter prints "fully_quantize: ..." for every int8
    conversion, straight to fd 2; filtered, it is gone."""
    import keras

    from keras_skipblock import with_features
    from keras_skipblock.litert.conversion import convert

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    model = with_features(keras.Model(inputs, keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(x))))
    images = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 1)).astype("float32")

    capfd.readouterr()
    convert(model, "int8", images)
    assert "fully_quantize:" in capfd.readouterr().err  # the control: it is printed
    with native_info_filtered():
        flatbuffer = convert(model, "int8", images)
    assert "fully_quantize:" not in capfd.readouterr().err
    assert flatbuffer[4:8] == b"TFL3"
