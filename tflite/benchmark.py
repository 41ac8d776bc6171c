"""Convert and benchmark SkipblockNet-XS/S/M/L against MobileNetV3-Small/-Large
(the paper's Table 2 comparison), float32 and int8, with `litert-benchmark`
(one thread, batch 1), all models interleaved in each round.

  python tflite/benchmark.py --output_dir=benchmark_results/tflite

Writes results.md, results.csv, results.json and latency_vs_flops.png to
--output_dir, the .tflite files under --output_dir/models. Ratios are to
MobileNetV3-Large in the same mode, paired within rounds. Not a test.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "benchmark_results/tflite", "Where the reports go.")
flags.DEFINE_list("models", "skipblocknet_xs,skipblocknet_s,skipblocknet_m,skipblocknet_l,"
                  "mobilenet_v3_small,mobilenet_v3_large", "Models (keras_skipblock.models names).")
flags.DEFINE_list("modes", "none,int8", "Quantization modes (none = float32).")
flags.DEFINE_integer("image_size", 224, "Input side.")
flags.DEFINE_integer("num_classes", 1000, "Classes.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
flags.DEFINE_integer("num_runs", 50, "Timed runs per model per round.")
flags.DEFINE_integer("warmup_runs", 10, "Warm-up runs per model per round.")
flags.DEFINE_integer("num_threads", 1, "CPU threads.")
flags.DEFINE_integer("num_calibration", 200, "Real calibration images for int8.")
flags.DEFINE_string("representative_data", "fashion_mnist", "Calibration images source.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX folder.")
flags.DEFINE_bool("reuse", False, "Reuse .tflite files already in --output_dir/models.")
flags.DEFINE_list("tflite", None, "Instead: benchmark these .tflite files only (interleaved), "
                  "with ratios to the first; nothing is converted or written.")


def check_flags():
    """Every flag and file, before anything is converted, run or written."""
    from keras_skipblock import validation

    for name, low in (("rounds", 1), ("num_runs", 1), ("warmup_runs", 0), ("num_threads", 1)):
        validation.check_number(f"--{name}", FLAGS[name].value, low=low, integer=True)
    if FLAGS.tflite:
        for path in FLAGS.tflite:
            validation.check_tflite_file("--tflite", path)
        return
    from keras_skipblock.litert import QUANTIZE_MODES
    from keras_skipblock.models import MODEL_NAMES

    validation.check_choices("--models", FLAGS.models, MODEL_NAMES)
    validation.check_choices("--modes", FLAGS.modes, QUANTIZE_MODES)
    validation.check_number("--image_size", FLAGS.image_size, low=32, integer=True,
                            fix="The models need inputs of at least 32x32.")
    validation.check_number("--num_classes", FLAGS.num_classes, low=1, integer=True)
    validation.check_number("--num_calibration", FLAGS.num_calibration, low=1, integer=True)
    validation.check_image_source("--representative_data", FLAGS.representative_data)
    if FLAGS.data_dir:
        validation.check_dir("--data_dir", FLAGS.data_dir, "Fashion-MNIST IDX folder")
    validation.check_output_dir("--output_dir", FLAGS.output_dir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import datetime
    import platform

    from keras_skipblock.litert import benchmark as bench

    check_flags()
    if FLAGS.tflite:
        raw = bench.interleaved({p: p for p in FLAGS.tflite}, FLAGS.rounds, FLAGS.num_runs,
                                FLAGS.warmup_runs, FLAGS.num_threads)
        print(bench.files_table(raw))
        return 0
    paths, info = bench.build_models(
        FLAGS.models, FLAGS.modes, os.path.join(FLAGS.output_dir, "models"), FLAGS.image_size,
        FLAGS.num_classes, FLAGS.num_calibration, FLAGS.representative_data, FLAGS.data_dir,
        FLAGS.reuse)
    raw = bench.interleaved(paths, FLAGS.rounds, FLAGS.num_runs, FLAGS.warmup_runs,
                            FLAGS.num_threads)
    rows = bench.summarize(raw, info)
    title = (f"LiteRT CPU latency, {FLAGS.num_threads} thread, batch 1, "
             f"{FLAGS.image_size}x{FLAGS.image_size}, {FLAGS.rounds} interleaved rounds x "
             f"{FLAGS.num_runs} runs ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores)")
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "flags": {k: getattr(FLAGS, k) for k in ("models", "modes", "image_size", "num_classes",
                                                     "rounds", "num_runs", "warmup_runs",
                                                     "num_threads", "num_calibration")},
            "tool": " ".join(bench.benchmark_command())}
    bench.write_reports(rows, raw, FLAGS.output_dir, title, meta)
    print(bench.markdown_table(rows, title))
    print(f"reports in {FLAGS.output_dir}/ (results.md/.csv/.json, latency_vs_flops.png)")
    return 0


if __name__ == "__main__":
    from keras_skipblock.validation import run_cli

    run_cli(main)
