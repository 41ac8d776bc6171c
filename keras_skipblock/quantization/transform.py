"""quantize_model: a Keras 3 functional model -> the same network with int8
simulated where LiteRT's int8 kernels quantize (see layers.py).

The graph is rebuilt node by node (a node is one call of a layer or op):

- Conv2D / DepthwiseConv2D / Dense, with the BatchNormalization that alone
  reads its output folded in and a ReLU/ReLU6 that alone reads the result
  fused, become one `QuantConv` (the converter folds and fuses them the same
  way, so no int8 tensor lies between them);
- hard-swish and hard-sigmoid activations become `QuantHardActivation`;
- non-overlapping average pooling and SkipblockNet's adaptive pooling become
  `QuantAveragePooling`; Rescaling / InputScaling `QuantRescaling`;
- a keras Add of two tensors becomes one `QuantAdd` (the addition and its int8
  output, so that inference can emulate XNNPACK's integer ADD), unless a ReLU
  alone reads it;
- other ops that write a new int8 tensor (Add, Subtract, Multiply, Concatenate,
  global average pooling, a standalone ReLU, ops with a scalar such as
  MobileNetV3's `x + 3`) are copied and followed by an `ActivationQuantizer`,
  except when a ReLU alone reads them: the ReLU is fused into them in the
  `.tflite`, so the quantizer goes after the ReLU;
- a Concatenate shares one range with its inputs: a conv or requantizing op
  whose output reaches the Concatenate alone (through same-scale ops such as
  a Reshape: an SSD's head levels) writes no range of its own, and the
  Concatenate's quantizer fixes the scale of all of them. The converter
  gives CONCATENATION's inputs its output scale then, so no requantize op
  lies between them (each would leave XNNPACK); quantizing the pieces
  separately and then the whole would round twice;
- ops that keep their input's scale (padding, reshapes, max pooling,
  dropout, identity) are copied as they are;
- the image input is quantized first (the `.tflite`'s QUANTIZE).

Anything else raises `QuantizationError` naming the layer.
"""

import keras

from keras_skipblock import _compat
from keras_skipblock.quantization.layers import (
    INPUT_MARGIN,
    QUANT_LAYERS,
    ActivationQuantizer,
    QuantAdd,
    QuantAveragePooling,
    QuantConv,
    QuantHardActivation,
    QuantLayer,
    QuantRescaling,
)


class QuantizationError(ValueError):
    """A model or layer quantize_model cannot simulate in int8."""


_SAME_SCALE_LAYERS = (
    keras.layers.ZeroPadding2D, keras.layers.Identity, keras.layers.Dropout, keras.layers.SpatialDropout2D,
    keras.layers.Flatten, keras.layers.Reshape, keras.layers.MaxPooling2D, keras.layers.GlobalMaxPooling2D,
    keras.layers.Cropping2D, keras.layers.UpSampling2D, keras.layers.Permute,
)
_REQUANTIZING_LAYERS = (
    keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Concatenate,
    keras.layers.Average, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling1D,
)
# keras.ops called on Keras tensors (e.g. MobileNetV3's `x + 3.0`, `* (1 / 6)`), by class name.
_REQUANTIZING_OPS = ("Add", "Subtract", "Multiply")
_SAME_SCALE_OPS = ("Reshape", "Transpose", "ExpandDims", "Squeeze")
_RELU_FUSING = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense, keras.layers.Add,
                keras.layers.Subtract, keras.layers.Multiply)


def _activation_name(activation):
    try:
        name = keras.activations.serialize(activation)
    except Exception:  # noqa: BLE001  a custom callable
        name = getattr(activation, "__name__", repr(activation))
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return {"hard_silu": "hard_swish", "silu": "swish"}.get(name, name)


def _relu_kind(op):
    """'relu' / 'relu6' when `op` is a plain ReLU (fusable into the op before it), else None."""
    if isinstance(op, keras.layers.ReLU):
        if float(op.negative_slope) != 0.0 or float(op.threshold) != 0.0:
            return None
        if op.max_value is None:
            return "relu"
        return "relu6" if float(op.max_value) == 6.0 else None
    if isinstance(op, keras.layers.Activation):
        name = _activation_name(op.activation)
        return name if name in ("relu", "relu6") else None
    return None


def _is_layer_op(op, names):
    return not isinstance(op, keras.layers.Layer) and type(op).__name__ in names


def keeps_scale(op):
    """Whether `op` writes its input's int8 scale (padding, reshapes, max pooling, ...)."""
    return isinstance(op, _SAME_SCALE_LAYERS) or _is_layer_op(op, _SAME_SCALE_OPS)


