"""Keras 3 layers that simulate LiteRT's int8 kernels during training.

Everything quantizes through `keras.quantizers.fake_quant_with_min_max_vars`,
which on TensorFlow lowers to `FakeQuantWithMinMaxVars(PerChannel)` ops: the
LiteRT converter reads their ranges and writes an int8 `.tflite` with no
calibration set (see docs/quantization.md).

What LiteRT computes, and so what these layers simulate:

- weights: int8 per output channel, symmetric, narrow range [-127, 127]
  (zero point 0, scale max|w| / 127) -- `_weight_fake_quant`;
- activations: int8 per tensor, asymmetric [-128, 127] with a zero point,
  at every tensor an int8 kernel writes -- `ActivationQuantizer` and the
  output quantizers inside the other layers;
- BatchNormalization after a conv is folded into the conv's weights and bias
  (as the converter folds it), ReLU/ReLU6 after a conv or an addition is fused
  (no quantization between them), hard-swish is the int8 form conversion uses
  (ADD with RELU6, MUL by 1/6, MUL; see litert.conversion._hard_silu_int8), and
  non-overlapping average pooling is the depthwise convolution with constant
  1/(kh*kw) weights that `int8_friendly_ops` makes of it.

Ranges: every activation range is a moving average (momentum `momentum`) of
the batch minima and maxima seen in training (the first batch sets it), kept
to contain 0 as int8 requires; it stops moving after `freeze_after` training
steps, or when `freeze_ranges(model)` sets the layer's `ranges_frozen` flag.
In inference the stored range is used. Weight ranges are the weights' own
max |w| at every step (nothing to learn).
"""

import contextlib

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_skipblock_qat"
INPUT_MARGIN = 0.01  # see ActivationQuantizer
MIN_SPAN = 1e-5  # a range of width 0 (a dead channel) would give scale 0
_INITIAL_RANGE = (-6.0, 6.0)
_FUSABLE = ("linear", "relu", "relu6")

# float32(3) plus one ulp, as conversion's int8 hard-swish (keeps the converter
# from fusing the ops back into HARD_SWISH, which XNNPACK runs in float only).
THREE_PLUS_ULP = float(np.nextafter(np.float32(3.0), np.float32(4.0)))


_TRACING_FOR_CONVERSION = [False]


@contextlib.contextmanager
def tracing_for_conversion():
    """Inside, QAT layers compute only their FakeQuant form (what the converter reads), not the
    integer emulation they run in inference (`litert.convert` traces QAT models in here)."""
    before = _TRACING_FOR_CONVERSION[0]
    _TRACING_FOR_CONVERSION[0] = True
    try:
        yield
    finally:
        _TRACING_FOR_CONVERSION[0] = before


def _emulating(training):
    """Whether to emulate LiteRT's integer arithmetic: in inference, unless tracing for conversion."""
    return not training and not _TRACING_FOR_CONVERSION[0]


def _requantize(accumulator, multiplier, low, high):
    """XNNPACK's int8 requantization ("fp32"): float32(int32 accumulator) x float32 multiplier,
    rounded half to even, clamped to [low, high] (levels relative to the output zero point)."""
    return ops.clip(ops.round(accumulator * multiplier), low, high)


def fake_quant_activation(x, low, high):
    """Per-tensor asymmetric int8 fake quantization of `x` to [low, high]."""
    return keras.quantizers.fake_quant_with_min_max_vars(x, low, high, num_bits=8, narrow_range=False)


def _weight_fake_quant(kernel, axis=-1, bound=None):
    """Symmetric narrow-range int8 fake quantization of `kernel`, per channel
    along `axis` (the output channels; what LiteRT stores for conv weights) or,
    with axis=None, per tensor (its FULLY_CONNECTED weights: the converter
    transposes a Dense kernel and refuses to carry a per-channel axis across).
    `bound`: `_weight_bound(kernel, axis)`, when the caller has it already."""
    bound = _weight_bound(kernel, axis) if bound is None else bound
    if axis is None:
        return keras.quantizers.fake_quant_with_min_max_vars(kernel, -bound, bound, num_bits=8,
                                                             narrow_range=True)
    return keras.quantizers.fake_quant_with_min_max_vars(
        kernel, -bound, bound, num_bits=8, narrow_range=True, axis=axis % len(kernel.shape))


