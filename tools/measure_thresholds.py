"""Measure the trained results the test suite asserts on, over seeds and CPU
settings, so that every threshold keeps a measured margin.

    .venv/bin/python tools/measure_thresholds.py                    # everything, ~45 min
    .venv/bin/python tools/measure_thresholds.py --only=tflite --seeds=0-9 --threads=default

Training on CPU is not bit-reproducible across machines (oneDNN's kernels and
thread scheduling differ with the CPU); a test's fixed seed gives one draw of
that noise, so the seed sweep stands in for "another machine". Each oneDNN /
thread setting runs in its own process (TensorFlow reads them at start-up);
each trains exactly what the test trains, through the test modules' own
helpers. Prints one row per asserted value: the test's threshold, the worst
and best value seen, and the margin left. (Timing: 5 seeds x 4 settings took
about 11 min for tflite, 26 for bias_loss_model and 10 for distributed on 2
shared cores.)
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

flags.DEFINE_list("only", ["tflite", "bias_loss_model", "distributed", "skipblocknet", "detection_int8"],
                  "Which measurements.")
flags.DEFINE_string("seeds", "0-4", "Seeds: 'a-b' or a comma list.")
flags.DEFINE_list("onednn", ["0", "1"], "TF_ENABLE_ONEDNN_OPTS values.")
flags.DEFINE_list("threads", ["default", "1"], "Intra/inter-op thread counts ('default': TF's).")
flags.DEFINE_bool("child", False, "Internal: measure in this process and print JSON lines.")
FLAGS = flags.FLAGS


def _tflite(seed):
    import test_tflite as t
    from conftest import load_digits
    from keras_skipblock import litert
    from keras_skipblock.litert.verify import MAX_ABS_DIFF

    x_train, y_train, x_test, y_test = t.split_digits(*load_digits())
    model = t.train_tiny_model(x_train, y_train, seed)
    keras_top1 = litert.keras_accuracy(model, x_test, y_test).top1
    int8 = litert.convert(model, "int8", x_train[:200])
    verification = litert.verify(model, int8, x_test, "int8", raise_on_failure=False)
    float32 = litert.verify(model, litert.convert(model, "none"), x_test, "none",
                            raise_on_failure=False)
    return {
        "test_top1": (keras_top1, ">", t.MIN_TEST_TOP1),
        "int8_agreement": (verification.top1_agreement, ">=", t.MIN_INT8_AGREEMENT),
        "int8_top1_drop": (keras_top1 - litert.tflite_accuracy(int8, x_test, y_test).top1,
                           "<=", t.MAX_INT8_TOP1_DROP),
        "float32_max_abs_diff": (float32.max_abs_diff, "<=", MAX_ABS_DIFF),
    }


def _bias_loss_model(seed):
    import keras
    import numpy as np

    import keras_skipblock as ks
    import test_bias_loss_model as t
    from conftest import load_digits

    x, y = load_digits()
    keras.utils.set_random_seed(seed)
    model, history = t.fit_bias_loss_on_digits(x, y)
    losses = history.history["loss"]
    seen = ks.sample_variance(model.predict(x[:1400], verbose=0)["features"]).numpy().min()
    values = {
        "bias_loss_ratio": (losses[-1] / losses[0], "<", t.MAX_BIAS_LOSS_RATIO),
        "bias_val_top1": (history.history["val_accuracy"][-1], ">", t.MIN_BIAS_VAL_TOP1),
        "variance_min_over_seen": (float(model.bias_loss_variance_min) / seen, "<", 10.0),
    }
    for (loss, one_hot), name in zip(t.BASELINE_LOSSES, ["string", "instance", "focal"]):
        keras.utils.set_random_seed(seed)
        labels = np.eye(10, dtype="float32")[y] if one_hot else y
        model = t.baseline_classifier(loss)
        model.evaluate(x[:256], labels[:256], verbose=0)  # as the test does before fitting
        losses = t.fit_baseline_on_digits(model, x, labels).history["loss"]
        values[f"baseline_{name}_loss_ratio"] = (losses[-1] / losses[0], "<",
                                                 t.MAX_BASELINE_LOSS_RATIO)
    return values


def _distributed(seed):
    import test_distributed as t

    run = subprocess.run([sys.executable, t.SCRIPT, str(seed)], capture_output=True, text=True,
                         check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    ratio = out["fit_min"] / out["fit_expected_min_upper"]
    return {"fit_min_relative_error": (abs(ratio - 1), "<=", t.FIT_MIN_RTOL)}


def _skipblocknet(seed):
    import keras

    import test_skipblocknet as t
    from conftest import load_digits

    keras.utils.set_random_seed(seed)
    losses = t.short_bias_loss_fit(*load_digits())[1].history["loss"]
    return {"short_fit_loss_ratio": (losses[-1] / losses[0], "<", t.MAX_SHORT_FIT_LOSS_RATIO)}


def _detection_int8(seed):
    from keras_skipblock import litert

    import test_detection as t

    model = t.train_tiny_detector(seed)[0]
    int8 = litert.convert(model, "int8", litert.scene_images(64, t.SMALL, "train"))
    return {"int8_box_match": (t.int8_box_match(model, int8), ">=", t.MIN_INT8_BOX_MATCH)}


MEASUREMENTS = {"tflite": _tflite, "bias_loss_model": _bias_loss_model,
                "distributed": _distributed, "skipblocknet": _skipblocknet,
                "detection_int8": _detection_int8}


def _seeds(spec):
    if "-" in spec:
        first, last = spec.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in spec.split(",")]


def _child():
    sys.path.insert(0, TESTS)
    import tensorflow as tf

    threads = os.environ.get("TF_NUM_INTRAOP_THREADS")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    for name in FLAGS.only:
        for seed in _seeds(FLAGS.seeds):
            for value, (x, op, threshold) in MEASUREMENTS[name](seed).items():
                print(json.dumps(dict(measurement=name, value=value, seed=seed, x=float(x),
                                      op=op, threshold=threshold)), flush=True)


def _passes(x, op, threshold):
    return {">": x > threshold, ">=": x >= threshold, "<": x < threshold,
            "<=": x <= threshold}[op]


def main(_):
    if FLAGS.child:
        return _child()
    unknown = set(FLAGS.only) - set(MEASUREMENTS)
    if unknown:
        raise app.UsageError(f"unknown --only {sorted(unknown)}; choose from {list(MEASUREMENTS)}")
    try:
        _seeds(FLAGS.seeds)
    except ValueError:
        raise app.UsageError(f"--seeds={FLAGS.seeds}: give 'first-last' or a comma list, e.g. 0-4")
    rows = []
    for onednn in FLAGS.onednn:
        for threads in FLAGS.threads:
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS=onednn,
                       CUDA_VISIBLE_DEVICES="")
            if threads != "default":
                env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
            condition = f"oneDNN={onednn} threads={threads}"
            print(f"# {condition}", file=sys.stderr, flush=True)
            command = [sys.executable, os.path.abspath(__file__), "--child",
                       f"--only={','.join(FLAGS.only)}", f"--seeds={FLAGS.seeds}"]
            with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
                    command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True) as child:
                for line in child.stdout:  # each value as it comes: runs take minutes
                    if line.startswith("{"):
                        row = dict(json.loads(line), condition=condition)
                        rows.append(row)
                        print(f"  seed {row['seed']} {row['value']}: {row['x']:.4g}",
                              file=sys.stderr, flush=True)
                if child.wait():
                    errors.seek(0)
                    sys.exit(f"{condition} failed:\n{errors.read()[-3000:]}")
    print(f"\n{'value':<32} {'test':>10} {'worst':>10} {'best':>10} {'n':>4} {'margin':>10}"
          "  failures")
    for value in dict.fromkeys(r["value"] for r in rows):
        seen = [r for r in rows if r["value"] == value]
        op, threshold = seen[0]["op"], seen[0]["threshold"]
        xs = [r["x"] for r in seen]
        worst, best = (min(xs), max(xs)) if op.startswith(">") else (max(xs), min(xs))
        margin = worst - threshold if op.startswith(">") else threshold - worst
        failures = sum(not _passes(r["x"], op, threshold) for r in seen)
        print(f"{value:<32} {op + format(threshold, '.4g'):>10} {worst:>10.4g} {best:>10.4g} "
              f"{len(xs):>4} {margin:>10.3g}  {failures}")
    print(f"\nseeds {FLAGS.seeds} x oneDNN {'/'.join(FLAGS.onednn)} x threads "
          f"{'/'.join(FLAGS.threads)}")


if __name__ == "__main__":
    app.run(main)
