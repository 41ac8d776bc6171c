"""SSD detector -> LiteRT `.tflite` with the post-processing inside, its
verification against Keras on real images, and its runner.

The `.tflite` takes one float32 image (1, H, W, 3) in [-1, 1] and returns,
after per-class non-maximum suppression, at most `max_detections`:
"boxes" (1, K, 4) rel_xyxy (x_min, y_min, x_max, y_max as fractions of the
image), "classes" (1, K) and "scores" (1, K) float32 sorted by score, and
"count" (1,) float32, the number of valid rows (float32 like TFLite's own
detection post-processing outputs). Rows past `count` hold zeros.

NMS: `tf.image.combined_non_max_suppression` (what keras-cv's
MultiClassNonMaxSuppression calls) has no TFLite builtin and would need the
Flex delegate. One `NonMaxSuppressionV5` per class (padded to a static
size), then a `top_k` over all classes, converts to builtin ops only
(NON_MAX_SUPPRESSION_V5, TOPK_V2, GATHER, ...). The Keras side keeps keras-cv's
NMS; verification compares the two.

int8: the network is fully quantized (calibrated on real images); the
post-processing (box decoding, softmax, top-k, NMS) stays float32 (builtin
float kernels): quantized, it loses the boxes (see _quantize_network_only).
Every int8 detector is checked by its VOC mAP against the float32 `.tflite`
on real test scenes (`check_int8_map`).
"""

import dataclasses
import os

import numpy as np

from keras_skipblock import _compat
from keras_skipblock.litert.errors import LiteRTError, VerificationError

OUTPUTS = ("boxes", "classes", "scores", "count")
MAX_BOX_DIFF = 1e-3  # of the image size
VERIFY_SCORE_THRESHOLD = 0.3
# int8 may lose at most 0.03 VOC mAP (area) against the float32 `.tflite` on the same scenes.
# What int8 costs a network that quantizes well is 1-3 points (MobileNetV3 classifiers lose
# 1.3-2.6 top-1 points under int8; Model Garden's MobileNetV2 RetinaNet 1.6 mAP points with
# QAT); a broken conversion loses everything (0.52 -> 0.00 before post-processing stayed
# float). Both run on the same images, so sampling noise does not enter the difference.
MAX_INT8_MAP_DROP = 0.03
MIN_INT8_CHECK_SCENES = 200
POSTPROCESS_SCOPE = "postprocess"


def detector_anchors(model):
    """The anchors of a detector (recomputed from its input and map sizes)."""
    from keras_skipblock.detection import feature_sizes, generate_anchors

    return generate_anchors(tuple(model.inputs[0].shape[1:3]), feature_sizes(model))


def is_detector(model):
    names = {layer.name for layer in model.layers}
    return {"boxes", "logits", "features_0"} <= names


def _postprocess(deltas, logits, anchors, max_detections, iou_threshold, score_threshold):
    """(boxes (K, 4), classes (K,), scores (K,), count ()) for one image, builtin ops only."""
    import tensorflow as tf

    from keras_skipblock.detection.anchors import decode

    boxes = decode(deltas, tf.constant(anchors))  # (N, 4) rel_xyxy
    scores = tf.nn.softmax(logits, axis=-1)[:, 1:]  # background dropped
    yxyx = tf.gather(boxes, [1, 0, 3, 2], axis=1)  # NMS takes (y1, x1, y2, x2)
    all_scores, all_indices, all_classes = [], [], []
    for c in range(scores.shape[-1]):
        indices, kept_scores, _ = tf.raw_ops.NonMaxSuppressionV5(
            boxes=yxyx, scores=scores[:, c], max_output_size=max_detections,
            iou_threshold=iou_threshold, score_threshold=score_threshold, soft_nms_sigma=0.0,
            pad_to_max_output_size=True)
        all_scores.append(kept_scores)  # padding rows score 0
        all_indices.append(indices)
        all_classes.append(tf.fill([max_detections], float(c)))
    top_scores, top = tf.math.top_k(tf.concat(all_scores, 0), k=max_detections)
    valid = top_scores > 0.0
    top_boxes = tf.gather(boxes, tf.gather(tf.concat(all_indices, 0), top))
    top_classes = tf.gather(tf.concat(all_classes, 0), top)
    mask = tf.cast(valid, tf.float32)
    return (top_boxes * mask[:, None], top_classes * mask, top_scores * mask,
            tf.reduce_sum(mask))