def _weight_bound(kernel, axis=-1):
    """The range bound of `_weight_fake_quant(kernel, axis)`: max |w| per output channel along
    `axis` (a scalar with axis=None); the int8 scale is bound / 127."""
    if axis is None:
        return ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel)), MIN_SPAN))
    axis = axis % len(kernel.shape)
    reduce_axes = tuple(i for i in range(len(kernel.shape)) if i != axis)
    return ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel), axis=reduce_axes), MIN_SPAN))


def _is_identity_pooling(node):
    """Global average pooling of a 1x1 map: the converter drops it (and the requantization after it)."""
    pooling = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling1D)
    if not isinstance(node.operation, pooling) or len(node.input_tensors) != 1:
        return False
    spatial = tuple(node.input_tensors[0].shape[1:-1])
    return len(spatial) > 0 and all(size == 1 for size in spatial)


def _range_source(tensor):
    """A function returning the int8 scale of symbolic `tensor` (the range of the QuantLayer that
    wrote it, through layers that keep their input's scale: padding, reshapes, max pooling, ...),
    or None when no quantizer of ours wrote it."""
    from keras_skipblock import _compat
    from keras_skipblock.quantization import transform  # transform imports this module

    node = _compat.producer_node(tensor)
    while node is not None:
        op = node.operation
        if _is_identity_pooling(node):
            node = _compat.producer_node(node.input_tensors[0])
            continue
        if isinstance(op, QuantLayer):
            name = op.output_range_name(node)
            if name is None:  # a pass-through (pooling to the same size)
                node = _compat.producer_node(node.input_tensors[0])
                continue
            return lambda: op.range_qparams(name)
        if not transform.keeps_scale(op) or len(node.input_tensors) != 1:
            return None
        node = _compat.producer_node(node.input_tensors[0])
    return None


