"""Does the `.tflite` compute what the Keras model computes, on real images?

Classifiers (`compare`):

- float32 ("none"): max |Δlogit| must be at most `max_abs_diff` (1e-4)
  times the logits' scale, max(1, max |logit|): the same function with a
  different summation order, whose rounding grows with the values summed
  (the authors' M reaches |logit| ~ 1000 on grey images, and differs by 4e-2
  there, 3e-4 at |logit| ~ 50).
- quantized ("float16", "dynamic", "int8"): logits move by design, so the
  test is top-1 agreement with the Keras model, at least `min_agreement`.
  0.9 is the default for a trained model: on our trained Fashion-MNIST
  SkipblockNet, int8 agrees on ~99% (docs/tflite.md), so 0.9 leaves room for
  harder data sets yet catches a broken conversion (which agrees on ~10%,
  chance for 10 classes). An *untrained* model's logits are near-ties, so
  its agreement measures nothing; the relative error is printed for it.
- int8 of a quantization-aware model (`quantization.is_quantized`): the
  `.tflite` should compute what the Keras QAT model computed in training, so
  the bound is tighter: top-1 agreement >= MIN_QAT_AGREEMENT and the 99th
  percentile of |Δlogit| <= MAX_QAT_P99_STEPS output quantization steps
  (the step of the Keras model's logits quantizer): the issue's target
  (>= 0.995 agreement, logits within 2 steps), met with a margin since the
  Keras QAT model emulates XNNPACK's integer arithmetic in inference
  (measurements below and in docs/quantization.md).

Detectors:

- float32: every Keras detection (keras-cv NMS) with score >=
  VERIFY_SCORE_THRESHOLD has a LiteRT twin of the same class within
  MAX_BOX_DIFF of the image size on every coordinate, and vice versa
  (`compare_detections`).
- int8: quantization moves boxes by more than that, so the check is VOC mAP
  against the float32 `.tflite` on the same real test scenes with their
  ground truth (`check_int8_map`).

`verify` runs the check of the model's task (`tasks.spec_for`).
"""

import dataclasses
from typing import Optional

import numpy as np

from keras_skipblock.litert.conversion import detector_anchors, keras_logits
from keras_skipblock.litert.errors import LiteRTError, VerificationError
from keras_skipblock.litert.runtime import LiteRTDetector, LiteRTModel

MAX_ABS_DIFF = 1e-4
MIN_AGREEMENT = 0.9
MAX_BOX_DIFF = 1e-3  # of the image size
VERIFY_SCORE_THRESHOLD = 0.3
# int8 may lose at most 0.03 VOC mAP (area) against the float32 `.tflite` on the same scenes.
# What int8 costs a network that quantizes well is 1-3 points (MobileNetV3 classifiers lose
# 1.3-2.6 top-1 points under int8; Model Garden's MobileNetV2 RetinaNet 1.6 mAP points with
# QAT); a broken conversion loses everything (0.52 -> 0.00 before post-processing stayed
# float). Both run on the same images, so sampling noise does not enter the difference.
MAX_INT8_MAP_DROP = 0.03
MIN_INT8_CHECK_SCENES = 200
# QAT int8 `.tflite` (run by XNNPACK, LiteRT's default CPU engine) vs the Keras QAT model it came
# from, whose inference emulates XNNPACK's integer arithmetic (docs/quantization.md, "Exact
# conversion"). Measured, |Δlogit| in output steps:
# - SkipblockNet-M w0.5 from `recipes/fashion_mnist.py --epochs=3 --steps_per_epoch=200
#   --qat_epochs=1`, all 10,000 test images: agreement 1.0000, 99th percentile 0, max 0 with
#   QuantAdd (bit-exact; max 2, 99.99 % equal with a float-simulated Add);
# - SkipblockNet-M w0.5 of benchmarks/qat_fashion_mnist.py, 10,000 images: agreement 1.0000,
#   99th percentile 0, max 2 with QuantAdd (99.988 % equal; max 6 with a float-simulated Add);
# - the tiny model of tests/test_quantization.py, 500 images: see P99_LOGIT_STEPS there.
# - TF_ENABLE_ONEDNN_OPTS=0 and one TF thread, 2,000 images: both bit-exact with QuantAdd (before
#   the last two fixes: agreement 0.9995 / 1.0000, 99th percentile 1 / 0, max 3 / 1).
# Bounds = the target: agreement >= 0.995 (a 200-image check, convert.py's default, fails
# at 2 disagreements: Poisson probability 2e-4 at the 1 in 10,000 measured with the defaults, 0.5 %
# at the worst rate measured, 1 in 2,000) and the 99th percentile within 2 steps (measured <= 1).
# The max is not bounded: models saved before QuantAdd (a float-simulated Add) keep 3-6 steps on
# 0.027 % of one model's logits; Mul, MEAN and the hard-swish are still simulated in float.
MIN_QAT_AGREEMENT = 0.995
MAX_QAT_P99_STEPS = 2.0


