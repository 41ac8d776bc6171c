"""The converter's post-training int8 (PTQ) next to the LiteRT Quantizer's recipes, on one model.

LiteRT's documentation points post-training quantization to the LiteRT Quantizer (`litert-quantizer`
on PyPI, formerly ai-edge-quantizer), which quantizes an fp32 `.tflite` with per-layer recipes and
offers int16 activations. This script measures, side by side on the same checkpoint, calibration
images and test split:

  fp32        the float `.tflite`, traced in the int8-friendly ops the converter's int8 uses
              (`litert.int8_friendly_ops`; mathematically equal to the plain fp32 file);
  converter   `litert.convert(model, "int8", calibration)`: the project's PTQ (the converter's
              calibration for a classifier; for a detector ranges averaged per image through
              `conversion._calibrated_copy`, post-processing float32);
  w8a8        the Quantizer's `static_wi8_ai8` recipe on that fp32 file, same calibration images,
              ranges as the Quantizer takes them by default (each image's min/max, moving average);
  w8a8 min-max  the same with the extremes over all calibration images, as the converter takes them;
  a16w8       its `static_wi8_ai16` (int16 activations, int8 weights);
  mixed       w8a8, with int16 activations only for the ops whose output tensor name matches
              --a16_regex (per-layer selection; omitted without the flag).

For a detector the Quantizer's recipes leave the post-processing scope, the ops writing the outputs and SPLIT in float
(`NO_QUANTIZE`), as the converter's path does. Reported per file: top-1 (classifier, Fashion-MNIST
test split) or VOC mAP@0.5 area / 11-point (detector, fashion_mnist_scenes test scenes), agreement
with fp32, size, the ops LiteRT runs outside XNNPACK, the number of XNNPACK partitions, and latency
with `litert-benchmark` in interleaved rounds (ratios to the converter's file, paired per round).
For a load-independent latency, run `benchmarks/litert_instructions.py` on the written files.

The Quantizer is not a dependency of the project; install it beside it (it pins ai-edge-litert):

    pip install litert-quantizer
    python benchmarks/litert_quantizer.py --checkpoint runs/fm/best.keras --out_dir runs/lq_fm
    python benchmarks/litert_quantizer.py --checkpoint runs/scenes_s/best.keras --out_dir runs/lq_scenes \
        --num_test 300
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

import numpy as np

# This file's name is the package's: drop its folder from the path so `import litert_quantizer` finds the package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a recipe's best.keras (classifier or detector)")
    parser.add_argument("--out_dir", default="runs/litert_quantizer")
    parser.add_argument("--num_calibration", type=int, default=300,
                        help="calibration images (training split), the same for every engine")
    parser.add_argument("--num_test", type=int, default=None,
                        help="test images (default: all 10,000 for a classifier, 300 scenes for a detector)")
    parser.add_argument("--a16_regex", default=None,
                        help="also a 'mixed' recipe: w8a8 with int16 activations where the op's output "
                             "tensor name matches this regex")
    parser.add_argument("--seed", type=int, default=0, help="which calibration images and test scenes")
    parser.add_argument("--rounds", type=int, default=3, help="litert-benchmark rounds (0: no latency)")
    parser.add_argument("--num_runs", type=int, default=50)
    return parser.parse_args(argv)


def quantizer_recipe(kind, float_regex=None, a16_regex=None):
    """A LiteRT Quantizer recipe: "w8a8", "a16w8" or "mixed" (w8a8, a16w8 where `a16_regex` matches);
    ops whose output tensor names match `float_regex` are left float."""
    from litert_quantizer import recipe_manager
    from litert_quantizer.algorithm_manager import AlgorithmName
    from litert_quantizer.qtyping import TFLOperationName

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED,
                              activation_num_bits=16 if kind == "a16w8" else 8, weight_num_bits=8)
    if kind == "mixed":
        manager.add_static_config(regex=a16_regex, operation_name=TFLOperationName.ALL_SUPPORTED,
                                  activation_num_bits=16, weight_num_bits=8)
    # Float input and output, as the converter's files (its recipes quantize them too by default);
    # later entries win, so these come after the ".*" entry.
    for io in (TFLOperationName.INPUT, TFLOperationName.OUTPUT):
        manager.add_quantization_config(regex=".*", operation_name=io, algorithm_key=AlgorithmName.NO_QUANTIZE)
    if float_regex:  # as the converter's path: SPLIT's fused tensor names miss the scope; the network has none
        manager.add_quantization_config(regex=".*", operation_name=TFLOperationName.SPLIT,
                                        algorithm_key=AlgorithmName.NO_QUANTIZE)
        manager.add_quantization_config(regex=float_regex, operation_name=TFLOperationName.ALL_SUPPORTED,
                                        algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def quantize_with_quantizer(float_flatbuffer, recipe, calibration_images, ranges="moving_average"):
    """(quantized flatbuffer bytes, seconds) from the Quantizer, calibrated on `calibration_images`.
    ranges: "moving_average", the Quantizer's default (each image's min/max, averaged with factor 0.95),
    or "min_max", the extremes over all images, as the converter's calibration takes them."""
    from litert_quantizer import calibrator, quantizer, recipe_manager
    from litert_quantizer.utils import qsv_utils
    from keras_skipblock.litert.runtime import open_interpreter

    start = time.time()
    runner = open_interpreter(float_flatbuffer).get_signature_runner("serving_default")
    input_name = next(iter(runner.get_input_details()))
    engine = quantizer.Quantizer(bytearray(float_flatbuffer), recipe)
    samples = {"serving_default": [{input_name: image[None]} for image in np.asarray(calibration_images, "float32")]}
    if ranges == "moving_average":
        calibration = engine.calibrate(samples, num_threads=1)
    else:
        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(recipe)
        calib = calibrator.Calibrator(bytes(float_flatbuffer), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate(samples, manager)
        calibration = calib.get_model_qsvs()
    result = engine.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model), time.time() - start