def serving_function(model, anchors, max_detections=100, iou_threshold=0.45, score_threshold=0.01):
    """Frozen concrete function images (1, H, W, 3) -> {"boxes", "classes", "scores", "count"}."""
    import tensorflow as tf

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    spec = tf.TensorSpec((1,) + shape, tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def raw(images):
        outputs = model(images, training=False)
        return outputs["boxes"], outputs["logits"]

    frozen = _compat.convert_variables_to_constants_v2(raw.get_concrete_function())
    anchors = np.asarray(anchors, "float32")

    @tf.function(input_signature=[spec])
    def serve(images):
        deltas, logits = frozen(images)
        with tf.name_scope(POSTPROCESS_SCOPE):
            boxes, classes, scores, count = _postprocess(deltas[0], logits[0], anchors, max_detections,
                                                         iou_threshold, score_threshold)
            return {"boxes": boxes[None], "classes": classes[None], "scores": scores[None],
                    "count": count[None]}

    return serve.get_concrete_function()


def convert_detector(model, quantize="none", representative_images=None, max_detections=100,
                     iou_threshold=0.45, score_threshold=0.01):
    """A detector (`build_detector`) -> `.tflite` bytes; quantize "none" or "int8"."""
    import tensorflow as tf

    if quantize not in ("none", "int8"):
        raise LiteRTError(f"Detector conversion supports quantize 'none' or 'int8'; got {quantize!r}.")
    if not is_detector(model):
        raise LiteRTError(f"{model.name} is not a keras_skipblock detector (no boxes/logits outputs).")
    import contextlib

    from keras_skipblock.litert.conversion import int8_friendly_ops

    # int8: hard-swish and average pooling traced in forms XNNPACK runs in int8 (see conversion.py).
    with int8_friendly_ops() if quantize == "int8" else contextlib.nullcontext():
        concrete = serving_function(model, detector_anchors(model), max_detections, iou_threshold,
                                    score_threshold)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex
    if quantize == "none":
        return converter.convert()
    if representative_images is None or len(representative_images) == 0:
        raise LiteRTError("int8 detector conversion needs real calibration images.")
    return _quantize_network_only(converter, np.asarray(representative_images, "float32"))


def _quantize_network_only(converter, images):
    """int8 network, float32 post-processing, in one `.tflite`.

    Left to itself the converter quantizes every op that has an int8 kernel,
    post-processing included: box decoding of all levels under one per-tensor
    scale, softmax, top-k, the validity mask and the count. That is what gave
    int8 detectors all-zero boxes and one shared score (mAP 0). Quantization
    denylists (`QuantizationDebugOptions`, the converter's public way to keep
    chosen ops in float) keep everything in POSTPROCESS_SCOPE, the outputs,
    TOPK_V2 and SPLIT (whose fused tensor names the denylist misses; decoding
    alone quantized box sizes to steps of 1.8 image widths and collapsed every
    box to (0, 0, 0, 0)) in float32: the network's int8 outputs are
    dequantized once and decoded in float, as in TFLite's own SSD
    post-processing. The network uses neither op. (All levels' outputs still
    share one int8 scale per output, the concatenation's: box-delta steps of
    ~0.5 on the scenes SSD, which costs about 0.02 mAP.)
    """
    import warnings

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    float_model = Interpreter(model_content=converter.convert())
    outputs = {detail["name"] for detail in float_model.get_output_details()}
    keep_float = [t["name"] for t in float_model.get_tensor_details()
                  if POSTPROCESS_SCOPE in t["name"] or t["name"] in outputs]

    def representative_dataset():
        for i in range(len(images)):
            yield [images[i:i + 1]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=keep_float, denylisted_ops=["TOPK_V2", "SPLIT"])
    with warnings.catch_warnings():  # the debugger runs tf.lite.Interpreter, which warns it is deprecated
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset, debug_options=options)
        return debugger.get_nondebug_quantized_model()