def verify(keras_model, tflite_model, images, quantize, max_abs_diff=MAX_ABS_DIFF,
           min_agreement=None, raise_on_failure=True, truth=None, reference=None, spec=None):
    """Run both models on `images` (real, float32 in the model's input range) and compare,
    as the model's task does (see the module docstring).

    `tflite_model`: path, bytes or the task's runner. Detectors only: `truth`, the
    images' DetectionExamples, and `reference`, the float32 `.tflite` (default: converted
    here), for the int8 mAP check. `spec`: the task's spec (default `tasks.spec_for(keras_model)`).
    Raises VerificationError when the check fails and `raise_on_failure`.
    """
    from keras_skipblock.litert.tasks import spec_for  # tasks builds on this module

    result = spec_for(keras_model, spec).verify(keras_model, tflite_model, images, quantize,
                                          max_abs_diff=max_abs_diff, min_agreement=min_agreement,
                                          truth=truth, reference=reference)
    if raise_on_failure and not result.passed:
        raise VerificationError(result.describe())
    return result


# -- classifiers ---------------------------------------------------------------------------


@dataclasses.dataclass
class Verification:
    quantize: str
    samples: int
    max_abs_diff: float
    relative_rms_error: float  # rms(Δlogit) / rms(keras logits)
    top1_agreement: float
    threshold: str
    passed: bool
    p99_steps: Optional[float] = None  # QAT: 99th percentile of |Δlogit| in output quantization steps
    max_steps: Optional[float] = None

    def describe(self):
        steps = "" if self.p99_steps is None else (
            f", |Δlogit| in output steps: 99th percentile {self.p99_steps:.2f}, max {self.max_steps:.2f}")
        return (
            f"verification ({self.quantize}{', quantization-aware model' if self.p99_steps is not None else ''}, "
            f"{self.samples} real samples): "
            f"max |Δlogit| = {self.max_abs_diff:.3g}, relative RMS error = "
            f"{self.relative_rms_error:.3g}, top-1 agreement = {self.top1_agreement:.4f}{steps} "
            f"[{self.threshold}] -> {'PASS' if self.passed else 'FAIL'}"
        )


