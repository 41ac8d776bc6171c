"""What differs between the tasks LiteRT serves, in one place.

A spec says, for one task, what its `.tflite` computes (the serving
function and its output names), which quantization modes it takes and what
stays float32 in int8, how a `.tflite` of it runs (`runtime`), how it is
checked against Keras (`verify`) and on which real data it is calibrated
and verified. `spec_for(model)` picks the spec; `conversion.convert`,
`verify.verify`, `pipeline.convert_file` and the benchmark go through it, so
both tasks share one convert -> verify -> run -> benchmark path.

- CLASSIFIER: images -> "logits"; every mode; full-integer int8; checked by
  logits (float32) or top-1 agreement (quantized); data: `load_images`
  (fashion_mnist, digits or a folder), in the model's input range.
- DETECTOR: images -> "boxes", "classes", "scores", "count" with decoding and
  NMS inside; float32 or int8 with the post-processing kept float32; checked
  by matching detections (float32) or by VOC mAP against float32 (int8,
  before the file is written); data: real `fashion_mnist_scenes`.
"""

import dataclasses

from keras_skipblock.detection.postprocess import IOU_THRESHOLD, MAX_DETECTIONS, SCORE_THRESHOLD
from keras_skipblock.litert import conversion, data
from keras_skipblock.litert import runtime as runners
from keras_skipblock.litert.errors import LiteRTError
from keras_skipblock.litert.verify import (MAX_ABS_DIFF, MIN_INT8_CHECK_SCENES, check_int8_map,
                                           verify_detections, verify_logits)
from keras_skipblock.validation import is_detector  # one test, shared with the scripts' input checks


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    name = "classifier"
    outputs = ("logits",)
    quantize_modes = conversion.QUANTIZE_MODES
    postprocess_scope = None  # int8 is full-integer: nothing is kept float
    runtime = runners.LiteRTModel

    def check(self, model, quantize):
        """Raise LiteRTError, before anything is loaded or converted, for what cannot work."""

    def serving_function(self, model, input_shape):
        return conversion.serving_function(model, input_shape)

    def calibration_images(self, model, input_shape, source, num_images, data_dir=None):
        """Real images of the *train* split of `source`, in the model's input range."""
        return self._images(model, input_shape, source, "train", num_images, data_dir)

    def verification_data(self, model, input_shape, source, num_images, quantize, data_dir=None):
        """(images of the *test* split of `source` in the model's input range, None)."""
        return self._images(model, input_shape, source, "test", num_images, data_dir), None

    @staticmethod
    def _images(model, input_shape, source, split, num_images, data_dir):
        from keras_skipblock.models import raw_input_range

        h, _, c = input_shape
        images, _ = data.load_images(source, split, h, c, num_images, data_dir=data_dir)
        return data.to_input_range(images, raw_input_range(model))  # [0, 255] for models that scale inside

    def describe_data(self, source, split):
        return f"{source} ({split} split)"

    def verify(self, model, tflite_model, images, quantize, max_abs_diff=MAX_ABS_DIFF,
               min_agreement=None, truth=None, reference=None):
        return verify_logits(model, tflite_model, images, quantize, max_abs_diff, min_agreement)

    def checked_before_writing(self, quantize):
        """Whether a failed check refuses the file (nothing written) rather than keeping it for
        inspection."""
        return False


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    # NMS inside the `.tflite`; the defaults are `detection.detect`'s (SSD's), which verification mirrors.
    max_detections: int = MAX_DETECTIONS
    iou_threshold: float = IOU_THRESHOLD
    score_threshold: float = SCORE_THRESHOLD

    name = "detector"
    outputs = runners.DETECTOR_OUTPUTS
    quantize_modes = ("none", "int8")
    postprocess_scope = conversion.POSTPROCESS_SCOPE  # decoding, softmax, NMS, top-k stay float32 in int8
    runtime = runners.LiteRTDetector

    def check(self, model, quantize):
        from keras_skipblock.data.fashion_mnist import CLASS_NAMES
        from keras_skipblock.detection.model import num_classes_of

        if quantize == "int8" and num_classes_of(model) != len(CLASS_NAMES):
            # The int8 check needs ground truth for the detector's own classes.
            raise LiteRTError(
                f"int8 detectors are checked by their mAP on real fashion_mnist_scenes (10 classes); this "
                f"detector has {num_classes_of(model)}, so its int8 file could not be checked and was not "
                "written. Convert it in float32 (--quantize=none).")

    def serving_function(self, model, input_shape):
        return conversion.detector_serving_function(model, input_shape, self.max_detections,
                                                    self.iou_threshold, self.score_threshold)

    def calibration_images(self, model, input_shape, source, num_images, data_dir=None):
        """Real scenes of the *train* split (`source` names classifier data: not used)."""
        return data.scene_images(num_images, input_shape[0], "train", data_dir=data_dir)

    def verification_data(self, model, input_shape, source, num_images, quantize, data_dir=None):
        """(real test scenes, their DetectionExamples); int8: at least MIN_INT8_CHECK_SCENES."""
        if quantize == "int8":
            num_images = max(num_images, MIN_INT8_CHECK_SCENES)
        return data.scenes(num_images, input_shape[0], "test", data_dir=data_dir)

    def describe_data(self, source, split):
        return f"fashion_mnist_scenes ({split} split)"

    def verify(self, model, tflite_model, images, quantize, max_abs_diff=None, min_agreement=None,
               truth=None, reference=None):
        if quantize == "none":
            return verify_detections(model, tflite_model, images, max_detections=self.max_detections,
                                     iou_threshold=self.iou_threshold, score_threshold=self.score_threshold)
        if reference is None:
            reference = conversion.convert(model, "none", spec=self)
        return check_int8_map(reference, tflite_model, images, truth, raise_on_failure=False)

    def checked_before_writing(self, quantize):
        return quantize == "int8"  # an int8 detector that loses mAP is refused, not written


CLASSIFIER = ClassifierSpec()
DETECTOR = DetectorSpec()


def spec_for(model, spec=None):
    """The spec of `model`'s task: DETECTOR for an SSD from `build_detector`, else CLASSIFIER.
    A `spec` given (e.g. DetectorSpec(max_detections=10)) is checked against the model and returned."""
    task = DetectorSpec if is_detector(model) else ClassifierSpec
    if spec is None:
        return DETECTOR if task is DetectorSpec else CLASSIFIER
    if not isinstance(spec, task):
        raise LiteRTError(f"{model.name} is a {task.name}; a {type(spec).__name__} cannot convert or verify it. "
                          f"Pass a {task.__name__}, or no spec.")
    return spec
