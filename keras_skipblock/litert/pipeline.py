"""The convert -> write -> verify pipeline behind `tflite/convert.py`."""

import dataclasses
from typing import Optional

from keras_skipblock.litert.conversion import convert, input_shape_of, recalibrate_batchnorm
from keras_skipblock.litert.data import load_images, to_input_range
from keras_skipblock.litert.errors import LiteRTError, VerificationError
from keras_skipblock.litert.runtime import write_tflite
from keras_skipblock.litert.verify import MAX_ABS_DIFF, MIN_AGREEMENT, Verification, verify


@dataclasses.dataclass
class ConversionResult:
    output: str
    quantize: str
    size_bytes: int
    ops_outside_xnnpack: dict
    xnnpack_partitions: int
    verification: Optional[Verification]


def convert_file(model, output, quantize="none", representative_data="fashion_mnist",
                 num_calibration=300, verify_data=None, num_verify=200, run_verification=True,
                 max_abs_diff=MAX_ABS_DIFF, min_agreement=MIN_AGREEMENT, int8_friendly=True,
                 io_type="float32", recalibrate_bn=False, data_dir=None, image_size=None, log=print):
    """Convert `model`, write `output`, and verify it on real images.

    Calibration images come from the *train* split of `representative_data`
    and verification images from the *test* split of `verify_data` (default:
    the same source), so the check does not reuse calibration samples.
    Raises VerificationError (after writing the file) when verification fails.
    """
    shape = input_shape_of(model, image_size)
    h, w, c = shape
    if h != w:
        raise LiteRTError(f"Square inputs only (got {h}x{w}).")
    from keras_skipblock.models import raw_input_range

    input_range = raw_input_range(model)  # [0, 255] for models with their scaling inside
    calibration = None
    if quantize == "int8" or recalibrate_bn:
        calibration, _ = load_images(representative_data, "train", h, c, num_calibration,
                                     data_dir=data_dir)
        calibration = to_input_range(calibration, input_range)
        log(f"calibration: {len(calibration)} real images from {representative_data} (train split)")
    images = None
    if run_verification:  # loaded before anything is written: bad data leaves no file behind
        source = verify_data or representative_data
        images, _ = load_images(source, "test", h, c, num_verify, data_dir=data_dir)
        images = to_input_range(images, input_range)
    if recalibrate_bn:
        n = recalibrate_batchnorm(model, calibration[-64:])
        log(f"recalibrated {n} BatchNormalization layers on real images (untrained model)")
    flatbuffer = convert(model, quantize, calibration, int8_friendly=int8_friendly,
                         io_type=io_type, input_shape=shape)
    summary, description = write_tflite(output, flatbuffer)
    outside = dict(summary["outside_xnnpack"])
    log(f"wrote ({quantize}) {description}")
    result = ConversionResult(output, quantize, len(flatbuffer), outside, summary["partitions"], None)
    if run_verification:
        result.verification = verify(model, flatbuffer, images, quantize, max_abs_diff,
                                     min_agreement, raise_on_failure=False)
        log(result.verification.describe())
        if not result.verification.passed:
            raise VerificationError(result.verification.describe())
    return result