class QuantLayer(keras.layers.Layer):
    """Base of the QAT layers: named activation ranges updated as moving
    averages in training, a step counter and a freeze flag."""

    def __init__(self, momentum=0.99, freeze_after=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}.")
        self.momentum = float(momentum)
        self.freeze_after = None if freeze_after is None else int(freeze_after)
        self.range_names = []

    def add_ranges(self, *names):
        self.quant_steps = self.add_weight(shape=(), initializer="zeros", dtype="int32",
                                           trainable=False, name="quant_steps")
        self.ranges_frozen = self.add_weight(shape=(), initializer="zeros", dtype="int32",
                                             trainable=False, name="ranges_frozen")
        for name in names:
            low = self.add_weight(shape=(), initializer=keras.initializers.Constant(_INITIAL_RANGE[0]),
                                  trainable=False, name=f"{name}_min")
            high = self.add_weight(shape=(), initializer=keras.initializers.Constant(_INITIAL_RANGE[1]),
                                   trainable=False, name=f"{name}_max")
            setattr(self, f"{name}_min", low)
            setattr(self, f"{name}_max", high)
            self.range_names.append(name)

    def ranges(self):
        """{name: (min, max)} of the layer's activation ranges (floats)."""
        return {name: (float(getattr(self, f"{name}_min").numpy()), float(getattr(self, f"{name}_max").numpy()))
                for name in self.range_names}

    def range_qparams(self, name):
        """(scale, zero point) of range `name` as the converter derives them from the FakeQuant's
        float32 min/max (with this layer's `margin`, if any): in float64, 0 kept inside, scale
        (max - min) / 255 stored as float32, zero point -128 - min / scale rounded and clamped.
        Both float32 tensors, without gradient."""
        low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
        margin = getattr(self, "margin", 0.0)
        if margin:
            low, high = low * (1.0 + margin), high * (1.0 + margin)
        low = ops.minimum(ops.cast(low, "float64"), 0.0)
        high = ops.maximum(ops.cast(high, "float64"), 0.0)
        scale = (high - low) / 255.0
        zero = ops.clip(ops.round(-128.0 - low / scale), -128.0, 127.0)
        return ops.stop_gradient(ops.cast(scale, "float32")), ops.stop_gradient(ops.cast(zero, "float32"))

    def output_range_name(self, node):
        """The range that quantizes this layer's output at `node` (None: the output is the input)."""
        return "output"

    def _updating(self):
        allowed = ops.equal(self.ranges_frozen, 0)
        if self.freeze_after is not None:
            allowed = ops.logical_and(allowed, ops.less(self.quant_steps, self.freeze_after))
        return allowed

    def fake_quant(self, x, name, training=False, margin=0.0):
        """x fake-quantized to the range `name` (widened by the fraction
        `margin`); in training the range first takes in this batch (moving
        average, 0 kept inside)."""
        low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
        if training:
            values = ops.stop_gradient(ops.cast(x, "float32"))
            batch_low = ops.minimum(ops.min(values), 0.0)
            batch_high = ops.maximum(ops.max(values), 0.0)
            first = ops.equal(self.quant_steps, 0)
            m = self.momentum
            new_low = ops.where(first, batch_low, m * low + (1.0 - m) * batch_low)
            new_high = ops.where(first, batch_high, m * high + (1.0 - m) * batch_high)
            new_high = ops.maximum(new_high, new_low + MIN_SPAN)
            updating = self._updating()
            low.assign(ops.where(updating, new_low, low))
            high.assign(ops.where(updating, new_high, high))
        if margin:
            return fake_quant_activation(x, low * (1.0 + margin), high * (1.0 + margin))
        return fake_quant_activation(x, low, high)

    def count_step(self, training=False):
        if training:
            self.quant_steps.assign(ops.where(self._updating(), self.quant_steps + 1, self.quant_steps))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "freeze_after": self.freeze_after}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActivationQuantizer(QuantLayer):
    """Fake-quantizes its input per tensor: the int8 output of the op before it
    (an input, Add, Multiply, Concatenate, global pooling, a ReLU, ...).

    `margin` widens the quantization range by that fraction. quantize_model
    gives the image input INPUT_MARGIN: images are 8-bit pixels, and pixels
    scaled to [-1, 1] (the project's convention) fall exactly half-way
    between the int8 levels of [-1, 1] (256 pixel values, 255 steps, 0 on
    the grid). TensorFlow's FakeQuant rounds such ties up, LiteRT's QUANTIZE
    away from zero or to even: 15 % of the input pixels of Fashion-MNIST
    landed one level apart. A 1 % wider range moves every pixel >= 0.005
    levels off a tie, so both round it alike.
    """

    def __init__(self, margin=0.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def build(self, input_shape):
        self.add_ranges("output")

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, keras.KerasTensor):  # graph building: is the op before an identity?
            from keras_skipblock import _compat

            node = _compat.producer_node(inputs)
            self._identity = node is not None and _is_identity_pooling(node) and (
                _range_source(inputs) is not None)
        return super().__call__(inputs, *args, **kwargs)

    def output_range_name(self, node):
        return None if getattr(self, "_identity", False) else "output"

    def call(self, inputs, training=False):
        if getattr(self, "_identity", False):
            # Its input is already int8 at the producer's scale and the converter drops the identity
            # op with this requantization: the .tflite keeps the producer's scale, and so do we.
            self.count_step(training)
            return inputs
        out = self.fake_quant(inputs, "output", training, margin=self.margin)
        self.count_step(training)
        return out

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}

    def compute_output_shape(self, input_shape):
        return input_shape