def _clone(op):
    """A fresh copy of a stateless layer or op (same config)."""
    return op.__class__.from_config(op.get_config())


def _fail(op, why):
    raise QuantizationError(
        f"quantize_model: cannot simulate int8 for layer {op.name!r} ({type(op).__name__}): {why}")


class _Graph:
    def __init__(self, model):
        by_depth = _compat.nodes_by_depth(model)
        self.nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
        self.consumers = {}
        for node in self.nodes:
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node)
        self.output_ids = {id(t) for t in model.outputs}
        self.concatenated = self._concatenated_inputs()

    def sole_consumer(self, tensor):
        """The node that alone reads `tensor` (None when several do, or it is a model output)."""
        readers = self.consumers.get(id(tensor), [])
        if len(readers) != 1 or id(tensor) in self.output_ids:
            return None
        return readers[0]

    def _concatenated_inputs(self):
        """ids of the tensors whose int8 scale a Concatenate sets: each input of a
        Concatenate, followed back through same-scale ops whose output only the next one
        reads, is quantized by the Concatenate's range, not its own."""
        producer = {id(t): node for node in self.nodes for t in node.outputs}
        shared = set()
        for node in self.nodes:
            if not isinstance(node.operation, keras.layers.Concatenate):
                continue
            for tensor in node.input_tensors:
                while self.sole_consumer(tensor) is not None:
                    shared.add(id(tensor))
                    source = producer.get(id(tensor))
                    op = None if source is None else source.operation
                    if not keeps_scale(op) or len(source.input_tensors) != 1:
                        break
                    tensor = source.input_tensors[0]
        return shared


def quantize_model(model, momentum=0.99, freeze_after=None):
    """The int8-simulating (quantization-aware) copy of a functional Keras model.

    Args:
        model: a built functional model (a `BiasLossModel`, a model from
            `with_features`, a keras.applications network, a Sequential with
            an input shape). Trained weights are copied.
        momentum: moving-average momentum of the activation ranges.
        freeze_after: the ranges stop moving after this many training steps
            (None: until `freeze_ranges(model)`).

    Returns a new, uncompiled model of the same class (a BiasLossModel stays
    one, its running minimum copied), whose layers simulate LiteRT int8;
    `litert.convert(qat_model, quantize="int8")` needs no calibration images.
    Before any training step every activation range is [-6, 6]: train (or
    `calibrate_ranges`) before converting.
    """
    if is_quantized(model):
        raise QuantizationError(f"quantize_model: {model.name} is already quantized.")
    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise QuantizationError("quantize_model: build the Sequential model with an input shape first.")
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "inputs", None) or not hasattr(model, "output"):
        raise QuantizationError(f"quantize_model: {model.name} is not a functional model.")
    options = {"momentum": momentum, "freeze_after": freeze_after}
    graph = _Graph(model)
    new = {}  # id(original tensor) -> tensor of the new graph
    absorbed = set()  # ids of nodes folded or fused into an earlier one
    new_inputs = []
    for tensor in model.inputs:
        name = tensor.name
        fresh = keras.Input(shape=tensor.shape[1:], batch_size=tensor.shape[0], dtype=tensor.dtype, name=name)
        new_inputs.append(fresh)
        new[id(tensor)] = ActivationQuantizer(margin=INPUT_MARGIN, name=f"{name}_quant", **options)(fresh)

    for node in graph.nodes:
        op = node.operation
        if isinstance(op, keras.layers.InputLayer) or id(node) in absorbed:
            continue
        if isinstance(op, keras.Model):
            _fail(op, "nested models are not supported; build the model flat (one functional graph).")
        missing = [t for t in node.input_tensors if id(t) not in new]
        if missing:
            _fail(op, "it reads a tensor from outside the model's graph.")
        args = keras.tree.map_structure(_lookup(new), node.arguments.args)
        kwargs = keras.tree.map_structure(_lookup(new), node.arguments.kwargs)
        outputs = node.outputs
        result = _rebuild(op, node, args, kwargs, graph, absorbed, options)
        if isinstance(result, tuple):  # (original tensor it stands for, new tensor)
            original, result = result
            new[id(original)] = result
        else:
            if len(outputs) != 1:
                _fail(op, "layers with several outputs are not supported.")
            new[id(outputs[0])] = result

    outputs = keras.tree.map_structure(lambda t: new[id(t)], model.output)
    inputs = new_inputs[0] if len(new_inputs) == 1 else new_inputs
    from keras_skipblock.bias_loss_model import BiasLossModel

    if isinstance(model, BiasLossModel):
        quantized = type(model)(inputs, outputs, name=model.name)
        quantized.bias_loss_variance_min.assign(model.bias_loss_variance_min)
    else:
        try:
            quantized = type(model)(inputs=inputs, outputs=outputs, name=model.name)
        except TypeError:
            quantized = keras.Model(inputs, outputs, name=model.name)
    return quantized