def compare(keras_out, lite_out, quantize, max_abs_diff=MAX_ABS_DIFF, min_agreement=None, output_step=None,
            max_p99_steps=MAX_QAT_P99_STEPS):
    """Verification of two logit arrays (n, classes).

    `output_step`: for a quantization-aware model converted to int8, the quantization step of its
    logits (`qat_output_step`); then the QAT bounds apply (min_agreement default MIN_QAT_AGREEMENT,
    99th percentile of |Δlogit| / output_step at most `max_p99_steps`). Otherwise min_agreement
    defaults to MIN_AGREEMENT."""
    keras_out = np.asarray(keras_out, dtype="float64")
    lite_out = np.asarray(lite_out, dtype="float64")
    diff = np.abs(keras_out - lite_out)
    rms_ref = float(np.sqrt(np.mean(keras_out ** 2))) or 1.0
    agreement = float(np.mean(keras_out.argmax(-1) == lite_out.argmax(-1)))
    if quantize == "none":
        scale = max(1.0, float(np.abs(keras_out).max()))
        passed = float(diff.max()) <= max_abs_diff * scale
        threshold = f"max |Δlogit| <= {max_abs_diff:g} x max(1, max |logit| = {scale:.3g})"
    elif output_step is not None and quantize == "int8":
        min_agreement = MIN_QAT_AGREEMENT if min_agreement is None else min_agreement
        steps = diff / output_step
        p99, worst = float(np.percentile(steps, 99)), float(steps.max())
        passed = agreement >= min_agreement and p99 <= max_p99_steps
        threshold = (f"QAT: top-1 agreement >= {min_agreement:g}, 99th percentile <= {max_p99_steps:g} steps "
                     f"of {output_step:.3g}")
        return Verification(quantize, len(keras_out), float(diff.max()),
                            float(np.sqrt(np.mean(diff ** 2))) / rms_ref, agreement, threshold, passed, p99, worst)
    else:
        min_agreement = MIN_AGREEMENT if min_agreement is None else min_agreement
        passed = agreement >= min_agreement
        threshold = f"top-1 agreement >= {min_agreement:g}"
    return Verification(quantize, len(keras_out), float(diff.max()),
                        float(np.sqrt(np.mean(diff ** 2))) / rms_ref, agreement, threshold, passed)


def _single_output(layer):
    try:
        return layer.output
    except (AttributeError, ValueError):  # a layer called more than once, or never
        return None


def qat_output_step(model):
    """The quantization step of a quantization-aware classifier's logits (the range of the
    quantizer that writes them, over 255 levels), or None for a float model (or when the
    logits' producer keeps no range)."""
    from keras_skipblock.quantization import is_quantized

    if not is_quantized(model):
        return None
    output = model.output
    if isinstance(output, dict):
        output = output.get("logits", next(iter(output.values())))
    elif isinstance(output, (list, tuple)):
        output = output[0]
    # The layer that writes the logits, by its public output (no private Keras history).
    layer = next((layer for layer in model.layers if _single_output(layer) is output), None)
    ranges = layer.ranges() if hasattr(layer, "ranges") else {}
    if "output" not in ranges:
        return None
    low, high = ranges["output"]
    return (max(high, 0.0) - min(low, 0.0)) / 255.0 or None


def verify_logits(keras_model, tflite_model, images, quantize, max_abs_diff=MAX_ABS_DIFF,
                  min_agreement=None):
    """A classifier's check: `compare` of Keras and LiteRT logits on `images` (the QAT bounds
    for an int8 file of a quantization-aware model)."""
    lite = tflite_model if isinstance(tflite_model, LiteRTModel) else LiteRTModel(tflite_model)
    step = qat_output_step(keras_model) if quantize == "int8" else None
    return compare(keras_logits(keras_model, images), lite.predict(images), quantize,
                   max_abs_diff, min_agreement, output_step=step)


# -- detectors -----------------------------------------------------------------------------


def _detector(tflite_model):
    return tflite_model if isinstance(tflite_model, LiteRTDetector) else LiteRTDetector(tflite_model)


@dataclasses.dataclass
class DetectionVerification:
    images: int
    detections: int
    unmatched: int
    max_box_diff: float
    max_score_diff: float
    passed: bool

    def describe(self):
        verdict = "PASSED" if self.passed else "FAILED"
        return (f"detector verification {verdict}: {self.images} images, {self.detections} Keras detections "
                f"(score >= {VERIFY_SCORE_THRESHOLD}), {self.unmatched} without a LiteRT twin, max box "
                f"difference {self.max_box_diff:.2e} of the image size (limit {MAX_BOX_DIFF:g}), max score "
                f"difference {self.max_score_diff:.2e}")


