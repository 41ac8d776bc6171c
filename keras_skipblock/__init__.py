"""keras-skipblock: Bias Loss and SkipblockNet (ICCV 2021) for Keras 3."""

from keras_skipblock.logging_utils import native_info_filtered

with native_info_filtered():  # TensorFlow's import prints C++ INFO lines that TF_CPP_MIN_LOG_LEVEL misses
    import keras  # noqa: F401

from keras_skipblock import models
from keras_skipblock.flops import count_flops
from keras_skipblock.losses import BiasLoss, BiasWeights, bias_weights, sample_variance
from keras_skipblock.bias_loss_model import BiasLossModel, with_features
from keras_skipblock import detection  # noqa: E402  after the classes it builds on; registers SSDDetector

__version__ = "0.1.0"
