"""SkipblockNet (Abrahamyan et al., "Bias Loss for Mobile Neural Networks",
ICCV 2021) for Keras 3.

SkipblockNet is MobileNetV3 with two *skip blocks*: small inverted residual
branches that take the output of the first ("base") block at 1/2 resolution,
pool it down with adaptive average pooling, and add it to the outputs of
stages 1 and 2. They feed early, high-resolution features to later layers,
which raises the variance of the last feature map that Bias Loss weighs.

- `SkipblockNetM` is the authors' model (their PyTorch code, `mode='large'`):
  5,532,352 trainable parameters at 1000 classes. `skip_blocks=False` gives
  the same network without skip blocks (the Table 3 ablation).
- `SkipblockNetXS`, `SkipblockNetS`, `SkipblockNetL`: the paper gives only
  their FLOPs and parameter targets (Table 1); the configurations below are
  this project's designs, each within 5% of both targets (see `_DESIGNS`).

Differences from the authors' code, on purpose:
- any width multiplier builds (the skip blocks' input follows the stem);
- any input size >= 32 runs: the skip blocks pool to the size of the tensor
  they are added to, with PyTorch's adaptive-pooling windows.

What is the same, to the last pixel: stride-2 layers pad (k - 1) // 2 on
every side as PyTorch does (an explicit ZeroPadding2D, see `_Builder.pad`),
so `SkipblockNetM(weights="skipblocknet-m.pth")` computes the authors'
function with their ImageNet weights (`authors_weights`; tested against
outputs of their code).

By default models hold no input preprocessing: feed float32 images scaled to
[-1, 1]. `include_preprocessing=True` puts the scaling inside the model
(`keras.applications`' convention): it then takes RGB in [0, 255].
"""

import collections

import keras
import numpy as np
from keras import layers, ops

from keras_skipblock.bias_loss_model import BiasLossModel


def make_divisible(value, divisor=8, min_value=None):
    """Round `value` to the nearest multiple of `divisor` (at least
    `min_value`, default `divisor`) without going below 90% of `value`:
    MobileNet's channel rule, used for every channel count."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


# -- the architectures, as data ---------------------------------------------

# One inverted residual block: kernel size, expansion t (applied to the
# block's *input* channels), output channels, squeeze-excite, activation,
# stride.
Block = collections.namedtuple("Block", "kernel expansion filters se activation stride")
# One skip block: the stage whose output it is added to, kernel, expansion
# (applied to the base block's channels).
Skip = collections.namedtuple("Skip", "stage kernel expansion")

RE, HS = "relu", "hard_swish"

# SkipblockNet-M: the authors' table (SPEC §2). MobileNetV3-Large, except
# block 5 (t=6, hard-swish) and the two skip blocks.
_M_STAGES = (
    (  # stage 1: 1/4 then 1/8 resolution
        Block(3, 4, 24, False, RE, 2),
        Block(3, 3, 24, False, RE, 1),
        Block(5, 3, 40, True, RE, 2),
        Block(5, 3, 40, True, RE, 1),
        Block(5, 6, 40, True, HS, 1),
    ),
    (  # stage 2: 1/16
        Block(3, 6, 80, False, HS, 2),
        Block(3, 2.5, 80, False, HS, 1),
        Block(3, 2.3, 80, False, HS, 1),
        Block(3, 2.3, 80, False, HS, 1),
    ),
    (  # stage 3: 1/16
        Block(3, 6, 112, True, HS, 1),
        Block(3, 6, 112, True, HS, 1),
    ),
    (  # stage 4: 1/32
        Block(5, 6, 160, True, HS, 2),
        Block(5, 6, 160, True, HS, 1),
        Block(5, 6, 160, True, HS, 1),
    ),
)
_M_SKIPS = (Skip(1, 5, 6), Skip(2, 3, 2.3))

# Each design: stem channels, stage table, skip blocks, head conv channels
# (None: the last block's expansion width, as the authors do), the size of
# the dense layer after pooling, and the default width multiplier.
Design = collections.namedtuple("Design", "stem stages skips head last_point width")


def _changed(stages, stage, block, **changes):
    """A copy of a stage table with one block's settings changed."""
    stages = [list(blocks) for blocks in stages]
    stages[stage - 1][block - 1] = stages[stage - 1][block - 1]._replace(**changes)
    return tuple(tuple(blocks) for blocks in stages)


