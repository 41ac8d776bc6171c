"""LiteRT (TFLite) deployment of classifiers and SSD detectors through one path:
convert to a batch-1 `.tflite` (classifier: logits; detector: boxes / classes /
scores / count with NMS inside; float32, float16, dynamic-range or int8),
verify it against Keras on real images, run it, evaluate its accuracy, and
benchmark it with `litert-benchmark`. `spec_for(model)` names the task; the
spec (`tasks.py`) holds what differs between the two.

The scripts in `tflite/` are thin command lines over this package.
"""

from keras_skipblock.litert.conversion import (
    POSTPROCESS_SCOPE, QUANTIZE_MODES, convert, convert_with_reference, detector_anchors,
    detector_serving_function, input_shape_of, int8_friendly_ops, keras_logits, load_keras_model,
    recalibrate_batchnorm, requires_calibration, serving_function)
from keras_skipblock.litert.data import load_images, scene_images, scenes
from keras_skipblock.litert.errors import LiteRTError, VerificationError
from keras_skipblock.litert.evaluate import keras_accuracy, tflite_accuracy
from keras_skipblock.litert.pipeline import ConversionResult, convert_file
from keras_skipblock.litert.runtime import DETECTOR_OUTPUTS, LiteRTDetector, LiteRTModel, op_summary, write_tflite
from keras_skipblock.litert.tasks import CLASSIFIER, DETECTOR, ClassifierSpec, DetectorSpec, is_detector, spec_for
from keras_skipblock.litert.verify import (
    MAX_ABS_DIFF, MAX_BOX_DIFF, MAX_INT8_MAP_DROP, MAX_QAT_P99_STEPS, MIN_AGREEMENT, MIN_INT8_CHECK_SCENES,
    MIN_QAT_AGREEMENT, DetectionVerification, Int8MapCheck, Verification, check_int8_map, compare,
    compare_detections, qat_output_step, verify)

__all__ = [
    # the one path, both tasks
    "spec_for", "is_detector", "ClassifierSpec", "DetectorSpec", "CLASSIFIER", "DETECTOR",
    "convert", "convert_with_reference", "requires_calibration", "verify", "convert_file",
    "ConversionResult", "write_tflite", "op_summary", "load_keras_model", "input_shape_of",
    "recalibrate_batchnorm", "int8_friendly_ops", "QUANTIZE_MODES", "LiteRTError", "VerificationError",
    # classifiers
    "serving_function", "keras_logits", "LiteRTModel", "load_images", "compare", "Verification",
    "MAX_ABS_DIFF", "MIN_AGREEMENT", "keras_accuracy", "tflite_accuracy",
    "MIN_QAT_AGREEMENT", "MAX_QAT_P99_STEPS", "qat_output_step",
    # detectors
    "detector_serving_function", "detector_anchors", "POSTPROCESS_SCOPE", "DETECTOR_OUTPUTS",
    "LiteRTDetector", "scenes", "scene_images", "compare_detections", "DetectionVerification",
    "check_int8_map", "Int8MapCheck", "MAX_BOX_DIFF", "MAX_INT8_MAP_DROP", "MIN_INT8_CHECK_SCENES",
]