def classifier_scores(flatbuffers, x_test, y_test):
    from keras_skipblock import litert

    logits = {name: litert.LiteRTModel(fb).predict(x_test) for name, fb in flatbuffers.items()}
    reference = logits["fp32"].argmax(1)
    return {name: {"top1": float(np.mean(out.argmax(1) == y_test)),
                   "agreement_with_fp32": float(np.mean(out.argmax(1) == reference))}
            for name, out in logits.items()}


def detector_scores(flatbuffers, images, truth):
    from keras_skipblock import litert
    from keras_skipblock.detection.metrics import voc_map

    truths = list(zip(truth.boxes, truth.classes, truth.difficult))
    scores = {}
    for name, fb in flatbuffers.items():
        result = voc_map(litert.LiteRTDetector(fb).detect(images), truths, len(truth.class_names),
                         truth.class_names)
        scores[name] = {key: float(result[key]) for key in ("map_area", "map_11point")}
    return scores


def main(argv=None):
    args = parse_args(argv)
    try:
        import litert_quantizer  # noqa: F401
    except ImportError:
        raise SystemExit("This benchmark needs the LiteRT Quantizer, which is not a dependency of the project: "
                         "pip install litert-quantizer (it pins ai-edge-litert==2.3.0).") from None
    from keras_skipblock import litert
    from keras_skipblock.litert import benchmark

    model = litert.load_keras_model(checkpoint=args.checkpoint)
    spec = litert.spec_for(model)
    detector = litert.is_detector(model)
    h, w, c = litert.input_shape_of(model)
    start = time.time()
    if detector:
        calibration = litert.scene_images(args.num_calibration, h, "train", seed=args.seed)
        x_test, truth = litert.scenes(args.num_test or 300, h, "test", seed=args.seed)
        # The converter's int8 detector and the float file it traced in int8-friendly ops.
        t = time.time()
        converter_int8, fp32 = litert.convert_with_reference(model, "int8", calibration)
        converter_seconds = time.time() - t
    else:
        x_train, _ = litert.load_images("fashion_mnist", "train", h, channels=c)
        x_test, y_test = litert.load_images("fashion_mnist", "test", h, channels=c, limit=args.num_test)
        rng = np.random.default_rng(args.seed)  # seed 0: the images of benchmarks/qat_fashion_mnist.py
        calibration = x_train[rng.choice(len(x_train), args.num_calibration, replace=False)]
        with litert.int8_friendly_ops():
            fp32 = litert.convert(model, "none")
        t = time.time()
        converter_int8 = litert.convert(model, "int8", representative_images=calibration)
        converter_seconds = time.time() - t

    float_regex = None
    if detector:  # the post-processing and the ops writing the outputs, as the project's int8 path keeps them
        outputs = [d["name"] for d in litert.LiteRTDetector(fp32).interpreter.get_output_details()]
        float_regex = "|".join([re.escape(spec.postprocess_scope)] + [f"^{re.escape(n)};" for n in outputs])
    files = {"fp32": fp32, "converter int8": converter_int8}
    seconds = {"converter int8": converter_seconds}
    kinds = ["w8a8", "w8a8 min-max", "a16w8"] + (["mixed"] if args.a16_regex else [])
    for kind in kinds:
        recipe = quantizer_recipe(kind.split()[0], float_regex, args.a16_regex)
        ranges = "min_max" if kind.endswith("min-max") else "moving_average"
        files[f"quantizer {kind}"], seconds[f"quantizer {kind}"] = quantize_with_quantizer(
            fp32, recipe, calibration, ranges)

    os.makedirs(args.out_dir, exist_ok=True)
    paths = {}
    for name, fb in files.items():
        paths[name] = os.path.join(args.out_dir, re.sub(r"[^a-z0-9]+", "_", name) + ".tflite")
        with open(paths[name], "wb") as f:
            f.write(fb)

    scores = detector_scores(files, x_test, truth) if detector else classifier_scores(files, x_test, y_test)
    rows = {}
    for name, fb in files.items():
        ops = litert.op_summary(fb)
        rows[name] = dict(scores[name], size_kb=round(len(fb) / 1024, 1), xnnpack_partitions=ops["partitions"],
                          outside_xnnpack=dict(ops["outside_xnnpack"]), ops=dict(ops["ops"]),
                          quantize_seconds=round(seconds.get(name, 0.0), 1))
    if args.rounds:
        raw = benchmark.interleaved(paths, rounds=args.rounds, num_runs=args.num_runs)
        first = raw["converter int8"]
        for name, rounds in raw.items():
            rows[name]["median_ms"] = statistics.median(r["median_ms"] for r in rounds)
            rows[name]["latency_vs_converter"] = statistics.median(
                a["median_ms"] / b["median_ms"] for a, b in zip(rounds, first))

    metric = "map_area" if detector else "top1"
    print(f"\n{args.checkpoint}: {len(x_test)} test {'scenes' if detector else 'images'}, "
          f"{args.num_calibration} calibration images")
    print(f"| file | {'mAP area | mAP 11-pt' if detector else 'top-1 | agree fp32'} | vs fp32 | "
          "latency x converter | XNNPACK partitions | outside XNNPACK |")
    for name, row in rows.items():
        second = row["map_11point"] if detector else row["agreement_with_fp32"]
        print(f"| {name} | {row[metric]:.4f} | {second:.4f} | {row[metric] - rows['fp32'][metric]:+.4f} | "
              f"{row.get('latency_vs_converter', float('nan')):.2f} | {row['xnnpack_partitions']} | "
              f"{row['outside_xnnpack'] or '-'} |")
    result = {"checkpoint": args.checkpoint, "task": spec.name, "seed": args.seed, "num_test": len(x_test),
              "num_calibration": args.num_calibration, "a16_regex": args.a16_regex, "rows": rows,
              "seconds": round(time.time() - start)}
    with open(os.path.join(args.out_dir, "litert_quantizer.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