# XS, S and L: the paper gives only targets (Table 1, 224x224, 1000 classes).
# All three keep M's large layout, blocks and skip blocks, so the skip
# blocks join the same stages at every size; they differ in width, in the
# dense layer after pooling, and in one early block. Figures: trainable
# parameters / multiply-accumulates (`count_flops`) at 224x224.
#
# XS (target 2.3 M / 81 M): width 0.5 and a 1024-wide dense layer (the
#   1280 x 1000 classifier alone would be 1.3 M). At width 0.5 the stem has
#   8 channels and stage 1's first expansion (t=4) only 32, which starves the
#   high-resolution layers; t=6 there restores 48 channels for 3 M more MACs
#   and 1 k parameters.  -> 2,329,272 (+1.3%) / 79.1 M (-2.4%).
# S (target 3.6 M / 152 M): width 0.7 alone gives 3.69 M / 144 M, short on
#   compute; widening stage 1's first two blocks (24 -> 32 before width,
#   24 channels at 0.7) adds it at 1/4 resolution where parameters are
#   cheap.  -> 3,693,632 (+2.6%) / 156.8 M (+3.2%).
# L (target 7.1 M / 364 M): width 1.2; the dense layer 1024 (x1.2 = 1232)
#   instead of 1280 (x1.2 = 1536) keeps the parameters on target.
#   -> 7,021,448 (-1.1%) / 365.3 M (+0.4%).
_DESIGNS = {
    "XS": Design(16, _changed(_M_STAGES, 1, 1, expansion=6), _M_SKIPS, None, 1024, 0.5),
    "S": Design(
        16,
        _changed(_changed(_M_STAGES, 1, 1, filters=32), 1, 2, filters=32),
        _M_SKIPS,
        None,
        1280,
        0.7,
    ),
    "M": Design(16, _M_STAGES, _M_SKIPS, None, 1280, 1.0),
    "L": Design(16, _M_STAGES, _M_SKIPS, None, 1024, 1.2),
}


# -- adaptive average pooling -------------------------------------------------


def adaptive_pool_windows(in_size, out_size):
    """PyTorch's adaptive-pooling windows: output i averages inputs
    [floor(i*in/out), ceil((i+1)*in/out))."""
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)]


def _pooling_matrix(in_size, out_size):
    matrix = np.zeros((in_size, out_size), "float32")
    for i, (start, end) in enumerate(adaptive_pool_windows(in_size, out_size)):
        matrix[start:end, i] = 1.0 / (end - start)
    return matrix