class LiteRTDetector:
    """Runs a detector `.tflite` (path or bytes) one image at a time."""

    def __init__(self, model, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {
            "model_path": str(model)}
        try:
            self.interpreter = Interpreter(num_threads=num_threads, **kwargs)
        except (ValueError, RuntimeError) as error:
            raise LiteRTError(f"LiteRT cannot load the detector: {error}") from None
        self.runner = self.interpreter.get_signature_runner("serving_default")
        missing = set(OUTPUTS) - set(self.runner.get_output_details())
        if missing:
            raise LiteRTError(f"Not a detector .tflite: outputs {sorted(missing)} are missing.")
        self.input_name = next(iter(self.runner.get_input_details()))
        self.input_shape = tuple(int(d) for d in self.runner.get_input_details()[self.input_name]["shape"][1:])

    def detect(self, images):
        """Per image (boxes (K, 4), scores (K,), classes (K,) int32), like `detection.detect`."""
        out = []
        for image in np.asarray(images, "float32"):
            if image.shape != self.input_shape:
                raise LiteRTError(f"Image shape {image.shape}; the detector takes {self.input_shape}.")
            result = self.runner(**{self.input_name: image[None]})
            count = int(round(float(result["count"][0])))
            out.append((result["boxes"][0][:count], result["scores"][0][:count],
                        result["classes"][0][:count].astype("int32")))
        return out


@dataclasses.dataclass
class DetectionVerification:
    images: int
    detections: int
    unmatched: int
    max_box_diff: float
    max_score_diff: float
    passed: bool

    def describe(self):
        verdict = "PASSED" if self.passed else "FAILED"
        return (f"detector verification {verdict}: {self.images} images, {self.detections} Keras detections "
                f"(score >= {VERIFY_SCORE_THRESHOLD}), {self.unmatched} without a LiteRT twin, max box "
                f"difference {self.max_box_diff:.2e} of the image size (limit {MAX_BOX_DIFF:g}), max score "
                f"difference {self.max_score_diff:.2e}")


def compare_detections(keras_detections, litert_detections, score_threshold=VERIFY_SCORE_THRESHOLD,
                       max_box_diff=MAX_BOX_DIFF):
    """Each Keras detection with score >= score_threshold must have a LiteRT
    detection of the same class whose box differs by at most max_box_diff
    (every coordinate, as a fraction of the image size), and vice versa."""
    total = unmatched = 0
    worst_box = worst_score = 0.0
    for (kb, ks, kc), (lb, ls, lc) in zip(keras_detections, litert_detections):
        keep_k, keep_l = ks >= score_threshold, ls >= score_threshold
        kb, ks, kc = kb[keep_k], ks[keep_k], kc[keep_k]
        lb, ls, lc = lb[keep_l], ls[keep_l], lc[keep_l]
        total += len(kb)
        used = np.zeros(len(lb), bool)
        for box, score, label in zip(kb, ks, kc):
            candidates = np.nonzero((lc == label) & ~used)[0]
            if len(candidates) == 0:
                unmatched += 1
                continue
            diffs = np.abs(lb[candidates] - box).max(axis=1)
            best = candidates[int(np.argmin(diffs))]
            used[best] = True
            worst_box = max(worst_box, float(diffs.min()))
            worst_score = max(worst_score, float(abs(ls[best] - score)))
        unmatched += int((~used).sum())
    passed = unmatched == 0 and worst_box <= max_box_diff
    return DetectionVerification(len(keras_detections), total, unmatched, worst_box, worst_score, passed)


def verify_detector(model, flatbuffer, images, raise_on_failure=True):
    """Keras (keras-cv NMS) vs LiteRT detections on `images` (n, H, W, 3) in [-1, 1]."""
    from keras_skipblock.detection.postprocess import detect

    keras_detections = detect(model, np.asarray(images, "float32"), detector_anchors(model))
    litert_detections = LiteRTDetector(flatbuffer).detect(images)
    result = compare_detections(keras_detections, litert_detections)
    if raise_on_failure and not result.passed:
        raise VerificationError(result.describe())
    return result


def scenes(num_images, image_size, split="test", seed=0, data_dir=None):
    """fashion_mnist_scenes at `image_size`: (images (n, H, W, 3) in [-1, 1], DetectionExamples)."""
    import tensorflow as tf

    from keras_skipblock.detection.data import fashion_mnist_scenes

    examples = fashion_mnist_scenes(split, num_images, canvas_size=image_size, seed=seed, data_dir=data_dir)
    images = tf.image.resize(examples.images.astype("float32"), (image_size, image_size)).numpy()
    return images / 127.5 - 1.0, examples


def scene_images(num_images, image_size, split="test", seed=0, data_dir=None):
    """Real images for calibration/verification: fashion_mnist_scenes in [-1, 1]."""
    return scenes(num_images, image_size, split, seed, data_dir)[0]


@dataclasses.dataclass
class Int8MapCheck:
    images: int
    float32_map: dict  # {"map_area", "map_11point"}
    int8_map: dict
    max_drop: float
    passed: bool

    def describe(self):
        return (f"int8 check {'PASSED' if self.passed else 'FAILED'} on {self.images} real test scenes: "
                f"VOC mAP@0.5 int8 {self.int8_map['map_area']:.4f} vs float32 {self.float32_map['map_area']:.4f} "
                f"(11-point {self.int8_map['map_11point']:.4f} vs {self.float32_map['map_11point']:.4f}); "
                f"allowed drop {self.max_drop:g}")


def check_int8_map(float32_model, int8_model, images, truth, max_drop=None, raise_on_failure=True):
    """VOC mAP of an int8 detector `.tflite` next to its float32 `.tflite` on the same real
    images (n, H, W, 3) in [-1, 1] with ground truth `truth` (DetectionExamples). Fails when
    int8 loses more than `max_drop` (area mAP; default MAX_INT8_MAP_DROP)."""
    from keras_skipblock.detection.metrics import voc_map

    max_drop = MAX_INT8_MAP_DROP if max_drop is None else max_drop
    truths = list(zip(truth.boxes, truth.classes, truth.difficult))
    maps = []
    for flatbuffer in (float32_model, int8_model):
        result = voc_map(LiteRTDetector(flatbuffer).detect(images), truths, len(truth.class_names),
                         truth.class_names)
        maps.append({key: result[key] for key in ("map_area", "map_11point")})
    check = Int8MapCheck(len(images), maps[0], maps[1], max_drop,
                         maps[1]["map_area"] >= maps[0]["map_area"] - max_drop)
    if raise_on_failure and not check.passed:
        raise VerificationError(check.describe())
    return check


def convert_detector_file(model, output, quantize="none", num_calibration=100, num_verify=50,
                          run_verification=True, data_dir=None, log=print):
    """Convert, write, and (float32) verify a detector on real scene images.
    Returns (op summary line, DetectionVerification or None)."""
    from keras_skipblock.litert.runtime import write_tflite

    from keras_skipblock.data.fashion_mnist import CLASS_NAMES
    from keras_skipblock.detection.model import num_classes_of

    size = int(model.inputs[0].shape[1])
    if quantize == "int8" and num_classes_of(model) != len(CLASS_NAMES):
        # The int8 check needs ground truth for the detector's own classes.
        raise LiteRTError(
            f"int8 detectors are checked by their mAP on real fashion_mnist_scenes (10 classes); this "
            f"detector has {num_classes_of(model)}, so its int8 file could not be checked and was not "
            "written. Convert it in float32 (--quantize=none).")
    calibration = scene_images(num_calibration, size, "train", data_dir=data_dir) if quantize == "int8" else None
    flatbuffer = convert_detector(model, quantize, calibration)
    if quantize == "int8":
        # Checked before anything is written: every int8 detector, its mAP next to float32's.
        images, truth = scenes(max(num_verify, MIN_INT8_CHECK_SCENES), size, "test", data_dir=data_dir)
        check = check_int8_map(convert_detector(model, "none"), flatbuffer, images, truth,
                               raise_on_failure=False)
        log(check.describe())
        if not check.passed:
            raise VerificationError(check.describe() + "; nothing written.")
        _, description = write_tflite(output, flatbuffer)
        log(f"wrote ({quantize}) {description}")
        return description, check
    _, description = write_tflite(output, flatbuffer)
    log(f"wrote ({quantize}) {description}")
    if not run_verification:
        return description, None
    result = verify_detector(model, flatbuffer, scene_images(num_verify, size, "test", data_dir=data_dir),
                             raise_on_failure=False)
    log(result.describe())
    if not result.passed:
        raise VerificationError(result.describe())
    return description, result


# -- benchmark ---------------------------------------------------------------------------------


def build_detector_files(specs, modes, output_dir, num_calibration=100, data_dir=None, log=print):
    """`.tflite` files for detectors, per quantization mode.

    specs: {label: a .keras checkpoint path, or (backbone, head, image_size,
    num_classes) for a fresh detector}. Fresh detectors get their BN
    statistics from real scene images first (`recalibrate_batchnorm`), so
    int8 ranges are those of a trained network; float32 latency does not
    depend on the weights. Returns ({(label, mode): path}, {label: {"params", "macs", "image_size"}}).
    """
    import keras

    from keras_skipblock import count_flops
    from keras_skipblock.detection import build_detector
    from keras_skipblock.litert.conversion import load_keras_model, recalibrate_batchnorm
    from keras_skipblock.litert.runtime import write_tflite

    os.makedirs(output_dir, exist_ok=True)
    paths, info = {}, {}
    for label, spec in specs.items():
        keras.utils.set_random_seed(0)
        if isinstance(spec, str):
            model = load_keras_model(spec)
            if not is_detector(model):
                raise LiteRTError(f"{spec} is not a detector checkpoint.")
        else:
            backbone, head, size, num_classes = spec
            model = build_detector(backbone, num_classes, (size, size, 3), head)
            recalibrate_batchnorm(model, scene_images(64, size, "validation", data_dir=data_dir))
        size = int(model.inputs[0].shape[1])
        info[label] = {"params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
                       "macs": count_flops(model), "image_size": size}
        calibration = scene_images(num_calibration, size, "train", data_dir=data_dir) if "int8" in modes else None
        for mode in modes:
            path = os.path.join(output_dir, f"{label}_{'fp32' if mode == 'none' else mode}.tflite")
            flatbuffer = convert_detector(model, mode, calibration if mode == "int8" else None)
            log(f"{label} {mode}: {write_tflite(path, flatbuffer)[1]}")
            paths[(label, mode)] = path
        keras.backend.clear_session()
    return paths, info


def detection_benchmark_table(raw, info, reference):
    """Markdown table of interleaved litert-benchmark rounds {(label, mode): [latency]}:
    median / p5 latency, paired ratio to `reference` in the same mode, int8 speed-up."""
    import statistics

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
            f"| {label} | {'fp32' if mode == 'none' else mode} | {info[label]['image_size']} | "
            f"{info[label]['params'] / 1e6:.2f} | {info[label]['macs'] / 1e9:.3f} | "
            f"{statistics.median(r['median_ms'] for r in rounds):.2f} | "
            f"{statistics.median(r['p5_ms'] for r in rounds):.2f} | {ratio} | {speedup} |")
    return "\n".join(lines) + "\n"