def _apply_activation(x, activation):
    if activation == "relu":
        return ops.relu(x)
    if activation == "relu6":
        return ops.relu6(x)
    return x


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantConv(QuantLayer):
    """Conv2D, DepthwiseConv2D or Dense with its BatchNormalization folded in,
    an optional fused ReLU/ReLU6, int8 per-channel weights and an int8 output.

    Folding: kernel' = kernel * g, bias' = beta + (bias - mean) * g with
    g = gamma / sqrt(variance + epsilon) per output channel, which is what the
    converter computes from the BN's moving statistics. The statistics stay
    frozen (the layer never uses batch statistics): training then computes
    the function the `.tflite` computes, and the weights are quantized after
    folding, as LiteRT stores them. kernel, bias, gamma and beta train.

    quantize_output=False: no output range of its own; a Concatenate that alone
    reads the output quantizes it with its range (quantize_model).
    """

    def __init__(self, kind, filters=None, kernel_size=(1, 1), strides=(1, 1), padding="valid",
                 dilation_rate=(1, 1), depth_multiplier=1, use_bias=True, batchnorm=False,
                 epsilon=1e-3, activation="linear", quantize_output=True, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("conv", "depthwise", "dense"):
            raise ValueError(f"kind must be conv, depthwise or dense; got {kind!r}.")
        if activation not in _FUSABLE:
            raise ValueError(f"QuantConv fuses only {_FUSABLE}; got {activation!r}.")
        self.kind = kind
        self.filters = None if filters is None else int(filters)
        self.kernel_size = tuple(kernel_size)
        self.strides = tuple(strides)
        self.padding = padding
        self.dilation_rate = tuple(dilation_rate)
        self.depth_multiplier = int(depth_multiplier)
        self.use_bias = bool(use_bias)
        self.batchnorm = bool(batchnorm)
        self.epsilon = float(epsilon)
        self.activation = activation
        self.quantize_output = bool(quantize_output)

    def _kernel_shape(self, channels):
        if self.kind == "conv":
            return (*self.kernel_size, channels, self.filters)
        if self.kind == "depthwise":
            return (*self.kernel_size, channels, self.depth_multiplier)
        return (channels, self.filters)

    def build(self, input_shape):
        shape = self._kernel_shape(int(input_shape[-1]))
        out = shape[-2] * shape[-1] if self.kind == "depthwise" else shape[-1]
        self.out_channels = out
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(out,), initializer="zeros", name="bias")
        if self.batchnorm:
            self.gamma = self.add_weight(shape=(out,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(out,), initializer="zeros", name="beta")
            self.moving_mean = self.add_weight(shape=(out,), initializer="zeros", trainable=False,
                                               name="moving_mean")
            self.moving_variance = self.add_weight(shape=(out,), initializer="ones", trainable=False,
                                                   name="moving_variance")
        self.add_ranges(*(("output",) if self.quantize_output else ()))

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, keras.KerasTensor):  # graph building (quantize_model or loading): link the input's range
            self._input_scale = _range_source(inputs)  # a function: not tracked as a sublayer
        return super().__call__(inputs, *args, **kwargs)

    def folded_kernel_and_bias(self):
        """(kernel, bias) with the BN folded in, before weight quantization."""
        kernel = self.kernel
        bias = self.bias if self.use_bias else ops.zeros((self.out_channels,), kernel.dtype)
        if not self.batchnorm:
            return kernel, bias
        # gamma * rsqrt: the form the converter's graph optimizer folds it to (same float32 weights)
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.epsilon)
        if self.kind == "depthwise":
            kernel = kernel * ops.reshape(scale, (kernel.shape[2], kernel.shape[3]))
        else:
            kernel = kernel * scale
        return kernel, self.beta + (bias - self.moving_mean) * scale

    def _per_channel(self, kernel):
        """(kernel as quantized, axis): depthwise output channel c * multiplier + m along the
        flattened last two axes; dense per tensor (axis None)."""
        if self.kind == "depthwise":
            shape = kernel.shape
            return ops.reshape(kernel, (shape[0], shape[1], 1, shape[2] * shape[3])), -1
        return kernel, None if self.kind == "dense" else -1

    def weight_bound(self, folded_kernel):
        """max |w| of the folded kernel per output channel (a scalar for dense); its int8 scale
        is bound / 127."""
        return _weight_bound(*self._per_channel(folded_kernel))

    def quantized_kernel(self, folded_kernel=None, bound=None):
        """The folded kernel (`folded_kernel`, or folded here) fake-quantized as LiteRT stores it
        (`bound`: its `weight_bound`, when known)."""
        kernel = self.folded_kernel_and_bias()[0] if folded_kernel is None else folded_kernel
        view, axis = self._per_channel(kernel)
        return ops.reshape(_weight_fake_quant(view, axis, bound), kernel.shape)

    def quantized_bias(self, bias, folded_kernel, bound=None):
        """`bias` rounded to the int32 grid LiteRT stores it on, scale input scale x weight scale
        (when the input's range is known), with a straight-through gradient."""
        input_qparams = getattr(self, "_input_scale", None)
        if input_qparams is None:
            return bias
        bound = self.weight_bound(folded_kernel) if bound is None else bound
        step = input_qparams()[0] * (bound / 127.0)
        return bias + ops.stop_gradient(ops.round(bias / step) * step - bias)

    def _linear(self, inputs, kernel):
        if self.kind == "conv":
            return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding,
                            dilation_rate=self.dilation_rate)
        if self.kind == "depthwise":
            return ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                                      dilation_rate=self.dilation_rate)
        return ops.matmul(inputs, kernel)

    def integer_output(self, inputs, folded, bias, bound=None):
        """The layer's output as XNNPACK computes it from the int8 input: int32 accumulator of
        int8 levels (exact in float32 below 2**24) plus the int32 bias, requantized with the
        float32 multiplier s_in * s_w / s_out, rounded half to even, clamped (fused ReLU/ReLU6
        included), dequantized. None when the input's range is unknown or the output has no range of its own (a Concatenate's)."""
        input_qparams = getattr(self, "_input_scale", None)
        if input_qparams is None or not self.quantize_output:  # no range of its own: a Concatenate's
            return None
        s_in = input_qparams()[0]
        bound = self.weight_bound(folded) if bound is None else bound
        s_w = bound / 127.0
        s_out, zero = self.range_qparams("output")
        kernel_bound = ops.reshape(bound, folded.shape[2:]) if self.kind == "depthwise" else bound
        # The int8 weights are the FakeQuant's levels (the converter's graph folds that op on the
        # constant kernel): float32 rounding of TF's kernel, ties (w / s_w = 48.4999966 in float64,
        # 48.5 in float32) included.
        levels_w = ops.round(self.quantized_kernel(folded, bound) / (kernel_bound / 127.0))
        levels_in = ops.round(inputs / s_in)
        bias_levels = ops.round(bias / (s_in * s_w))
        accumulator = self._linear(levels_in, levels_w) + bias_levels
        low, high = -128.0 - zero, 127.0 - zero
        if self.activation in ("relu", "relu6"):
            low = ops.maximum(low, 0.0)
        if self.activation == "relu6":
            high = ops.minimum(high, ops.round(6.0 / s_out))
        levels = _requantize(accumulator, s_in * s_w / s_out, low, high)
        return levels * s_out

    def call(self, inputs, training=False):
        folded, bias = self.folded_kernel_and_bias()  # once per step: the kernel and bias share the BN scale
        bound = self.weight_bound(folded)  # once: the kernel's int8 grid sets the bias's too
        bias = self.quantized_bias(bias, folded, bound)
        if _emulating(training):
            out = self.integer_output(inputs, folded, bias, bound)
            if out is not None:
                return out
        kernel = self.quantized_kernel(folded, bound)
        x = _apply_activation(self._linear(inputs, kernel) + bias, self.activation)
        out = self.fake_quant(x, "output", training) if self.quantize_output else x
        self.count_step(training)
        return out

    def compute_output_shape(self, input_shape):
        # Stated, or Keras traces all of `call` to learn it (60 % of quantize_model's and of loading's
        # time); `_linear` on symbolic tensors: Keras' own shape rules for the op `call` runs.
        kernel = keras.KerasTensor(self._kernel_shape(input_shape[-1]))
        return self._linear(keras.KerasTensor(tuple(input_shape)), kernel).shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides, "padding": self.padding,
                "dilation_rate": self.dilation_rate, "depth_multiplier": self.depth_multiplier,
                "use_bias": self.use_bias, "batchnorm": self.batchnorm, "epsilon": self.epsilon,
                "activation": self.activation, "quantize_output": self.quantize_output}


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantHardActivation(QuantLayer):
    """Hard-sigmoid relu6(x + 3) / 6, or hard-swish x * hard-sigmoid(x), in the
    int8 form conversion traces (ADD with fused RELU6, MUL by 1/6[, MUL by x]),
    each of those int8 tensors fake-quantized."""

    def __init__(self, kind="hard_swish", **kwargs):
        super().__init__(**kwargs)
        if kind not in ("hard_swish", "hard_sigmoid"):
            raise ValueError(f"kind must be hard_swish or hard_sigmoid; got {kind!r}.")
        self.kind = kind

    def build(self, input_shape):
        names = ("shifted", "gate") + (("output",) if self.kind == "hard_swish" else ())
        self.add_ranges(*names)

    def output_range_name(self, node):
        return "output" if self.kind == "hard_swish" else "gate"

    def call(self, inputs, training=False):
        shifted = self.fake_quant(ops.relu6(inputs + THREE_PLUS_ULP), "shifted", training)
        gate = self.fake_quant(shifted * (1.0 / 6.0), "gate", training)
        out = gate if self.kind == "hard_sigmoid" else self.fake_quant(inputs * gate, "output", training)
        self.count_step(training)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def _pool_weights(window, channels):
    return np.full((window[0], window[1], channels, 1), 1.0 / (window[0] * window[1]), "float32")