@keras.saving.register_keras_serializable(package="keras_skipblock")
class AdaptiveAveragePooling2D(layers.Layer):
    """Average pooling to a given spatial size, with PyTorch's windows.

    Call it on a tensor and a fixed `output_size=(h, w)`, or on a pair
    `[x, like]` to pool `x` to the spatial size of `like` (how the skip
    blocks join tensors whose sizes depend on the input size).

    When the input size is a multiple of the output size this is plain
    average pooling (TFLite AVERAGE_POOL_2D). Otherwise the windows differ
    in size or overlap, and it is two products with constant pooling
    matrices (TFLite CONV_2D between TRANSPOSEs), which convert and quantize.
    Channels-last only.
    """

    def __init__(self, output_size=None, **kwargs):
        super().__init__(**kwargs)
        if output_size is not None:
            output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.output_size = output_size

    def _sizes(self, inputs):
        if isinstance(inputs, (list, tuple)):
            x, like = inputs
            return x, (like.shape[1], like.shape[2]), like
        if self.output_size is None:
            raise ValueError("AdaptiveAveragePooling2D needs output_size or inputs [x, like].")
        return inputs, self.output_size, None

    def call(self, inputs):
        x, (out_h, out_w), like = self._sizes(inputs)
        in_h, in_w = x.shape[1], x.shape[2]
        if None in (in_h, in_w, out_h, out_w):
            return self._dynamic(x, like)
        if (in_h, in_w) == (out_h, out_w):
            return x
        if in_h % out_h == 0 and in_w % out_w == 0:
            window = (in_h // out_h, in_w // out_w)
            return ops.average_pool(x, window, strides=window, padding="valid")
        return self._matrices(x, _pooling_matrix(in_h, out_h), _pooling_matrix(in_w, out_w))

    @staticmethod
    def _matrices(x, rows, cols):
        """Pool with constant matrices rows (h, oh) and cols (w, ow): each
        product is a 1x1 convolution over the pooled axis moved to channels,
        which TFLite runs as CONV_2D (no shape arithmetic, quantizes well)."""
        rows = ops.cast(rows, x.dtype)[None, None]
        cols = ops.cast(cols, x.dtype)[None, None]
        x = ops.conv(ops.transpose(x, (0, 2, 3, 1)), rows)  # (b, w, c, oh)
        x = ops.conv(ops.transpose(x, (0, 3, 2, 1)), cols)  # (b, oh, c, ow)
        return ops.transpose(x, (0, 1, 3, 2))  # (b, oh, ow, c)

    def _dynamic(self, x, like):
        # Sizes known only at run time: build the same matrices in the graph.
        shape = ops.shape(x)
        if like is not None:
            out_h, out_w = ops.shape(like)[1], ops.shape(like)[2]
        else:
            out_h, out_w = self.output_size

        def matrix(in_size, out_size):
            i = ops.arange(out_size)
            start = (i * in_size) // out_size
            end = -((-(i + 1) * in_size) // out_size)
            j = ops.arange(in_size)[:, None]
            inside = ops.logical_and(j >= start[None, :], j < end[None, :])
            return ops.cast(inside, x.dtype) / ops.cast(end - start, x.dtype)[None, :]

        rows, cols = matrix(shape[1], out_h), matrix(shape[2], out_w)
        x = ops.tensordot(ops.transpose(x, (0, 2, 3, 1)), rows, axes=1)
        x = ops.tensordot(ops.transpose(x, (0, 3, 2, 1)), cols, axes=1)
        return ops.transpose(x, (0, 1, 3, 2))

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            x_shape, like_shape = input_shape
            return (x_shape[0], like_shape[1], like_shape[2], x_shape[3])
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


# -- building blocks ------------------------------------------------------------

# He-normal on fan-out, as the authors initialise their convolutions.
_CONV_INIT = keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")


class _Builder:
    """Layer factories sharing the BN settings; every layer gets a readable
    name (`stage2_block3_depthwise`, `skip1_project_bn`, ...)."""

    def __init__(self, bn_momentum, bn_epsilon):
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def bn(self, x, name):
        return layers.BatchNormalization(
            axis=-1, momentum=self.bn_momentum, epsilon=self.bn_epsilon, name=name
        )(x)

    @staticmethod
    def act(x, activation, name):
        if activation is None:
            return x
        if activation == RE:
            return layers.ReLU(name=name)(x)
        # keras' hard_swish is x * relu6(x + 3) / 6: SPEC's definition, and
        # the pattern TFLite fuses into its native HARD_SWISH op.
        return layers.Activation(activation, name=name)(x)

    @staticmethod
    def pad(x, kernel, stride, name):
        """PyTorch's padding: (k - 1) // 2 on every side. Keras "same" at
        stride 2 pads only bottom/right, which shifts the sampling grid by a
        pixel and breaks the authors' weights; at stride 1 both agree."""
        if stride == 1:
            return x, "same"
        return layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x), "valid"

    def conv_bn(self, x, filters, kernel, stride, activation, name):
        x, padding = self.pad(x, kernel, stride, name)
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, use_bias=False,
            kernel_initializer=_CONV_INIT, name=name,
        )(x)
        x = self.bn(x, f"{name}_bn")
        return self.act(x, activation, f"{name}_act")

    def depthwise_bn(self, x, kernel, stride, activation, name):
        x, padding = self.pad(x, kernel, stride, name)
        x = layers.DepthwiseConv2D(
            kernel, strides=stride, padding=padding, use_bias=False,
            depthwise_initializer=_CONV_INIT, name=name,
        )(x)
        x = self.bn(x, f"{name}_bn")
        return self.act(x, activation, f"{name}_act")

    @staticmethod
    def squeeze_excite(x, name):
        channels = x.shape[-1]
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
        s = layers.Conv2D(make_divisible(channels / 4), 1, name=f"{name}_reduce")(s)
        s = layers.ReLU(name=f"{name}_relu")(s)
        s = layers.Conv2D(channels, 1, name=f"{name}_expand")(s)
        # hard-sigmoid = relu6(x + 3) / 6 (keras' hard_sigmoid has slope 1/6)
        s = layers.Activation("hard_sigmoid", name=f"{name}_gate")(s)
        return layers.Multiply(name=f"{name}_scale")([x, s])

    def inverted_residual(self, x, block, filters, name):
        """1x1 expand, kxk depthwise, SE, 1x1 project; identity shortcut when
        shapes allow. The expand conv is kept even at expansion 1."""
        in_channels = x.shape[-1]
        shortcut = x
        x = self.conv_bn(x, make_divisible(in_channels * block.expansion), 1, 1, block.activation, f"{name}_expand")
        x = self.depthwise_bn(x, block.kernel, block.stride, block.activation, f"{name}_depthwise")
        if block.se:
            x = self.squeeze_excite(x, f"{name}_se")
        x = self.conv_bn(x, filters, 1, 1, None, f"{name}_project")
        if block.stride == 1 and in_channels == filters:
            x = layers.Add(name=f"{name}_add")([shortcut, x])
        return x

    def skip_block(self, source, target, skip, name):
        """Pool `source` to `target`'s size, then expand / depthwise (ReLU) /
        project to `target`'s channels, ready to be added to it."""
        x = AdaptiveAveragePooling2D(name=f"{name}_pool")([source, target])
        x = self.conv_bn(x, make_divisible(source.shape[-1] * skip.expansion), 1, 1, RE, f"{name}_expand")
        x = self.depthwise_bn(x, skip.kernel, 1, RE, f"{name}_depthwise")
        return self.conv_bn(x, target.shape[-1], 1, 1, None, f"{name}_project")