def _lookup(new):
    def lookup(value):
        return new[id(value)] if isinstance(value, keras.KerasTensor) else value

    return lookup


def _quantize_after(op, node, tensor, graph, options, name=None, probe=False):
    """`tensor` (written by `node`) followed by an ActivationQuantizer, unless a
    plain ReLU alone reads it and `op` fuses ReLUs (then the ReLU quantizes).
    With probe=True: only whether a quantizer would follow (True/False)."""
    if id(node.outputs[0]) in graph.concatenated:
        return False if probe else tensor  # the Concatenate it reaches quantizes it
    reader = graph.sole_consumer(node.outputs[0])
    fusing = isinstance(op, _RELU_FUSING) or _is_layer_op(op, _REQUANTIZING_OPS)
    if fusing and reader is not None and _relu_kind(reader.operation):
        return False if probe else tensor
    if probe:
        return True
    return ActivationQuantizer(name=name or f"{op.name}_quant", **options)(tensor)


def _conv(op, node, args, graph, absorbed, options):
    if isinstance(op, keras.layers.DepthwiseConv2D):
        kind = "depthwise"
    elif isinstance(op, keras.layers.Conv2D) and not isinstance(op, (keras.layers.Conv2DTranspose,
                                                                      keras.layers.SeparableConv2D)):
        kind = "conv"
    else:
        kind = "dense"
    if kind != "dense":
        if op.data_format != "channels_last":
            _fail(op, "only channels_last convolutions are supported.")
        if kind == "conv" and op.groups != 1:
            _fail(op, "grouped convolutions are not supported.")
    activation = _activation_name(op.activation)
    tail = node.outputs[0]
    batchnorm = None
    if activation == "linear":
        reader = graph.sole_consumer(tail)
        if reader is not None and isinstance(reader.operation, keras.layers.BatchNormalization):
            bn = reader.operation
            if bn.axis not in (-1, len(tail.shape) - 1) and list(getattr(bn, "axis", [])) not in (
                    [-1], [len(tail.shape) - 1]):
                _fail(bn, "BatchNormalization over a non-channel axis cannot be folded.")
            batchnorm, tail = bn, reader.outputs[0]
            absorbed.add(id(reader))
        reader = graph.sole_consumer(tail)
        if reader is not None and _relu_kind(reader.operation):
            activation = _relu_kind(reader.operation)
            tail = reader.outputs[0]
            absorbed.add(id(reader))
    post = None
    if activation not in ("linear", "relu", "relu6"):
        post, activation = activation, "linear"
    config = dict(kind=kind, use_bias=op.use_bias, activation=activation, name=op.name,
                  batchnorm=batchnorm is not None, quantize_output=id(tail) not in graph.concatenated,
                  epsilon=batchnorm.epsilon if batchnorm is not None else 1e-3, **options)
    if kind == "dense":
        config.update(filters=op.units)
    else:
        config.update(kernel_size=op.kernel_size, strides=op.strides, padding=op.padding,
                      dilation_rate=op.dilation_rate)
        config.update(depth_multiplier=op.depth_multiplier) if kind == "depthwise" else config.update(
            filters=op.filters)
    layer = QuantConv(**config)
    out = layer(args[0])
    weights = {"kernel": op.kernel}
    if op.use_bias:
        weights["bias"] = op.bias
    if batchnorm is not None:
        ones = keras.ops.ones((layer.out_channels,))
        weights.update(gamma=batchnorm.gamma if batchnorm.scale else ones,
                       beta=batchnorm.beta if batchnorm.center else keras.ops.zeros((layer.out_channels,)),
                       moving_mean=batchnorm.moving_mean, moving_variance=batchnorm.moving_variance)
        layer.gamma.trainable = bool(batchnorm.scale)
        layer.beta.trainable = bool(batchnorm.center)
    for key, value in weights.items():
        getattr(layer, key).assign(keras.ops.convert_to_tensor(value))
    if post is not None:
        out = _activation(op, post, out, options, layer_name=f"{op.name}_{post}")
    if batchnorm is None and tail is node.outputs[0]:
        return out
    return tail, out


def _activation(op, name, tensor, options, layer_name=None):
    if name in ("hard_swish", "hard_sigmoid"):
        return QuantHardActivation(name, name=layer_name or op.name, **options)(tensor)
    _fail(op, f"activation {name!r} has no int8 simulation (supported: relu, relu6, hard_swish, "
              "hard_sigmoid, linear).")