def _pool_matrix(in_size, out_size):
    """PyTorch's adaptive-average windows as an (in, out) matrix."""
    matrix = np.zeros((in_size, out_size), "float32")
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        matrix[start:end, i] = 1.0 / (end - start)
    return matrix


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantAveragePooling(QuantLayer):
    """Average pooling as LiteRT runs it in int8 after conversion.

    Call it on `x` (pooling by `pool_size`, non-overlapping) or on `[x, like]`
    (SkipblockNet's adaptive pooling to `like`'s size). Non-overlapping
    windows: a depthwise convolution with constant 1/(kh*kw) weights (what
    `int8_friendly_ops` makes of AVERAGE_POOL_2D), int8 output. Other
    windows: two convolutions with constant pooling matrices between
    transposes (as `AdaptiveAveragePooling2D`), each output int8.
    """

    def __init__(self, pool_size=None, output_size=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = None if pool_size is None else tuple(pool_size)
        self.output_size = None if output_size is None else tuple(output_size)

    def _sizes(self, shape, like_shape):
        if like_shape is not None:
            return (shape[1], shape[2]), (like_shape[1], like_shape[2])
        if self.output_size is not None:
            return (shape[1], shape[2]), self.output_size
        return (shape[1], shape[2]), (shape[1] // self.pool_size[0], shape[2] // self.pool_size[1])

    def build(self, input_shape):
        self.add_ranges("rows", "output")

    def output_range_name(self, node):
        x = node.input_tensors[0]
        out = node.output_tensors[0]
        return None if tuple(x.shape[1:3]) == tuple(out.shape[1:3]) else "output"

    def call(self, inputs, training=False):
        x, like = (inputs[0], inputs[1]) if isinstance(inputs, (list, tuple)) else (inputs, None)
        (in_h, in_w), (out_h, out_w) = self._sizes(x.shape, None if like is None else like.shape)
        if None in (in_h, in_w, out_h, out_w):
            raise ValueError(f"{self.name}: quantized average pooling needs static spatial sizes.")
        if (in_h, in_w) == (out_h, out_w):
            self.count_step(training)
            return x
        if in_h % out_h == 0 and in_w % out_w == 0:
            window = (in_h // out_h, in_w // out_w)
            kernel = _weight_fake_quant(ops.reshape(ops.convert_to_tensor(
                _pool_weights(window, x.shape[-1])), (*window, 1, x.shape[-1])), -1)
            kernel = ops.reshape(kernel, (*window, x.shape[-1], 1))
            out = self.fake_quant(ops.depthwise_conv(x, kernel, strides=window, padding="valid"),
                                "output", training)
        else:
            rows = _weight_fake_quant(ops.convert_to_tensor(_pool_matrix(in_h, out_h))[None, None], -1)
            cols = _weight_fake_quant(ops.convert_to_tensor(_pool_matrix(in_w, out_w))[None, None], -1)
            y = ops.conv(ops.transpose(x, (0, 2, 3, 1)), rows)  # (b, w, c, oh)
            y = self.fake_quant(y, "rows", training)
            y = ops.conv(ops.transpose(y, (0, 3, 2, 1)), cols)  # (b, oh, c, ow)
            out = self.fake_quant(ops.transpose(y, (0, 1, 3, 2)), "output", training)
        self.count_step(training)
        return out

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            x_shape, like_shape = input_shape
            return (x_shape[0], like_shape[1], like_shape[2], x_shape[3])
        (_, _), (out_h, out_w) = self._sizes(input_shape, None)
        return (input_shape[0], out_h, out_w, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "output_size": self.output_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantRescaling(QuantLayer):
    """x * scale + offset (Rescaling, InputScaling) as LiteRT's int8 MUL then
    ADD, each output int8."""

    def __init__(self, scale=1.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset

    def build(self, input_shape):
        self.add_ranges("scaled", "output")

    def call(self, inputs, training=False):
        x = self.fake_quant(inputs * ops.convert_to_tensor(self.scale, "float32"), "scaled", training)
        out = self.fake_quant(x + ops.convert_to_tensor(self.offset, "float32"), "output", training)
        self.count_step(training)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantAdd(QuantLayer):
    """Add of two int8 tensors with an int8 output (a keras Add and the quantizer after it, in one
    layer so that inference can emulate XNNPACK's integer ADD, which needs both inputs)."""

    def build(self, input_shape):
        self.add_ranges("output")

    def __call__(self, inputs, *args, **kwargs):
        if all(isinstance(x, keras.KerasTensor) for x in inputs):  # graph building: link the inputs' ranges
            sources = [_range_source(x) for x in inputs]
            self._input_scales = None if None in sources else sources
        return super().__call__(inputs, *args, **kwargs)

    def integer_output(self, a, b):
        """XNNPACK's qs8 ADD (`xnn_init_qs8_add_minmax_scalar_params`): each input's scale ratio
        s / s_out as a ~21-bit integer multiplier m = rint(ratio * 2**k), k = 20 - exponent of the
        larger ratio; out = ((qa - za) * ma + (qb - zb) * mb + 2**(k - 1)) >> k, clamped."""
        (s_a, _), (s_b, _) = (source() for source in self._input_scales)
        s_out, zero = self.range_qparams("output")
        ratio_a, ratio_b = s_a / s_out, s_b / s_out  # float32, as XNNPACK
        exponent = ops.floor(ops.log2(ops.cast(ops.maximum(ratio_a, ratio_b), "float64")))
        shift = 20.0 - exponent
        power = ops.power(ops.cast(2.0, "float64"), shift)
        m_a = ops.round(ops.cast(ratio_a, "float64") * power)  # exact scaling, rint half to even
        m_b = ops.round(ops.cast(ratio_b, "float64") * power)
        levels_a = ops.round(ops.cast(a, "float64") / ops.cast(s_a, "float64"))
        levels_b = ops.round(ops.cast(b, "float64") / ops.cast(s_b, "float64"))
        accumulator = levels_a * m_a + levels_b * m_b + power / 2.0  # exact in float64
        levels = ops.clip(ops.floor(accumulator / power), ops.cast(-128.0 - zero, "float64"),
                          ops.cast(127.0 - zero, "float64"))
        return ops.cast(levels, "float32") * s_out

    def call(self, inputs, training=False):
        a, b = inputs
        if _emulating(training) and getattr(self, "_input_scales", None) is not None:
            return self.integer_output(a, b)
        out = self.fake_quant(ops.add(a, b), "output", training)
        self.count_step(training)
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


QUANT_LAYERS = (ActivationQuantizer, QuantConv, QuantHardActivation, QuantAveragePooling, QuantRescaling,
                QuantAdd)
