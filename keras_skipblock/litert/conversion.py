"""Keras model -> LiteRT flatbuffer with one batch-1 image input, for either
task (`tasks.spec_for`): a classifier's logits, or a detector's boxes /
classes / scores / count with decoding and NMS inside.

The phone model needs logits only: `features` (the last conv map Bias Loss
reads) exists for training. The signature is fixed to batch 1 (`(1, H, W, C)`)
so that the runtime plans static shapes.

Detectors: `tf.image.combined_non_max_suppression` (what keras-cv's
MultiClassNonMaxSuppression calls) has no TFLite builtin and would need the
Flex delegate. One `NonMaxSuppressionV5` per class (padded to a static
size), then a `top_k` over all classes, converts to builtin ops only
(NON_MAX_SUPPRESSION_V5, TOPK_V2, GATHER, ...). The Keras side keeps
keras-cv's NMS; verification compares the two. In int8 the network is
quantized and the post-processing stays float32 (`_quantization_aware_network`;
post-training int8 converts a calibrated quantization-aware copy, `_calibrated_copy`).

Quantization modes:

- "none": float32 weights and activations.
- "float16": float16 weights, float32 compute (LiteRT dequantizes them).
- "dynamic": int8 weights, float activations (dynamic-range quantization).
- "int8": full-integer post-training quantization: int8 weights and
  activations, calibrated on real images; float32 input and output (the
  QUANTIZE/DEQUANTIZE at the two edges cost one pass over the input image
  and the logits) unless `io_type="int8"`.

Why int8 used to be slower than float32 (see docs/tflite.md): the converter
fuses `x * relu6(x + 3) / 6` into one HARD_SWISH op; XNNPACK, LiteRT's CPU
engine, runs HARD_SWISH in float only, so every int8 HARD_SWISH fell back to
LiteRT's own (scalar on x86) kernel and cut the graph into one XNNPACK
partition per activation. `int8_friendly_ops()` traces the same function in
a form the converter leaves as ADD(+RELU6)/MUL/MUL, all run by XNNPACK in
int8 (`_hard_silu_int8`). Likewise non-overlapping average pooling
(SkipblockNet's skip blocks) becomes the equivalent depthwise convolution
with constant 1/(kh*kw) weights, because XNNPACK has no int8 AVERAGE_POOL_2D.
The Keras model is not changed; float32 conversions keep the fused ops.
"""

import contextlib
import os

import numpy as np

from keras_skipblock import _compat
from keras_skipblock.litert.errors import LiteRTError

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
# Ops traced under this name scope stay float32 in an int8 detector (`_quantize_network_only`).
POSTPROCESS_SCOPE = "postprocess"


# -- loading ------------------------------------------------------------------


def load_keras_model(checkpoint=None, model_name=None, image_size=224, num_classes=1000,
                     channels=3, **model_kwargs):
    """A Keras model from a `.keras` checkpoint, the authors' `.pth` (their
    SkipblockNet-M with its input scaling inside: RGB in [0, 255]) or, by
    name, a fresh one.

    Raises LiteRTError (with the valid choices) for a missing or unreadable
    checkpoint, an unknown model name, or both/neither given.
    """
    if bool(checkpoint) == bool(model_name):
        raise LiteRTError("Give exactly one of --checkpoint=<file.keras> or --model=<name>.")
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise LiteRTError(f"Checkpoint not found: {os.path.abspath(checkpoint)}")
        from keras_skipblock.models.authors_weights import is_authors_checkpoint

        if is_authors_checkpoint(checkpoint):
            return _authors_model(checkpoint)
        if checkpoint.endswith(".keras"):  # Keras says "File not found" for a broken archive
            from keras_skipblock.validation import check_keras_archive

            check_keras_archive("checkpoint", checkpoint)
        import keras

        import keras_skipblock  # noqa: F401  registers BiasLossModel and friends
        import keras_skipblock.models  # noqa: F401  registers SkipblockNet layers
        import keras_skipblock.quantization  # noqa: F401  registers the QAT layers

        try:
            return keras.saving.load_model(checkpoint, compile=False)
        except Exception as error:  # noqa: BLE001  any load failure is the user's file
            raise LiteRTError(
                f"Cannot load Keras model from {checkpoint}: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}"
            ) from None
    from keras_skipblock.models import MODEL_NAMES, get_model

    if str(model_name).lower() not in MODEL_NAMES:
        raise LiteRTError(f"Unknown model {model_name!r}. Valid names: {', '.join(MODEL_NAMES)}.")
    return get_model(model_name, input_shape=(image_size, image_size, channels),
                     num_classes=num_classes, **model_kwargs)


