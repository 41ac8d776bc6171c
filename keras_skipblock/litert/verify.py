"""Does the `.tflite` compute what the Keras model computes, on real images?

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
"""

import dataclasses

import numpy as np

from keras_skipblock.litert.conversion import keras_logits
from keras_skipblock.litert.errors import VerificationError
from keras_skipblock.litert.runtime import LiteRTModel

MAX_ABS_DIFF = 1e-4
MIN_AGREEMENT = 0.9


@dataclasses.dataclass
class Verification:
    quantize: str
    samples: int
    max_abs_diff: float
    relative_rms_error: float  # rms(Δlogit) / rms(keras logits)
    top1_agreement: float
    threshold: str
    passed: bool

    def describe(self):
        return (
            f"verification ({self.quantize}, {self.samples} real samples): "
            f"max |Δlogit| = {self.max_abs_diff:.3g}, relative RMS error = "
            f"{self.relative_rms_error:.3g}, top-1 agreement = {self.top1_agreement:.4f} "
            f"[{self.threshold}] -> {'PASS' if self.passed else 'FAIL'}"
        )


def compare(keras_out, lite_out, quantize, max_abs_diff=MAX_ABS_DIFF, min_agreement=MIN_AGREEMENT):
    """Verification of two logit arrays (n, classes)."""
    keras_out = np.asarray(keras_out, dtype="float64")
    lite_out = np.asarray(lite_out, dtype="float64")
    diff = np.abs(keras_out - lite_out)
    rms_ref = float(np.sqrt(np.mean(keras_out ** 2))) or 1.0
    agreement = float(np.mean(keras_out.argmax(-1) == lite_out.argmax(-1)))
    if quantize == "none":
        scale = max(1.0, float(np.abs(keras_out).max()))
        passed = float(diff.max()) <= max_abs_diff * scale
        threshold = f"max |Δlogit| <= {max_abs_diff:g} x max(1, max |logit| = {scale:.3g})"
    else:
        passed = agreement >= min_agreement
        threshold = f"top-1 agreement >= {min_agreement:g}"
    return Verification(quantize, len(keras_out), float(diff.max()),
                        float(np.sqrt(np.mean(diff ** 2))) / rms_ref, agreement, threshold, passed)


def verify(keras_model, tflite_model, images, quantize, max_abs_diff=MAX_ABS_DIFF,
           min_agreement=MIN_AGREEMENT, raise_on_failure=True):
    """Run both models on `images` (real, float32 in [-1, 1]) and compare.

    `tflite_model`: path, bytes or LiteRTModel. Raises VerificationError when
    the check fails and `raise_on_failure`.
    """
    lite = tflite_model if isinstance(tflite_model, LiteRTModel) else LiteRTModel(tflite_model)
    result = compare(keras_logits(keras_model, images), lite.predict(images), quantize,
                     max_abs_diff, min_agreement)
    if raise_on_failure and not result.passed:
        raise VerificationError(result.describe())
    return result