def _rebuild(op, node, args, kwargs, graph, absorbed, options):
    from keras_skipblock.models.skipblocknet import AdaptiveAveragePooling2D

    if isinstance(op, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
        if isinstance(op, (keras.layers.Conv2DTranspose, keras.layers.SeparableConv2D,
                           keras.layers.Conv1D, keras.layers.Conv3D)):
            _fail(op, "only Conv2D, DepthwiseConv2D and Dense are supported.")
        return _conv(op, node, args, graph, absorbed, options)
    if isinstance(op, keras.layers.BatchNormalization):
        _fail(op, "a BatchNormalization must follow the Conv2D/DepthwiseConv2D/Dense it folds into "
                  "(and be its only reader).")
    if isinstance(op, keras.layers.Rescaling):  # InputScaling included
        scale, offset = op.scale, op.offset
        return QuantRescaling(scale=scale, offset=offset, name=op.name, **options)(args[0])
    if isinstance(op, AdaptiveAveragePooling2D):
        return QuantAveragePooling(output_size=op.output_size, name=op.name, **options)(args[0])
    if isinstance(op, keras.layers.AveragePooling2D):
        strides = tuple(op.strides or op.pool_size)
        if tuple(op.pool_size) != strides or op.padding != "valid" or op.data_format != "channels_last":
            _fail(op, "only non-overlapping 'valid' channels_last average pooling is supported.")
        return QuantAveragePooling(pool_size=op.pool_size, name=op.name, **options)(args[0])
    if _relu_kind(op) or isinstance(op, keras.layers.ReLU):
        out = _clone(op)(*args, **kwargs)
        if id(node.outputs[0]) in graph.concatenated:
            return out  # the Concatenate it reaches quantizes it
        return ActivationQuantizer(name=f"{op.name}_quant", **options)(out)
    if isinstance(op, keras.layers.Activation):
        name = _activation_name(op.activation)
        if name == "linear":
            return args[0]
        return _activation(op, name, args[0], options)
    if keeps_scale(op):
        return _clone(op)(*args, **kwargs)
    if (type(op) is keras.layers.Add and len(args) == 1 and len(args[0]) == 2 and not kwargs
            and _quantize_after(op, node, None, graph, options, probe=True)):
        return QuantAdd(name=f"{op.name}_quant", **options)(list(args[0]))  # emulates XNNPACK's ADD
    if isinstance(op, _REQUANTIZING_LAYERS) or _is_layer_op(op, _REQUANTIZING_OPS):
        out = _clone(op)(*args, **kwargs)
        return _quantize_after(op, node, out, graph, options)
    if isinstance(op, QuantLayer):
        _fail(op, "the model is already quantized.")
    _fail(op, "no int8 simulation for this layer type (supported: Conv2D, DepthwiseConv2D, Dense with "
              "BatchNormalization and ReLU/ReLU6/hard-swish/hard-sigmoid, Add, Subtract, Multiply, "
              "Concatenate, average/max/global pooling, padding, reshapes, Dropout, Rescaling).")


def is_quantized(model):
    """Whether `model` holds int8-simulating (QAT) layers from quantize_model."""
    return any(isinstance(layer, QUANT_LAYERS) for layer in _compat.flatten_layers(model, include_self=True))


def quant_layers(model):
    return [layer for layer in _compat.flatten_layers(model, include_self=True) if isinstance(layer, QuantLayer)]


def freeze_ranges(model, frozen=True):
    """Stop (or with frozen=False, resume) the moving averages of every
    activation range of a quantized model. Returns the number of layers."""
    layers = quant_layers(model)
    for layer in layers:
        layer.ranges_frozen.assign(1 if frozen else 0)
    return len(layers)


def calibrate_ranges(model, images, batch_size=32, steps=None):
    """Set the activation ranges of a freshly quantized model from real images
    (forward passes in training mode, moving averages as in training), without
    changing any weight; returns the number of passes. Dropout is active during
    these passes, as in training.

    `images`: an array (n, H, W, C), passed `batch_size` at a time, or an iterable
    of image batches, passed as they come; at most `steps` passes. With
    batch_size=1 a range is the moving average of each image's own minimum and
    maximum, not the extremes of batches. The pass is traced (eager passes cost
    ~10x more per image on small models)."""
    import numpy as np
    import tensorflow as tf

    if hasattr(images, "shape"):
        array = np.asarray(images, "float32")
        images = (array[start:start + batch_size] for start in range(0, len(array), batch_size))
    forward = tf.function(lambda batch: model(batch, training=True), reduce_retracing=True)
    count = 0
    for batch in images:
        if steps is not None and count >= steps:
            break
        forward(tf.constant(np.asarray(batch, "float32")))
        count += 1
    return count
