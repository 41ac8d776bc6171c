"""The convert -> check -> write -> verify pipeline behind `tflite/convert.py`, for
either task (`tasks.spec_for`)."""

import dataclasses
from typing import Optional

from keras_skipblock.litert.conversion import convert_with_reference, input_shape_of, recalibrate_batchnorm
from keras_skipblock.litert.conversion import requires_calibration
from keras_skipblock.litert.errors import LiteRTError, VerificationError
from keras_skipblock.litert.runtime import write_tflite
from keras_skipblock.litert.tasks import spec_for
from keras_skipblock.litert.verify import MAX_ABS_DIFF


@dataclasses.dataclass
class ConversionResult:
    output: str
    quantize: str
    size_bytes: int
    ops_outside_xnnpack: dict
    xnnpack_partitions: int
    verification: Optional[object]  # the task's check (verify.Verification, DetectionVerification, Int8MapCheck)


def convert_file(model, output, quantize="none", representative_data="fashion_mnist",
                 num_calibration=300, verify_data=None, num_verify=200, run_verification=True,
                 max_abs_diff=MAX_ABS_DIFF, min_agreement=None, int8_friendly=True,
                 io_type="float32", recalibrate_bn=False, data_dir=None, image_size=None, log=print,
                 spec=None):
    """Convert `model` (classifier or detector), write `output`, and verify it on real images.

    Calibration images come from the *train* split and verification images
    from the *test* split (classifiers: of `representative_data` and
    `verify_data`, default the same source; detectors: fashion_mnist_scenes),
    so the check does not reuse calibration samples. Raises
    VerificationError when verification fails: after writing the file
    (kept for inspection), except where the task checks before writing
    (int8 detectors: their mAP against float32), which writes nothing. `spec`: the
    task's spec (default `tasks.spec_for(model)`). `min_agreement` None: the check's default (0.9 for
    post-training quantization, verify.MIN_QAT_AGREEMENT for a quantization-aware model's int8 file).
    A quantization-aware model (`quantization.is_quantized`) converts to int8 with no calibration
    images: its ranges are its own.
    """
    spec = spec_for(model, spec)
    shape = input_shape_of(model, image_size)
    h, w, _ = shape
    if h != w:
        raise LiteRTError(f"Square inputs only (got {h}x{w}).")
    spec.check(model, quantize)
    calibration = None
    if (quantize == "int8" and requires_calibration(model)) or recalibrate_bn:
        calibration = spec.calibration_images(model, shape, representative_data, num_calibration, data_dir)
        log(f"calibration: {len(calibration)} real images from {spec.describe_data(representative_data, 'train')}")
    elif quantize == "int8":
        log("calibration: none (a quantization-aware model: the ranges learned in training are converted)")
    checked_before_writing = spec.checked_before_writing(quantize)
    images = truth = None
    if run_verification or checked_before_writing:  # loaded before anything is written: bad data leaves no file
        images, truth = spec.verification_data(model, shape, verify_data or representative_data, num_verify,
                                               quantize, data_dir)
    if recalibrate_bn:
        n = recalibrate_batchnorm(model, calibration[-64:])
        log(f"recalibrated {n} BatchNormalization layers on real images (untrained model)")
    flatbuffer, reference = convert_with_reference(model, quantize, calibration, int8_friendly=int8_friendly,
                                                   io_type=io_type, input_shape=shape, spec=spec)

    def check():
        result = spec.verify(model, flatbuffer, images, quantize, max_abs_diff=max_abs_diff,
                             min_agreement=min_agreement, truth=truth, reference=reference)
        log(result.describe())
        return result

    verification = check() if checked_before_writing else None
    if verification is not None and not verification.passed:
        raise VerificationError(verification.describe() + "; nothing written.")
    summary, description = write_tflite(output, flatbuffer)
    log(f"wrote ({quantize}) {description}")
    result = ConversionResult(output, quantize, len(flatbuffer), dict(summary["outside_xnnpack"]),
                              summary["partitions"], verification)
    if run_verification and verification is None:
        result.verification = check()
        if not result.verification.passed:
            raise VerificationError(result.verification.describe())
    return result