# -- the model --------------------------------------------------------------------


def SkipblockNet(
    design,
    input_shape=(224, 224, 3),
    num_classes=1000,
    width=None,
    include_top=True,
    dropout=0.2,
    bn_momentum=0.99,
    bn_epsilon=1e-5,
    skip_blocks=True,
    pooling=None,
    weights=None,
    include_preprocessing=False,
    input_range=(0, 255),
    normalization=None,
    name=None,
):
    """Build a SkipblockNet from a `Design` (or its name: "XS", "S", "M", "L").

    Args:
        design: a `Design` or a key of `_DESIGNS`.
        input_shape: (height, width, channels); height and width >= 32 (or
            None for sizes known only at run time), any number of channels.
        num_classes: size of the logits.
        width: channel multiplier applied to every layer through
            `make_divisible(c * width, 8)`, skip blocks included. The dense
            layer after pooling scales only when width > 1 (as MobileNetV3).
            Default: the design's width (1.0 for M).
        include_top: True: a `BiasLossModel` with outputs {"logits",
            "features"}. False: a `keras.Model` backbone whose output is the
            head's feature map (or pooled, see `pooling`); each stage's
            output is the layer `stage{n}_output` (see `stage_outputs`).
        dropout: dropout rate before the classifier.
        bn_momentum: BatchNormalization moving-average momentum. 0.99 is the
            paper's; short runs need less (e.g. 0.9) for the moving
            statistics to catch up (SPEC §7).
        bn_epsilon: BatchNormalization epsilon (PyTorch's default, as the
            authors' model).
        skip_blocks: False drops the skip blocks (Table 3 ablation).
        pooling: with include_top=False, None, "avg" or "max".
        weights: None (random), the authors' PyTorch checkpoint
            (`skipblocknet-m.pth`, SkipblockNet-M at width 1.0 only) or a
            Keras weights file (`.weights.h5`) of the same architecture.
            The authors' file is read without torch and must fit exactly
            (see `authors_weights.load_authors_weights`).
        include_preprocessing: put the input scaling inside the model, so
            that it takes raw images in `input_range`.
        input_range: (low, high) of the raw input when
            include_preprocessing=True: (0, 255) for RGB images, (-1, 1)
            for this project's data pipelines (fine-tuning the authors'
            weights, see the recipes' --init_checkpoint).
        normalization: what the scaling produces: "authors" for
            `(x/255 - mean) / std` with ImageNet's mean and std (what the
            authors' weights expect), "symmetric" for [-1, 1] (this
            project's convention). Default: "authors" when `weights` is a
            .pth, else "symmetric".
        name: model name.
    """
    if isinstance(design, str):
        key = design.upper()
        if key not in _DESIGNS:
            raise ValueError(f"Unknown SkipblockNet design {design!r}; valid: {', '.join(_DESIGNS)}.")
        name = name or f"skipblocknet_{key.lower()}"
        design = _DESIGNS[key]
    name = name or "skipblocknet"
    from keras_skipblock.validation import check_number, check_weights_argument

    check_number("width", width, low=0, low_open=True, allow_none=True)
    width = design.width if width is None else float(width)
    if include_top:
        check_number("num_classes", num_classes, low=1, integer=True)
    check_number("dropout", dropout, low=0, high=1, high_open=True)
    check_number("bn_momentum", bn_momentum, low=0, high=1, high_open=True)
    weights = check_weights_argument(weights)
    if len(input_shape) != 3 or any(s is not None and s < 32 for s in input_shape[:2]) or (
            input_shape[2] is not None and input_shape[2] < 1):
        raise ValueError(f"input_shape must be (height, width, channels) with sides >= 32; got {input_shape}.")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'; got {pooling!r}.")

    def scaled(channels):
        return make_divisible(channels * width)

    from keras_skipblock.models.authors_weights import is_authors_checkpoint

    authors_file = is_authors_checkpoint(weights)
    if authors_file and (design is not _DESIGNS["M"] or width != 1.0 or input_shape[2] != 3):
        raise ValueError(
            f"The authors publish weights for SkipblockNet-M at width 1.0 with RGB input only "
            f"(got {name}, width {width}, {input_shape[2]} channels). Build SkipblockNetM(width=1.0) "
            "with 3 input channels, or train from scratch (weights=None).")
    normalization = normalization or ("authors" if authors_file else "symmetric")

    build = _Builder(bn_momentum, bn_epsilon)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if include_preprocessing:
        x = preprocessing_layer(input_range, normalization, input_shape[2])(x)

    x = build.conv_bn(x, scaled(design.stem), 3, 2, HS, "stem")
    base = Block(3, 1, None, False, HS, 1)
    x = base_output = build.inverted_residual(x, base, scaled(design.stem), "base_block")

    skips = {skip.stage: skip for skip in design.skips} if skip_blocks else {}
    for stage_index, stage in enumerate(design.stages, start=1):
        for block_index, block in enumerate(stage, start=1):
            x = build.inverted_residual(x, block, scaled(block.filters), f"stage{stage_index}_block{block_index}")
        if stage_index in skips:
            side = build.skip_block(base_output, x, skips[stage_index], f"skip{stage_index}")
            x = layers.Add(name=f"skip{stage_index}_add")([x, side])
        x = layers.Identity(name=f"stage{stage_index}_output")(x)

    # Head: 1x1 conv + BN + hard-swish. Its output is what Bias Loss reads.
    last = design.stages[-1][-1]
    head = make_divisible(x.shape[-1] * last.expansion) if design.head is None else scaled(design.head)
    features = build.conv_bn(x, head, 1, 1, HS, "head_conv")

    if not include_top:
        outputs = features
        if pooling == "avg":
            outputs = layers.GlobalAveragePooling2D(name="head_pool")(features)
        elif pooling == "max":
            outputs = layers.GlobalMaxPooling2D(name="head_pool")(features)
        return _load_weights(keras.Model(inputs, outputs, name=name), weights)

    last_point = make_divisible(design.last_point * width) if width > 1.0 else design.last_point
    x = layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = layers.Dense(last_point, name="head_dense")(x)
    x = layers.Activation(HS, name="head_dense_act")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    model = BiasLossModel(inputs, {"logits": logits, "features": features}, name=name)
    return _load_weights(model, weights)


