"""Quantization-aware training (QAT) for Keras 3 models: int8 as LiteRT
computes it, simulated in training, converted exactly (docs/quantization.md)."""

from keras_skipblock.quantization.layers import (
    ActivationQuantizer,
    QuantAdd,
    QuantAveragePooling,
    QuantConv,
    QuantHardActivation,
    QuantRescaling,
)
from keras_skipblock.quantization.transform import (
    QuantizationError,
    calibrate_ranges,
    freeze_ranges,
    is_quantized,
    quantize_model,
)
from keras_skipblock.quantization.training import fine_tune

__all__ = [
    "ActivationQuantizer", "QuantAdd", "QuantAveragePooling", "QuantConv", "QuantHardActivation", "QuantRescaling",
    "QuantizationError", "calibrate_ranges", "fine_tune", "freeze_ranges", "is_quantized", "quantize_model",
]