def compare_detections(keras_detections, litert_detections, score_threshold=VERIFY_SCORE_THRESHOLD,
                       max_box_diff=MAX_BOX_DIFF):
    """Each Keras detection with score >= score_threshold must have a LiteRT
    detection of the same class whose box differs by at most max_box_diff
    (every coordinate, as a fraction of the image size), and vice versa."""
    total = unmatched = 0
    worst_box = worst_score = 0.0
    for (kb, ks, kc), (lb, ls, lc) in zip(keras_detections, litert_detections):
        keep_k, keep_l = ks >= score_threshold, ls >= score_threshold
        kb, ks, kc = kb[keep_k], ks[keep_k], kc[keep_k]
        lb, ls, lc = lb[keep_l], ls[keep_l], lc[keep_l]
        total += len(kb)
        used = np.zeros(len(lb), bool)
        for box, score, label in zip(kb, ks, kc):
            candidates = np.nonzero((lc == label) & ~used)[0]
            if len(candidates) == 0:
                unmatched += 1
                continue
            diffs = np.abs(lb[candidates] - box).max(axis=1)
            best = candidates[int(np.argmin(diffs))]
            used[best] = True
            worst_box = max(worst_box, float(diffs.min()))
            worst_score = max(worst_score, float(abs(ls[best] - score)))
        unmatched += int((~used).sum())
    passed = unmatched == 0 and worst_box <= max_box_diff
    return DetectionVerification(len(keras_detections), total, unmatched, worst_box, worst_score, passed)


def verify_detections(model, tflite_model, images, **nms_kwargs):
    """A float32 detector's check: Keras (keras-cv NMS with `nms_kwargs`, those of the
    `.tflite`) vs LiteRT detections on `images` (n, H, W, 3) in [-1, 1], by `compare_detections`."""
    from keras_skipblock.detection.postprocess import detect

    keras_detections = detect(model, np.asarray(images, "float32"), detector_anchors(model), **nms_kwargs)
    return compare_detections(keras_detections, _detector(tflite_model).detect(images))


@dataclasses.dataclass
class Int8MapCheck:
    images: int
    float32_map: dict  # {"map_area", "map_11point"}
    int8_map: dict
    max_drop: float
    passed: bool

    def describe(self):
        return (f"int8 check {'PASSED' if self.passed else 'FAILED'} on {self.images} real test scenes: "
                f"VOC mAP@0.5 int8 {self.int8_map['map_area']:.4f} vs float32 {self.float32_map['map_area']:.4f} "
                f"(11-point {self.int8_map['map_11point']:.4f} vs {self.float32_map['map_11point']:.4f}); "
                f"allowed drop {self.max_drop:g}")


def check_int8_map(float32_model, int8_model, images, truth, max_drop=None, raise_on_failure=True):
    """VOC mAP of an int8 detector `.tflite` next to its float32 `.tflite` on the same real
    images (n, H, W, 3) in [-1, 1] with ground truth `truth` (DetectionExamples). Fails when
    int8 loses more than `max_drop` (area mAP; default MAX_INT8_MAP_DROP)."""
    from keras_skipblock.detection.metrics import voc_map

    if truth is None:
        raise LiteRTError("An int8 detector is checked by its VOC mAP, which needs the images' ground "
                          "truth: pass truth=DetectionExamples (litert.scenes(...) returns both).")
    max_drop = MAX_INT8_MAP_DROP if max_drop is None else max_drop
    truths = list(zip(truth.boxes, truth.classes, truth.difficult))
    maps = []
    for flatbuffer in (float32_model, int8_model):
        result = voc_map(_detector(flatbuffer).detect(images), truths, len(truth.class_names),
                         truth.class_names)
        maps.append({key: result[key] for key in ("map_area", "map_11point")})
    check = Int8MapCheck(len(images), maps[0], maps[1], max_drop,
                         maps[1]["map_area"] >= maps[0]["map_area"] - max_drop)
    if raise_on_failure and not check.passed:
        raise VerificationError(check.describe())
    return check