def _authors_model(checkpoint):
    """The authors' PyTorch checkpoint as SkipblockNet-M taking 224x224 RGB in [0, 255]."""
    from keras_skipblock.models import CheckpointError, SkipblockNetM, load_authors_weights, read_state_dict

    try:
        state = read_state_dict(checkpoint)
        classes = state.get("classifier.3.weight")
        if classes is None:
            raise CheckpointError(f"{checkpoint!r} has no classifier.3.weight: not SkipblockNet's state_dict.")
        model = SkipblockNetM(num_classes=classes.shape[0], include_preprocessing=True, normalization="authors")
        load_authors_weights(model, state)
        return model
    except CheckpointError as error:
        raise LiteRTError(str(error)) from None


def input_shape_of(model, image_size=None):
    """(H, W, C) of the model's image input; image_size fills unknown H/W."""
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise LiteRTError(f"Expected one image input (H, W, C); {model.name} takes {shape}.")
    h, w, c = shape
    if h is None or w is None:
        if not image_size:
            raise LiteRTError(f"{model.name} accepts any image size: pass --image_size.")
        h = h or image_size
        w = w or image_size
    return int(h), int(w), int(c)


def logits_of(outputs):
    """The logits of a model's outputs: the "logits" entry of a dict (a
    BiasLossModel), or the single output of a plain classifier."""
    if isinstance(outputs, dict):
        if "logits" not in outputs:
            raise LiteRTError(f"Model outputs {sorted(outputs)} have no 'logits'.")
        return outputs["logits"]
    if isinstance(outputs, (list, tuple)):
        if len(outputs) != 1:
            raise LiteRTError("Model has several outputs and no 'logits' key.")
        return outputs[0]
    return outputs


def keras_logits(model, images, batch_size=64):
    """Logits of the Keras model (inference mode) as float32 numpy."""
    out = []
    for start in range(0, len(images), batch_size):
        out.append(np.asarray(logits_of(model(images[start:start + batch_size], training=False))))
    return np.concatenate(out).astype("float32")


# -- int8-friendly tracing ------------------------------------------------------


# float32(3) nudged up by one ulp (3.0000002): see _hard_silu_int8.
_THREE_PLUS_ULP = float(np.nextafter(np.float32(3.0), np.float32(4.0)))