def _load_weights(model, weights):
    if weights is None:
        return model
    if not isinstance(weights, str):
        raise ValueError(f"weights must be None or a file path; got {weights!r}.")
    from keras_skipblock.models.authors_weights import is_authors_checkpoint, load_authors_weights

    if is_authors_checkpoint(weights):
        load_authors_weights(model, weights, strict=True)
    else:
        model.load_weights(weights)
    return model


@keras.saving.register_keras_serializable(package="keras_skipblock")
class InputScaling(layers.Rescaling):
    """The input scaling that `include_preprocessing=True` puts in a model: raw
    inputs in `input_range` to "symmetric" [-1, 1], or to "authors":
    `(x01 - mean) / std` with ImageNet's statistics per channel (their mean
    for grey input), x01 being the input mapped to [0, 1]. A `Rescaling`
    (one multiply-add, fused by LiteRT) that remembers its input range, so
    that tools feeding the model know what to feed."""

    def __init__(self, input_range=(0, 255), normalization="symmetric", channels=3, **kwargs):
        low, high = (float(v) for v in input_range)
        if high <= low:
            raise ValueError(f"input_range must be (low, high) with low < high; got {input_range}.")
        if normalization == "symmetric":
            mean, std = np.full(channels, 0.5), np.full(channels, 0.5)
        elif normalization == "authors":
            from keras_skipblock.models.authors_weights import AUTHORS_MEAN, AUTHORS_STD

            mean, std = np.array(AUTHORS_MEAN), np.array(AUTHORS_STD)
            if channels != 3:
                mean, std = np.full(channels, mean.mean()), np.full(channels, std.mean())
        else:
            raise ValueError(f"normalization must be 'symmetric' or 'authors'; got {normalization!r}.")
        # (x - low) / (high - low) is x01; (x01 - mean) / std = x * scale + offset.
        scale = 1.0 / ((high - low) * std)
        offset = (-low / (high - low) - mean) / std
        kwargs.pop("scale", None), kwargs.pop("offset", None)
        super().__init__([float(v) for v in scale], [float(v) for v in offset], **kwargs)
        self.input_range = (low, high)
        self.normalization = normalization
        self.channels = channels

    def get_config(self):
        config = super().get_config()
        config.pop("scale"), config.pop("offset")
        return {**config, "input_range": self.input_range, "normalization": self.normalization,
                "channels": self.channels}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def preprocessing_layer(input_range=(0, 255), normalization="symmetric", channels=3):
    """The `InputScaling` layer of `include_preprocessing=True` models."""
    return InputScaling(input_range, normalization, channels, name="preprocessing")


