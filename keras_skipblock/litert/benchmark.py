"""Latency of LiteRT models (classifiers and detectors) with the `litert-benchmark`
tool, interleaved.

Each round runs every model once (`--num_runs` timed runs after
`--warmup_runs`, one thread, batch 1) before the next round starts, so slow
phases of a shared machine hit all models alike. Per model the report keeps
the median over rounds of each round's median / p5 / p95, and ratios are
taken *within* a round (paired) and then their median over rounds.
"""

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from keras_skipblock.litert.errors import LiteRTError

REFERENCE = "mobilenet_v3_large"
TABLE2_MODELS = ("skipblocknet_xs", "skipblocknet_s", "skipblocknet_m", "skipblocknet_l",
                 "mobilenet_v3_small", "mobilenet_v3_large")
MODE_LABEL = {"none": "fp32", "float16": "fp16", "dynamic": "dynamic", "int8": "int8"}


def benchmark_command():
    """The `litert-benchmark` command (the console script, or its module)."""
    tool = shutil.which("litert-benchmark")
    if tool:
        return [tool]
    return [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model"]


def run_litert_benchmark(path, num_runs=50, warmup_runs=10, num_threads=1):
    """One `litert-benchmark` run; returns its "latency" dict (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        result_json = os.path.join(tmp, "result.json")
        command = benchmark_command() + [
            f"--model={path}", f"--num_threads={num_threads}", f"--num_runs={num_runs}",
            f"--warmup_runs={warmup_runs}", f"--result_json={result_json}"]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0 or not os.path.exists(result_json):
            tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            raise LiteRTError(f"litert-benchmark failed on {path}: {' | '.join(tail)}")
        with open(result_json) as f:
            return json.load(f)["latency"]


def interleaved(paths, rounds=3, num_runs=50, warmup_runs=10, num_threads=1, log=print):
    """{key: [latency dict per round]} for {key: path}, rounds interleaved."""
    results = {key: [] for key in paths}
    for r in range(rounds):
        for key, path in paths.items():
            latency = run_litert_benchmark(path, num_runs, warmup_runs, num_threads)
            results[key].append(latency)
            log(f"round {r + 1}/{rounds} {key}: median {latency['median_ms']:.2f} ms")
    return results


def summarize(rounds_by_key, info, reference=REFERENCE):
    """Rows for the report.

    rounds_by_key: {(model, mode): [latency per round]}; info: {model:
    {"params", "flops"}} and {(model, mode): {"size_bytes"}} under key
    ("size", model, mode).
    """
    def paired_ratio(a, b, stat="median_ms"):
        return statistics.median(x[stat] / y[stat] for x, y in zip(a, b))

    rows = []
    for (model, mode), rounds in rounds_by_key.items():
        row = {
            "model": model, "mode": MODE_LABEL.get(mode, mode),
            "median_ms": statistics.median(r["median_ms"] for r in rounds),
            "p5_ms": statistics.median(r["p5_ms"] for r in rounds),
            "p95_ms": statistics.median(r["p95_ms"] for r in rounds),
            "rounds": len(rounds),
            "params": info[model]["params"], "flops": info[model]["flops"],
            "size_mb": info[("size", model, mode)] / 1e6,
            "ratio_to_mnv3_large": None, "ratio_to_mnv3_large_p5": None,
            "int8_speedup": None, "int8_speedup_p5": None,
        }
        # Ratios of medians, and of p5s: on a shared machine the fast tail is
        # the least disturbed estimate of the model's own latency.
        if (reference, mode) in rounds_by_key:
            ref = rounds_by_key[(reference, mode)]
            row["ratio_to_mnv3_large"] = paired_ratio(rounds, ref)
            row["ratio_to_mnv3_large_p5"] = paired_ratio(rounds, ref, "p5_ms")
        if mode == "int8" and (model, "none") in rounds_by_key:
            fp32 = rounds_by_key[(model, "none")]
            row["int8_speedup"] = paired_ratio(fp32, rounds)
            row["int8_speedup_p5"] = paired_ratio(fp32, rounds, "p5_ms")
        rows.append(row)
    return rows


def files_table(raw):
    """Markdown table for {path: rounds}: median/p5/p95 and paired ratios
    (median and p5) to the first file."""
    keys = list(raw)
    first = raw[keys[0]]
    lines = ["| file | median ms | p5 ms | p95 ms | × first (median) | × first (p5) |",
             "|---|---|---|---|---|---|"]
    for key in keys:
        rounds = raw[key]
        ratio = statistics.median(a["median_ms"] / b["median_ms"] for a, b in zip(rounds, first))
        ratio_p5 = statistics.median(a["p5_ms"] / b["p5_ms"] for a, b in zip(rounds, first))
        lines.append(
            f"| {os.path.basename(key)} | {statistics.median(r['median_ms'] for r in rounds):.2f} | "
            f"{statistics.median(r['p5_ms'] for r in rounds):.2f} | "
            f"{statistics.median(r['p95_ms'] for r in rounds):.2f} | {ratio:.3f} | {ratio_p5:.3f} |")
    return "\n".join(lines) + "\n"


def _fmt(value, spec):
    return "–" if value is None else format(value, spec)


def markdown_table(rows, title=""):
    lines = [title, ""] if title else []
    lines += ["Ratios are paired within interleaved rounds (median over rounds); "
              "x MNV3-L compares with MobileNetV3-Large in the same mode.", ""] if rows else []
    lines += [
        "| model | mode | median ms | p5 ms | p95 ms | × MNV3-L (median) | × MNV3-L (p5) | "
        "int8 speed-up (median) | int8 speed-up (p5) | params (M) | MACs (M) | file (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['median_ms']:.2f} | {r['p5_ms']:.2f} | "
            f"{r['p95_ms']:.2f} | {_fmt(r['ratio_to_mnv3_large'], '.3f')} | "
            f"{_fmt(r['ratio_to_mnv3_large_p5'], '.3f')} | {_fmt(r['int8_speedup'], '.2f')} | "
            f"{_fmt(r['int8_speedup_p5'], '.2f')} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e6:.0f} | "
            f"{r['size_mb']:.2f} |")
    return "\n".join(lines) + "\n"


def write_reports(rows, raw, output_dir, title, meta):
    """results.md, results.csv, results.json and latency_vs_flops.png."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(markdown_table(rows, title))
    with open(os.path.join(output_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows,
                   "rounds": {f"{m}/{MODE_LABEL.get(q, q)}": v for (m, q), v in raw.items()}},
                  f, indent=2)
    plot_latency_vs_flops(rows, os.path.join(output_dir, "latency_vs_flops.png"), title)


def plot_latency_vs_flops(rows, path, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, marker in (("fp32", "o"), ("int8", "s"), ("fp16", "^"), ("dynamic", "v")):
        points = [r for r in rows if r["mode"] == mode]
        if not points:
            continue
        ax.errorbar([r["flops"] / 1e6 for r in points], [r["median_ms"] for r in points],
                    yerr=[[r["median_ms"] - r["p5_ms"] for r in points],
                          [r["p95_ms"] - r["median_ms"] for r in points]],
                    fmt=marker, capsize=3, label=mode)
        for r in points:
            ax.annotate(r["model"].replace("skipblocknet_", "SB-").replace("mobilenet_v3_", "MNV3-"),
                        (r["flops"] / 1e6, r["median_ms"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("latency, median (ms); bars p5–p95")
    import textwrap

    ax.set_yscale("log")  # p95 on a shared machine can be 10x the median
    ax.set_title(textwrap.fill(title or "LiteRT latency vs MACs", 90), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_files(builders, modes, output_dir, reuse=False, log=print):
    """`.tflite` files per quantization mode for models of either task, through `convert`.

    builders: {label: build}, where build() returns (Keras model, calibration
    images for int8 or None), the model ready to convert (fresh models with
    their BN statistics set from real images). Returns ({(label, mode): path},
    info) with info[label] = {"params", "flops", "image_size"} and
    info[("size", label, mode)] = file size in bytes.
    """
    import keras

    from keras_skipblock import count_flops
    from keras_skipblock.flops import count_params
    from keras_skipblock.litert.conversion import convert
    from keras_skipblock.litert.runtime import write_tflite

    os.makedirs(output_dir, exist_ok=True)
    paths, info = {}, {}
    for label, build in builders.items():
        keras.utils.set_random_seed(0)
        model, calibration = build()
        info[label] = {"params": count_params(model),
                       "flops": count_flops(model), "image_size": int(model.inputs[0].shape[1])}
        for mode in modes:
            path = os.path.join(output_dir, f"{label}_{MODE_LABEL.get(mode, mode)}.tflite")
            if reuse and os.path.exists(path):
                log(f"{label} {mode}: reusing {path}")
            else:
                flatbuffer = convert(model, mode, calibration if mode == "int8" else None)
                log(f"{label} {mode}: {write_tflite(path, flatbuffer)[1]}")
            paths[(label, mode)] = path
            info[("size", label, mode)] = os.path.getsize(path)
        keras.backend.clear_session()
    return paths, info


def build_models(names, modes, output_dir, image_size=224, num_classes=1000,
                 num_calibration=200, representative_data="fashion_mnist", data_dir=None,
                 reuse=False, log=print):
    """Fresh classifiers by name -> `.tflite` files per mode (`build_files`).

    The models are untrained (no ImageNet weights offline): their BN
    statistics are first set from real calibration images
    (`recalibrate_batchnorm`) so that int8 ranges, and with them XNNPACK's
    choices, are those of a trained network. Latency in float32 does not
    depend on the weights' values.
    """
    from keras_skipblock.litert.conversion import recalibrate_batchnorm
    from keras_skipblock.litert.data import load_images
    from keras_skipblock.models import get_model

    images, _ = load_images(representative_data, "train", image_size, 3,
                            num_calibration + 64, data_dir=data_dir)
    calibration, bn_images = images[:num_calibration], images[num_calibration:]

    def builder(name):
        def build():
            model = get_model(name, (image_size, image_size, 3), num_classes)
            recalibrate_batchnorm(model, bn_images)
            return model, calibration
        return build

    return build_files({name: builder(name) for name in names}, modes, output_dir, reuse, log)


def build_detector_files(specs, modes, output_dir, num_calibration=100, data_dir=None, log=print):
    """Detectors -> `.tflite` files per mode (`build_files`).

    specs: {label: a .keras checkpoint path, or (backbone, head, image_size,
    num_classes) for a fresh detector}. Fresh detectors get their BN
    statistics from real scene images first (`recalibrate_batchnorm`), so
    int8 ranges are those of a trained network; float32 latency does not
    depend on the weights.
    """
    from keras_skipblock.detection import build_detector
    from keras_skipblock.litert.conversion import load_keras_model, recalibrate_batchnorm
    from keras_skipblock.litert.data import scene_images
    from keras_skipblock.litert.tasks import is_detector

    def builder(spec):
        def build():
            if isinstance(spec, str):
                model = load_keras_model(spec)
                if not is_detector(model):
                    raise LiteRTError(f"{spec} is not a detector checkpoint.")
            else:
                backbone, head, size, num_classes = spec
                model = build_detector(backbone, num_classes, (size, size, 3), head)
                recalibrate_batchnorm(model, scene_images(64, size, "validation", data_dir=data_dir))
            size = int(model.inputs[0].shape[1])
            calibration = scene_images(num_calibration, size, "train", data_dir=data_dir) if "int8" in modes else None
            return model, calibration
        return build

    return build_files({label: builder(spec) for label, spec in specs.items()}, modes, output_dir, log=log)


def detection_benchmark_table(raw, info, reference):
    """Markdown table of interleaved litert-benchmark rounds {(label, mode): [latency]}:
    median / p5 latency, paired ratio to `reference` in the same mode, int8 speed-up."""
    def paired(a, b, stat="median_ms"):
        return statistics.median(x[stat] / y[stat] for x, y in zip(a, b))

    lines = ["| detector | mode | input | params (M) | MACs (B) | median ms | p5 ms | "
             f"× {reference} (median) | × {reference} (p5) | int8 speed-up (median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (label, mode), rounds in raw.items():
        ref, fp32 = raw.get((reference, mode)), raw.get((label, "none"))
        ratio = f"{paired(rounds, ref):.3f} | {paired(rounds, ref, 'p5_ms'):.3f}" if ref else "– | –"
        speedup = f"{paired(fp32, rounds):.2f}" if mode == "int8" and fp32 else "–"
        lines.append(
            f"| {label} | {MODE_LABEL.get(mode, mode)} | {info[label]['image_size']} | "
            f"{info[label]['params'] / 1e6:.2f} | {info[label]['flops'] / 1e9:.3f} | "
            f"{statistics.median(r['median_ms'] for r in rounds):.2f} | "
            f"{statistics.median(r['p5_ms'] for r in rounds):.2f} | {ratio} | {speedup} |")
    return "\n".join(lines) + "\n"
