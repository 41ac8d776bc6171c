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
import sys

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


def main(argv):
    del argv
    from keras_skipblock.litert import LiteRTError
    from keras_skipblock.litert import benchmark as bench
    from keras_skipblock.litert import detection as det

    if FLAGS.checkpoints:
        specs = dict(item.split("=", 1) for item in FLAGS.checkpoints)
    else:
        specs = {f"{m}_{FLAGS.head}": (m, FLAGS.head, FLAGS.image_size, FLAGS.num_classes) for m in FLAGS.models}
    reference = FLAGS.reference or list(specs)[-1]
    try:
        paths, info = det.build_detector_files(specs, FLAGS.modes, os.path.join(FLAGS.output_dir, "models"),
                                               data_dir=FLAGS.data_dir)
        raw = bench.interleaved(paths, FLAGS.rounds, FLAGS.num_runs, FLAGS.warmup_runs, FLAGS.num_threads)
    except LiteRTError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = det.detection_benchmark_table(raw, info, reference)
    title = (f"LiteRT detector latency, {FLAGS.num_threads} thread, batch 1, NMS included, "
             f"{FLAGS.rounds} interleaved rounds x {FLAGS.num_runs} runs ({os.cpu_count()} cores)")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as f:
        f.write(f"{title}\n\n{table}")
    print(f"{title}\n\n{table}")
    return 0


if __name__ == "__main__":
    app.run(main)
