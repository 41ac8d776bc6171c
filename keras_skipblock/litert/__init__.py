"""LiteRT (TFLite) deployment: convert to a batch-1, logits-only `.tflite`
(float32, float16, dynamic-range or full int8), verify it against Keras on
real images, evaluate its accuracy, and benchmark it with `litert-benchmark`.

The scripts in `tflite/` are thin command lines over this package.
"""

from keras_skipblock.litert.conversion import (
    QUANTIZE_MODES,
    convert,
    input_shape_of,
    int8_friendly_ops,
    keras_logits,
    load_keras_model,
    recalibrate_batchnorm,
    serving_function,
)
from keras_skipblock.litert.data import load_images
from keras_skipblock.litert.errors import LiteRTError, VerificationError
from keras_skipblock.litert.evaluate import keras_accuracy, tflite_accuracy
from keras_skipblock.litert.runtime import LiteRTModel, op_summary
from keras_skipblock.litert.verify import MAX_ABS_DIFF, MIN_AGREEMENT, compare, verify

__all__ = [
    "QUANTIZE_MODES", "MAX_ABS_DIFF", "MIN_AGREEMENT", "LiteRTError", "VerificationError",
    "LiteRTModel", "convert", "compare", "verify", "input_shape_of", "int8_friendly_ops",
    "keras_logits", "load_keras_model", "load_images", "recalibrate_batchnorm",
    "serving_function", "op_summary", "keras_accuracy", "tflite_accuracy",
]