def _hard_silu_int8(x):
    """x * relu6(x + 3) / 6 for int8 conversion, as x * (relu6(x + 3) / 6).

    The converter's HARD_SWISH fusion patterns match the constant 3.0
    exactly; with 3 + 1 ulp they do not, and the ops stay ADD(+RELU6), MUL,
    MUL, which XNNPACK runs in int8. The change (< 2.4e-7 on relu6's input)
    is ~5 orders of magnitude below int8's resolution. This order keeps the
    hard-sigmoid as an int8 tensor on [0, 1]; the order (x / 6) * relu6(x + 3)
    also avoids the fusion but was calibrated far too coarsely for x / 6
    (twice the relative logit error on a trained model).
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    gate = tf.nn.relu6(x + tf.constant(_THREE_PLUS_ULP, x.dtype)) * tf.constant(1.0 / 6.0, x.dtype)
    return x * gate


def _average_pool_as_depthwise(original):
    def average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
        import tensorflow as tf

        pool = (pool_size, pool_size) if isinstance(pool_size, int) else tuple(pool_size)
        stride = pool if strides is None else (
            (strides, strides) if isinstance(strides, int) else tuple(strides))
        x = tf.convert_to_tensor(inputs)
        channels_last = data_format in (None, "channels_last")
        if (x.shape.rank != 4 or not channels_last or str(padding).lower() != "valid"
                or stride != pool or x.shape[-1] is None):
            return original(inputs, pool_size, strides, padding, data_format)
        # A non-overlapping average is a depthwise conv with constant weights.
        kernel = tf.fill((pool[0], pool[1], x.shape[-1], 1),
                         tf.constant(1.0 / (pool[0] * pool[1]), x.dtype))
        return tf.nn.depthwise_conv2d(x, kernel, (1, stride[0], stride[1], 1), "VALID")

    return average_pool


@contextlib.contextmanager
def int8_friendly_ops():
    """While active, Keras' TensorFlow backend traces hard-swish and
    non-overlapping average pooling as mathematically equal ops that XNNPACK
    runs in int8 (see the module docstring). Affects tracing only."""
    tf_nn = _compat.keras_tensorflow_nn()
    if tf_nn is None:
        yield  # another backend: nothing to patch, convert as is
        return
    saved = tf_nn.hard_silu, tf_nn.average_pool
    tf_nn.hard_silu = _hard_silu_int8
    tf_nn.average_pool = _average_pool_as_depthwise(saved[1])
    try:
        yield
    finally:
        tf_nn.hard_silu, tf_nn.average_pool = saved


# -- conversion -----------------------------------------------------------------


def _frozen(model, input_shape, outputs_of):
    """(input spec, concrete function images -> outputs_of(model outputs) with the weights frozen
    to constants). Freezing first: handing the converter the model's variables instead keeps
    them as resource variables, which int8 calibration cannot read."""
    import tensorflow as tf

    spec = tf.TensorSpec((1,) + tuple(input_shape), tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def raw(images):
        return outputs_of(model(images, training=False))

    return spec, _compat.convert_variables_to_constants_v2(raw.get_concrete_function())


def serving_function(model, input_shape):
    """A classifier's concrete function, weights frozen:
    "serving_default": images (1, H, W, C) float32 -> {"logits": (1, classes)}."""
    import tensorflow as tf

    spec, frozen = _frozen(model, input_shape, logits_of)

    @tf.function(input_signature=[spec])
    def serve(images):  # re-wrapped so that the output keeps its name
        out = frozen(images)
        return {"logits": out[0] if isinstance(out, (list, tuple)) else out}

    return serve.get_concrete_function()


def detector_anchors(model):
    """The anchors of a detector (recomputed from its input and map sizes)."""
    from keras_skipblock.detection import feature_sizes, generate_anchors

    return generate_anchors(tuple(model.inputs[0].shape[1:3]), feature_sizes(model))


def _postprocess(deltas, logits, anchors, max_detections, iou_threshold, score_threshold):
    """(boxes (K, 4), classes (K,), scores (K,), count ()) for one image, builtin ops only."""
    import tensorflow as tf

    from keras_skipblock.detection.anchors import decode

    boxes = decode(deltas, tf.constant(anchors))  # (N, 4) rel_xyxy
    # Softmax spelt out, with a reciprocal: the converter fuses tf.nn.softmax and exp / sum into
    # SOFTMAX, which it gives a fixed int8 output range (steps of 1/256) wherever its input is
    # int8, as a quantization-aware graph's logits are. These ops have no range, so they stay
    # float32 there.
    exp = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
    scores = (exp * tf.math.reciprocal(tf.reduce_sum(exp, axis=-1, keepdims=True)))[:, 1:]  # no background
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


def detector_serving_function(model, input_shape, max_detections, iou_threshold, score_threshold):
    """A detector's concrete function, weights frozen: images (1, H, W, 3) ->
    {"boxes" (1, K, 4) rel_xyxy, "classes" (1, K), "scores" (1, K), "count" (1,)}, all
    float32, after per-class NMS; rows past `count` are zeros."""
    import tensorflow as tf

    spec, frozen = _frozen(model, input_shape, lambda outputs: (outputs["boxes"], outputs["logits"]))
    anchors = np.asarray(detector_anchors(model), "float32")

    @tf.function(input_signature=[spec])
    def serve(images):
        deltas, logits = frozen(images)
        with tf.name_scope(POSTPROCESS_SCOPE):
            boxes, classes, scores, count = _postprocess(deltas[0], logits[0], anchors, max_detections,
                                                         iou_threshold, score_threshold)
            return {"boxes": boxes[None], "classes": classes[None], "scores": scores[None],
                    "count": count[None]}

    return serve.get_concrete_function()


def requires_calibration(model):
    """Whether int8 conversion of `model` needs representative images to set its ranges:
    True for post-training quantization, False for a quantization-aware model, whose FakeQuant
    ops carry its ranges."""
    from keras_skipblock.quantization import is_quantized

    return not is_quantized(model)


def convert(model, quantize="none", representative_images=None, int8_friendly=True,
            io_type="float32", input_shape=None, spec=None):
    """Convert `model` (a classifier or a detector) to a LiteRT flatbuffer (bytes).

    Args:
        model: a BiasLossModel, a single-output classifier, or a detector
            (`keras_skipblock.detection.build_detector`); `tasks.spec_for` tells which.
        quantize: one of QUANTIZE_MODES (detectors: "none" or "int8").
        representative_images: float32 (n, H, W, C) real images in the model's
            input range; required for "int8" when `requires_calibration(model)`
            (a few hundred is plenty).
        int8_friendly: for "int8", trace hard-swish and average pooling in
            forms XNNPACK runs in int8 (`int8_friendly_ops`).
        io_type: "float32" (default) or "int8" input/output for an int8 classifier.
        input_shape: (H, W, C), default the model's.
        spec: the task's spec (default `tasks.spec_for(model)`), e.g. a DetectorSpec with
            other NMS settings.
    """
    return convert_with_reference(model, quantize, representative_images, int8_friendly, io_type,
                                  input_shape, spec)[0]


def convert_with_reference(model, quantize="none", representative_images=None, int8_friendly=True,
                           io_type="float32", input_shape=None, spec=None):
    """`convert`, returning (flatbuffer, float32 flatbuffer or None).

    A post-training int8 detector is converted to float32 too (the same network traced
    in int8-friendly but mathematically equal ops), and that file is returned, so that
    checking int8 against float32 needs no second conversion. Otherwise (a
    quantization-aware detector included) None.
    """
    import tensorflow as tf

    from keras_skipblock.litert.tasks import spec_for  # tasks builds on this module

    spec = spec_for(model, spec)
    if quantize not in QUANTIZE_MODES:
        raise LiteRTError(f"Unknown quantization {quantize!r}; use one of {QUANTIZE_MODES}.")
    if quantize not in spec.quantize_modes:
        raise LiteRTError(f"A {spec.name} converts with quantize {' or '.join(map(repr, spec.quantize_modes))} "
                          f"(what its verification covers); got {quantize!r}.")
    if io_type not in ("float32", "int8"):
        raise LiteRTError(f"io_type must be 'float32' or 'int8', got {io_type!r}.")
    if io_type == "int8" and (quantize != "int8" or spec.postprocess_scope):
        raise LiteRTError("io_type='int8' needs quantize='int8' and a classifier (a detector's "
                          "post-processed outputs stay float32).")
    input_shape = tuple(input_shape or input_shape_of(model))
    calibrate = quantize == "int8" and requires_calibration(model)
    if calibrate:
        if representative_images is None or len(representative_images) == 0:
            raise LiteRTError("int8 quantization needs real calibration images (--representative_data).")
        representative_images = np.asarray(representative_images, dtype="float32")
        if representative_images.shape[1:] != input_shape:
            raise LiteRTError(
                f"Calibration images have shape {representative_images.shape[1:]}, "
                f"the model takes {input_shape}."
            )

    from keras_skipblock.quantization.layers import tracing_for_conversion

    patch = int8_friendly_ops() if (quantize == "int8" and int8_friendly) else contextlib.nullcontext()
    with patch, tracing_for_conversion():  # QAT layers: their FakeQuant form, not their integer emulation
        converter = _converter(spec.serving_function(model, input_shape))
        if quantize == "int8" and spec.postprocess_scope:
            if calibrate:  # post-training: the same conversion, on a copy whose ranges are calibrated
                float_flatbuffer = converter.convert()
                calibrated = _calibrated_copy(model, representative_images)
                converter = _converter(spec.serving_function(calibrated, input_shape))
                return _quantization_aware_network(converter, spec.postprocess_scope), float_flatbuffer
            return _quantization_aware_network(converter, spec.postprocess_scope), None
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            if calibrate:  # (TF's QAT path refuses INT8-only ops without a dataset)
                converter.representative_dataset = _representative_dataset(representative_images)
                # Full integer: conversion fails rather than leave float ops behind.
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io_type == "int8":
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        return converter.convert(), None


def _representative_dataset(images):
    def representative_dataset():
        for i in range(len(images)):
            yield [images[i:i + 1]]

    return representative_dataset


def _converter(concrete):
    """A TFLiteConverter for `concrete` with builtin ops only (no Flex)."""
    import tensorflow as tf

    # A (variable-free) trackable object makes the converter write the
    # "serving_default" signature: images -> the spec's outputs.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def _calibrated_copy(detector, images):
    """The quantization-aware copy of `detector` (`quantization.quantize_model`, the trained
    weights unchanged) with every activation range the moving average of each calibration
    image's own minimum and maximum, frozen: what post-training int8 of a detector converts.

    Why not the converter's own calibration: it takes the extremes over all images, and an
    SSD head's rare extreme outputs then set steps 8-10x coarser than a typical image needs
    (box-delta steps of 0.36 instead of 0.045 on the scenes S + SSD). Measured on the scenes
    detectors of docs/quantization.md ("Post-training int8 of detectors"): S + SSD 0.2437 ->
    0.3414 mAP (fp32 0.3320), MobileNetV2 + SSD 0.0004 -> 0.2318 (fp32 0.2944). The copy also
    gives a detector's Concatenates one range with their inputs, and keeps the post-processing
    float32 without the converter's QuantizationDebugger denylist.
    """
    from keras_skipblock import quantization

    calibrated = quantization.quantize_model(detector)
    quantization.calibrate_ranges(calibrated, images, batch_size=1)
    quantization.freeze_ranges(calibrated)
    return calibrated


def _quantization_aware_network(converter, scope):
    """The int8 network with float32 post-processing of a quantization-aware
    detector (trained, or calibrated by `_calibrated_copy`), from one conversion
    without calibration images.

    The FakeQuant ops of the network carry every range; the post-processing ops
    (traced in `scope`) have none, so the converter leaves them float32 and
    dequantizes the network's two int8 outputs once, as TFLite's own SSD
    post-processing does. (The converter's calibration would quantize the
    post-processing too, box decoding under one scale: all-zero boxes, mAP 0; and
    its QuantizationDebugger denylist fails on a graph with FakeQuant ops.) Only the
    ops of fixed int8 output range would be quantized on their own (SOFTMAX), which
    is why `_postprocess` spells the softmax out. `_check_network_int8` then
    refuses a file with a float32 op inside the network.

    No float32 flatbuffer is converted on the way: for a trained QAT detector the mAP
    check converts its reference when it needs one, `convert(model, "none")`,
    which for a quantization-aware model is the same graph with each FakeQuant as a
    QUANTIZE/DEQUANTIZE pair, i.e. what the Keras QAT model computes, in float32.
    """
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()
    _check_network_int8(flatbuffer, scope)
    return flatbuffer


def _check_network_int8(flatbuffer, scope):
    """LiteRTError when an op of the network (one writing outside the post-processing
    `scope`, the detector's outputs aside) writes a float32 tensor: a float fallback inside
    the network."""
    from keras_skipblock.litert.runtime import open_interpreter

    interpreter = open_interpreter(flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    outputs = {detail["index"] for detail in interpreter.get_output_details()}  # named by the signature
    floats = [f"{op['op_name']} -> {tensors[i]['name']}" for op in _compat.interpreter_ops_details(interpreter)
              if op["op_name"] != "DELEGATE" for i in op["outputs"]
              if tensors[i]["dtype"] == np.float32 and scope not in tensors[i]["name"] and i not in outputs]
    if floats:
        raise LiteRTError(f"The int8 network has {len(floats)} float32 ops outside the post-processing "
                          f"(e.g. {floats[0]}): a layer its quantization-aware model does not quantize.")


def recalibrate_batchnorm(model, images, batch_size=64):
    """Set every BatchNormalization's moving mean/variance to the statistics
    of `images` (one forward pass in training mode with momentum 0).

    Only for *untrained* models that are benchmarked: with random weights and
    BN's initial statistics (0, 1) the activations shrink block after block
    (to ~1e-8 in MobileNetV3-Large), int8 scales degenerate, and XNNPACK
    rejects ops whose scale ratios fall out of range, which measures an
    artefact. Recalibrated BN gives activations of a trained network's
    magnitude. Never call this on a trained model.
    """
    import keras

    layers = [layer for layer in _compat.flatten_layers(model, include_self=True)
              if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(np.asarray(images[:batch_size], dtype="float32"), training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(layers)
