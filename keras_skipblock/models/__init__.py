"""Model zoo: SkipblockNet XS/S/M/L and the keras.applications baselines,
all as `BiasLossModel`s with outputs {"logits", "features"}."""

from keras_skipblock.models.authors_weights import load_authors_weights
from keras_skipblock.models.registry import MODEL_NAMES, get_model
from keras_skipblock.models.skipblocknet import (
    AdaptiveAveragePooling2D,
    InputScaling,
    SkipblockNet,
    SkipblockNetL,
    SkipblockNetM,
    SkipblockNetS,
    SkipblockNetXS,
    make_divisible,
    preprocessing_layer,
    raw_input_range,
    stage_outputs,
)
from keras_skipblock.models.torch_state_dict import CheckpointError, read_state_dict

__all__ = [
    "MODEL_NAMES",
    "get_model",
    "AdaptiveAveragePooling2D",
    "InputScaling",
    "SkipblockNet",
    "SkipblockNetXS",
    "SkipblockNetS",
    "SkipblockNetM",
    "SkipblockNetL",
    "make_divisible",
    "preprocessing_layer",
    "raw_input_range",
    "stage_outputs",
    "load_authors_weights",
    "read_state_dict",
    "CheckpointError",
]
