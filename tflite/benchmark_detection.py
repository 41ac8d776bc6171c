"""LiteRT latency of SSD detectors: SkipblockNet-S vs MobileNetV2 backbones
(the paper's Table 6 pair), float32 and int8, with `litert-benchmark` (one
thread, batch 1, post-processing with NMS included), interleaved rounds,
ratios paired within rounds.

  python tflite/benchmark_detection.py                          # fresh 300x300 SSDs, 20 VOC classes
  python tflite/benchmark_detection.py --checkpoints=sb=runs/a/best.keras,mnv2=runs/b/best.keras

Fresh detectors have their BN statistics set from real scene images (int8
ranges of a trained network); their weights do not change float32 latency.
Not a test.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", "skipblocknet_s,mobilenet_v2", "Backbones of fresh detectors.")
flags.DEFINE_enum("head", "ssd", ["ssd", "ssdlite"], "Detector head.")
flags.DEFINE_integer("image_size", 300, "Input side of fresh detectors.")
flags.DEFINE_integer("num_classes", 20, "Object classes of fresh detectors (background excluded).")
flags.DEFINE_list("checkpoints", None, "Instead: label=path.keras pairs of trained detectors.")
flags.DEFINE_list("modes", "none,int8", "none (float32) and/or int8.")
flags.DEFINE_string("reference", None, "Label the ratios are taken to (default: the last one).")
flags.DEFINE_string("output_dir", "benchmark_results/detection", "Where the .tflite files and results.md go.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
flags.DEFINE_integer("num_runs", 20, "Timed runs per detector per round.")
flags.DEFINE_integer("warmup_runs", 5, "Warm-up runs per detector per round.")
flags.DEFINE_integer("num_threads", 1, "CPU threads.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX folder (calibration scenes).")


def detector_specs():
    """{label: checkpoint path or (backbone, head, size, classes)}, every flag checked first."""
    from keras_skipblock import validation
    from keras_skipblock.detection.model import BACKBONES

    for name, low in (("rounds", 1), ("num_runs", 1), ("warmup_runs", 0), ("num_threads", 1)):
        validation.check_number(f"--{name}", FLAGS[name].value, low=low, integer=True)
    from keras_skipblock.litert import DETECTOR

    validation.check_choices("--modes", FLAGS.modes, DETECTOR.quantize_modes)
    validation.check_output_dir("--output_dir", FLAGS.output_dir)
    if FLAGS.data_dir:
        validation.check_dir("--data_dir", FLAGS.data_dir, "Fashion-MNIST IDX folder")
    if FLAGS.checkpoints:
        specs = {}
        for item in FLAGS.checkpoints:
            label, _, path = item.partition("=")
            if not label or not path or label in specs:
                raise validation.InputError(f"--checkpoints: {item!r} is not a new label=path.keras pair "
                                            "(e.g. sb=runs/a/best.keras,mnv2=runs/b/best.keras).")
            specs[label] = validation.check_keras_archive(f"--checkpoints {label}", path)
    else:
        validation.check_choices("--models", FLAGS.models, BACKBONES)
        validation.check_number("--image_size", FLAGS.image_size, low=32, integer=True)
        validation.check_number("--num_classes", FLAGS.num_classes, low=1, integer=True)
        specs = {f"{m}_{FLAGS.head}": (m, FLAGS.head, FLAGS.image_size, FLAGS.num_classes) for m in FLAGS.models}
    if FLAGS.reference and FLAGS.reference not in specs:
        raise validation.InputError(f"--reference {FLAGS.reference!r} is none of {', '.join(specs)}.")
    return specs


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from keras_skipblock.litert import benchmark as bench

    specs = detector_specs()
    reference = FLAGS.reference or list(specs)[-1]
    paths, info = bench.build_detector_files(specs, FLAGS.modes, os.path.join(FLAGS.output_dir, "models"),
                                             data_dir=FLAGS.data_dir)
    raw = bench.interleaved(paths, FLAGS.rounds, FLAGS.num_runs, FLAGS.warmup_runs, FLAGS.num_threads)
    table = bench.detection_benchmark_table(raw, info, reference)
    title = (f"LiteRT detector latency, {FLAGS.num_threads} thread, batch 1, NMS included, "
             f"{FLAGS.rounds} interleaved rounds x {FLAGS.num_runs} runs ({os.cpu_count()} cores)")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as f:
        f.write(f"{title}\n\n{table}")
    print(f"{title}\n\n{table}")
    return 0


if __name__ == "__main__":
    from keras_skipblock.validation import run_cli

    run_cli(main)
