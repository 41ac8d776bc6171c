"""keras-skipblock: Bias Loss and SkipblockNet (ICCV 2021) for Keras 3.

`import keras_skipblock` loads Keras, the loss, `BiasLossModel`, the models
and the detector class (so saved models load); the data pipelines (TFDS),
keras-cv, training, detection's pipeline and LiteRT load on first use of
`keras_skipblock.training`, `.detection`'s other names, `.data`, `.litert`, ...
"""

import importlib

from keras_skipblock.logging_utils import native_info_filtered

with native_info_filtered():  # TensorFlow's import prints C++ INFO lines that TF_CPP_MIN_LOG_LEVEL misses
    import keras  # noqa: F401

from keras_skipblock import models
from keras_skipblock.bias_loss_model import BiasLossModel, with_features
from keras_skipblock.flops import count_flops, count_params
from keras_skipblock.losses import BiasLoss, BiasWeights, bias_weights, sample_variance

# Registers SSDDetector, so keras.saving.load_model(path, compile=False) revives saved detectors
# (LiteRT conversion relies on it); light: keras-cv loads only when anchors are made.
from keras_skipblock.detection import model as _detection_model  # noqa: E402, F401
# Registers the QAT layers, so best_qat.keras files load the same way (keras only).
from keras_skipblock.quantization import layers as _quantization_layers  # noqa: E402, F401

__version__ = "0.1.0"

_SUBPACKAGES = ("analysis", "data", "detection", "evaluation", "litert", "quantization", "training",
                "validation")


def load_model(path, compile=True, **kwargs):
    """A saved `.keras` model of this package: classifier (`BiasLossModel`) or detector
    (`SSDDetector`), with its optimizer and loss when `compile`. The documented way:
    it registers every class such a file may name (the training stack's optimizers and
    losses too) before calling `keras.saving.load_model`."""
    importlib.import_module("keras_skipblock.training")  # SGD/RMSprop with EMA warm-up, focal loss
    importlib.import_module("keras_skipblock.detection.loss")  # MultiboxLoss
    return keras.saving.load_model(path, compile=compile, **kwargs)


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
