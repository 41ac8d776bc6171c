"""Convert a Keras classifier (logits only) or SSD detector (boxes, classes, scores,
count; NMS inside) to a batch-1 LiteRT `.tflite` and verify it.

  python tflite/convert.py --checkpoint=runs/fmnist/best.keras --output=model.tflite \
      --quantize=int8 --representative_data=fashion_mnist
  python tflite/convert.py --model=skipblocknet_m --image_size=224 --num_classes=1000 \
      --output=skipblocknet_m.tflite
  python tflite/convert.py --checkpoint=runs/fmnist/best_qat.keras --output=qat.tflite \
      --quantize=int8          # from a recipe's --qat_epochs: no calibration data
  python tflite/convert.py --checkpoint=skipblocknet-m.pth --output=m.tflite   # the authors' weights

A `.pth` (the authors' ImageNet SkipblockNet-M) becomes a model that takes
224x224 RGB in [0, 255] with their normalisation inside; `.keras` models take
what they were trained on ([-1, 1] unless they hold an InputScaling layer).
Calibration and verification images are fed in the model's own range.

Verification (on by default) runs the Keras model and the `.tflite` on real
test images and exits non-zero when float32 differs by more than
--max_abs_diff or a quantized model agrees on fewer than --min_agreement of
the top-1 labels. A quantization-aware model (best_qat.keras from a recipe's
--qat_epochs) converts to int8 with no calibration images and is checked by
tighter bounds: top-1 agreement >= 0.995 and logits within 2 output steps at
the 99th percentile (docs/quantization.md). A detector (from recipes/voc.py) is calibrated and verified
on real fashion_mnist_scenes: float32 detection by detection, int8 by its VOC
mAP next to float32's, before writing (a file that loses more than 0.03 is
not written); see docs/detection.md. A quantization-aware detector (best_qat.keras from
recipes/voc.py --qat_epochs) needs no calibration scenes; its int8 file is checked the same way
against its own float32 file (docs/quantization.md, "Detectors"). Missing checkpoints, unknown models and
bad data sources are reported in one line with exit status 2.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "A .keras checkpoint, or the authors' .pth, to convert.")
flags.DEFINE_string("model", None, "Or: a model name (keras_skipblock.models.MODEL_NAMES), built fresh.")
flags.DEFINE_integer("image_size", 224, "Input side for --model (a checkpoint keeps its own).")
flags.DEFINE_integer("num_classes", 1000, "Classes for --model.")
flags.DEFINE_integer("channels", 3, "Input channels for --model.")
flags.DEFINE_string("output", None, "Where to write the .tflite.")
flags.DEFINE_enum("quantize", "none", ["none", "float16", "dynamic", "int8"], "Quantization.")
flags.DEFINE_string("representative_data", "fashion_mnist",
                    "Real calibration images: fashion_mnist, digits or a folder of class sub-folders.")
flags.DEFINE_integer("num_calibration", 300, "Calibration images for int8.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX folder (default: the usual places).")
flags.DEFINE_bool("verify", True, "Compare the .tflite with the Keras model on real images.")
flags.DEFINE_string("verify_data", None, "Verification images (test split); default --representative_data.")
flags.DEFINE_integer("num_verify", 200, "Verification images.")
flags.DEFINE_float("max_abs_diff", 1e-4, "float32: largest allowed |Δlogit|, times "
                   "max(1, max |logit|) (float32 rounding grows with the logits).")
flags.DEFINE_float("min_agreement", None, "Quantized: smallest allowed top-1 agreement with Keras "
                   "(default 0.9; 0.995 for the int8 file of a quantization-aware model, best_qat.keras, whose "
                   "logits must also stay within 2 output steps at the 99th percentile).")
flags.DEFINE_bool("int8_friendly", True,
                  "int8: trace hard-swish / average pooling in forms XNNPACK runs in int8.")
flags.DEFINE_enum("io_type", "float32", ["float32", "int8"], "int8: input/output type of the .tflite.")
flags.DEFINE_bool("recalibrate_bn", False,
                  "Set BN statistics from calibration images first (untrained --model only: "
                  "gives realistic int8 ranges for latency work; never on a trained model).")
flags.DEFINE_bool("verbose", False, "Also show TensorFlow's, the converter's and LiteRT's INFO logs.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # before TensorFlow is imported
    from keras_skipblock.logging_utils import configure_logging, native_info_filtered

    configure_logging(FLAGS.verbose)
    check_flags()
    with native_info_filtered():  # the converter's and LiteRT's INFO lines
        return convert()


def check_flags():
    """Every flag and file, before a model is loaded or a file written."""
    from keras_skipblock import validation

    validation.check_output_file("--output", FLAGS.output, ".tflite")
    if FLAGS.checkpoint and FLAGS.model:
        raise validation.InputError("Give exactly one of --checkpoint=<file.keras> or --model=<name>.")
    if FLAGS.checkpoint:
        validation.check_model_file("--checkpoint", FLAGS.checkpoint, (".keras", ".pth", ".pt"))
        if FLAGS.recalibrate_bn:
            raise validation.InputError("--recalibrate_bn is for fresh (--model) models only.")
    validation.check_number("--image_size", FLAGS.image_size, low=32, integer=True,
                            fix="The models need inputs of at least 32x32.")
    validation.check_number("--num_classes", FLAGS.num_classes, low=1, integer=True)
    if FLAGS.channels not in (1, 3):
        raise validation.InputError(f"--channels must be 1 or 3; got {FLAGS.channels}.")
    validation.check_number("--num_calibration", FLAGS.num_calibration, low=1, integer=True)
    validation.check_number("--num_verify", FLAGS.num_verify, low=1, integer=True)
    validation.check_number("--max_abs_diff", FLAGS.max_abs_diff, low=0, low_open=True)
    validation.check_number("--min_agreement", FLAGS.min_agreement, low=0, high=1, allow_none=True)
    for flag in ("representative_data", "verify_data"):
        if FLAGS[flag].value:
            validation.check_image_source(f"--{flag}", FLAGS[flag].value)
    if FLAGS.data_dir:
        validation.check_dir("--data_dir", FLAGS.data_dir, "Fashion-MNIST IDX folder")


def convert():
    from keras_skipblock.litert import VerificationError
    from keras_skipblock.litert.conversion import load_keras_model
    from keras_skipblock.litert.pipeline import convert_file

    try:
        model = load_keras_model(FLAGS.checkpoint, FLAGS.model, FLAGS.image_size,
                                 FLAGS.num_classes, FLAGS.channels)
        # A classifier, or an SSD from recipes/voc.py (NMS inside, checked on real scenes).
        convert_file(
            model, FLAGS.output, FLAGS.quantize, FLAGS.representative_data, FLAGS.num_calibration,
            FLAGS.verify_data, FLAGS.num_verify, FLAGS.verify, FLAGS.max_abs_diff,
            FLAGS.min_agreement, FLAGS.int8_friendly, FLAGS.io_type, FLAGS.recalibrate_bn,
            FLAGS.data_dir, FLAGS.image_size,
        )
    except VerificationError as error:
        print(f"error: verification failed: {error}", file=sys.stderr)
        if FLAGS.model and FLAGS.quantize != "none":
            print("note: a fresh (untrained) --model has near-tied logits, so top-1 agreement "
                  "means nothing for it; convert a trained --checkpoint, or pass --noverify.",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from keras_skipblock.validation import run_cli

    run_cli(main)