def raw_input_range(model):
    """(low, high) of the values `model` takes: its `InputScaling`'s input
    range, or (-1, 1), the project's convention for models without one."""
    for layer in model.layers[:3]:
        if isinstance(layer, InputScaling):
            return layer.input_range
    return (-1.0, 1.0)


def stage_outputs(model):
    """{"stage1": ..., "stage4": ...}: each stage's output tensor of a
    SkipblockNet (with or without top), e.g. for a detection head:
    `keras.Model(backbone.input, stage_outputs(backbone))`."""
    names = [layer.name for layer in model.layers if layer.name.endswith("_output") and layer.name.startswith("stage")]
    return {n[: -len("_output")]: model.get_layer(n).output for n in names}


def _constructor(key):
    def constructor(input_shape=(224, 224, 3), num_classes=1000, width=None, include_top=True, dropout=0.2, **kwargs):
        return SkipblockNet(
            key, input_shape=input_shape, num_classes=num_classes, width=width,
            include_top=include_top, dropout=dropout, **kwargs,
        )

    constructor.__name__ = constructor.__qualname__ = f"SkipblockNet{key}"
    constructor.__doc__ = (
        f"SkipblockNet-{key} (design {key!r}, default width {_DESIGNS[key].width}); "
        "arguments as `SkipblockNet`. Returns a `BiasLossModel` (or a backbone with include_top=False)."
    )
    return constructor


SkipblockNetXS = _constructor("XS")
SkipblockNetS = _constructor("S")
SkipblockNetM = _constructor("M")
SkipblockNetL = _constructor("L")
