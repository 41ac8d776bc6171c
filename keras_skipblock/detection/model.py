"""SSD and SSDLite detectors on SkipblockNet or keras.applications MobileNets.

The layout follows the MobileNetV2 paper's SSD (SPEC §9):

- two backbone maps: at output stride 16 the expansion layer of the first
  stride-32 block (the input of its stride-2 depthwise conv), at stride 32
  the backbone's last layer;
- four extra layers down to 1x1, each a 1x1 conv to 256/128/128/64 channels
  then a stride-2 3x3 conv to 512/256/256/128 (BN + ReLU6 after each);
- on each of the six maps a box head (anchors x 4 deltas) and a class head
  (anchors x (num_classes + 1) logits, class 0 = background).

head="ssd" uses 3x3 convolutions in the heads and the extra layers;
head="ssdlite" uses depthwise-separable ones (3x3 depthwise + BN + ReLU6,
then a 1x1 conv), as the MobileNetV2 paper's SSDLite.

The detector is a `keras.Model` with outputs {"boxes": (b, anchors, 4)
encoded deltas, "logits": (b, anchors, num_classes + 1), "features_0" ...
"features_5": the map each head level reads}. The features are what Bias
Loss weighs per anchor (see `keras_skipblock.detection.loss`).
"""

import keras
from keras import layers

from keras_skipblock import _compat
from keras_skipblock.detection.anchors import SSD_ANCHORS, anchors_per_location
from keras_skipblock.detection.loss import MultiboxLoss
from keras_skipblock.models import registry

HEADS = ("ssd", "ssdlite")
BACKBONES = registry.DETECTION_BACKBONES

# The extra layers of the MobileNetV2 paper's SSD: (1x1 channels, 3x3 stride-2 channels).
EXTRA_LAYERS = ((256, 512), (128, 256), (128, 256), (64, 128))
NUM_LEVELS = 2 + len(EXTRA_LAYERS)

BOXES, LOGITS = "boxes", "logits"


def feature_key(level):
    return f"features_{level}"


# -- backbones ------------------------------------------------------------------


def backbone_features(backbone):
    """(stride-16 map, stride-32 map) of a classifier-less backbone you built yourself
    (the registry's backbones have named taps, `models.registry.feature_taps`).

    Stride 16: the input of the last stride-2 depthwise convolution (through
    its ZeroPadding2D, if any), i.e. the expansion layer of the first
    stride-32 block, as the MobileNetV2 paper's SSD. Stride 32: the backbone's output.
    """
    strided = [layer for layer in backbone.layers
               if isinstance(layer, layers.DepthwiseConv2D) and tuple(layer.strides) == (2, 2)]
    if not strided:
        raise ValueError(f"{backbone.name} has no stride-2 depthwise convolution to split at.")
    tensor = strided[-1].input
    # The layer that produced it, found by its public output (not the tensor's _keras_history).
    padding = [layer for layer in backbone.layers
               if isinstance(layer, layers.ZeroPadding2D) and layer.output is tensor]
    if padding:
        tensor = padding[0].input
    return tensor, backbone.output


# -- layers -----------------------------------------------------------------------


def _conv_bn_relu6(x, filters, kernel, stride, separable, name):
    if separable and kernel > 1:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=f"{name}_depthwise")(x)
        x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}_depthwise_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(x)
        kernel, stride = 1, 1
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def _prediction(x, filters, separable, name):
    """3x3 conv (ssd) or 3x3 depthwise + BN + ReLU6 + 1x1 conv (ssdlite), with bias."""
    if separable:
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
        x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}_depthwise_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(x)
        return layers.Conv2D(filters, 1, name=name)(x)
    return layers.Conv2D(filters, 3, padding="same", name=name)(x)


# -- the detector --------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_skipblock")
class SSDDetector(keras.Model):
    """A functional SSD whose `fit` feeds all its outputs to a `MultiboxLoss`.

    Compile it with `loss=MultiboxLoss(...)`; the labels are
    {"boxes": encoded deltas (b, N, 4), "labels": (b, N) int, 0 = background}
    (`keras_skipblock.detection.encode_targets`). `fit` reports `box_loss`,
    `class_loss` and, with Bias Loss, `bias_weight` (mean weight of the
    selected anchors) and `bias_clamped`. Keras cannot do this with compile
    alone: its losses see one output and one label each.
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.class_loss_tracker = keras.metrics.Mean(name="class_loss")
        self.bias_weight_tracker = keras.metrics.Mean(name="bias_weight")
        self.bias_clamped_tracker = keras.metrics.Mean(name="bias_clamped")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss_fn = getattr(self, "loss", None)
        if not isinstance(loss_fn, MultiboxLoss):
            raise ValueError("SSDDetector: compile with loss=keras_skipblock.detection.MultiboxLoss(...); "
                             f"got {type(loss_fn).__name__}.")
        total, parts = loss_fn(y, y_pred)
        self.box_loss_tracker.update_state(parts["box_loss"])
        self.class_loss_tracker.update_state(parts["class_loss"])
        if "bias_weight" in parts:
            self.bias_weight_tracker.update_state(parts["bias_weight"])
            self.bias_clamped_tracker.update_state(parts["bias_clamped"])
        for extra in self.losses:  # weight decay
            total = total + _compat.aggregate_additional_loss(self, extra)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self.get_metrics_result()

    @property
    def metrics(self):
        tracked = super().metrics
        if isinstance(getattr(self, "loss", None), MultiboxLoss) and self.loss.class_loss == "bias":
            return tracked
        bias = (self.bias_weight_tracker, self.bias_clamped_tracker)
        return [m for m in tracked if m not in bias]


def build_detector(backbone="skipblocknet_s", num_classes=20, input_shape=(300, 300, 3), head="ssd",
                   width=None, bn_momentum=None, anchors=SSD_ANCHORS, name=None):
    """An SSD (or SSDLite) detector.

    Args:
        backbone: one of BACKBONES ("skipblocknet_s" default; built and
            tapped by `keras_skipblock.models.registry`), or a built
            classifier-less keras.Model (its stride-16/32 maps are found by
            `backbone_features`).
        num_classes: object classes, background excluded (VOC: 20); the class
            head predicts num_classes + 1 logits, index 0 = background.
        input_shape: (height, width, channels), static.
        head: "ssd" (3x3 convolutions) or "ssdlite" (depthwise-separable).
        width: backbone width multiplier (SkipblockNet width, MobileNet alpha).
        bn_momentum: BatchNorm momentum of every layer (default: the
            backbone's own and 0.99 in the extra layers; short runs: 0.9).
        anchors: the anchor table (see `keras_skipblock.detection.anchors`).

    Returns:
        `SSDDetector`: image -> {"boxes", "logits", "features_0".."features_5"}.
    """
    if head not in HEADS:
        raise ValueError(f"Unknown head {head!r}; use one of {HEADS}.")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1 (background excluded); got {num_classes}.")
    if len(input_shape) != 3 or any(s is None for s in input_shape):
        raise ValueError(f"input_shape must be a static (height, width, channels); got {input_shape}.")
    if len(anchors) != NUM_LEVELS:
        raise ValueError(f"The anchor table has {len(anchors)} levels; the detector has {NUM_LEVELS}.")
    separable = head == "ssdlite"
    if isinstance(backbone, str):
        backbone_name = backbone.lower()
        backbone = registry.get_backbone(backbone_name, tuple(input_shape), width, bn_momentum)
        stride16, stride32 = registry.feature_taps(backbone_name, backbone)
    else:
        backbone_name = backbone.name
        stride16, stride32 = backbone_features(backbone)
    inputs = backbone.inputs[0]

    maps = [stride16, stride32]
    x = stride32
    for i, (squeeze, out) in enumerate(EXTRA_LAYERS, start=1):
        x = _conv_bn_relu6(x, squeeze, 1, 1, False, f"extra{i}_1x1")
        x = _conv_bn_relu6(x, out, 3, 2, separable, f"extra{i}_3x3")
        maps.append(x)

    boxes, logits = [], []
    for level, feature in enumerate(maps):
        count = anchors_per_location(anchors[level])
        cells = feature.shape[1] * feature.shape[2]
        b = _prediction(feature, count * 4, separable, f"box_head{level}")
        c = _prediction(feature, count * (num_classes + 1), separable, f"class_head{level}")
        boxes.append(layers.Reshape((cells * count, 4), name=f"box_head{level}_flat")(b))
        logits.append(layers.Reshape((cells * count, num_classes + 1), name=f"class_head{level}_flat")(c))
    outputs = {
        BOXES: layers.Concatenate(axis=1, name=BOXES)(boxes),
        LOGITS: layers.Concatenate(axis=1, name=LOGITS)(logits),
    }
    for level, feature in enumerate(maps):
        outputs[feature_key(level)] = layers.Identity(name=feature_key(level))(feature)
    detector = SSDDetector(inputs, outputs, name=name or f"{backbone_name}_{head}")
    if bn_momentum is not None:
        registry.set_bn_momentum(detector, bn_momentum)  # extra layers and heads too
    return detector


def feature_sizes(detector):
    """[(h, w)] of the maps the six head levels read."""
    return [tuple(detector.get_layer(feature_key(level)).output.shape[1:3]) for level in range(NUM_LEVELS)]


def num_classes_of(detector):
    """Object classes of a detector (background excluded)."""
    return int(detector.get_layer(LOGITS).output.shape[-1]) - 1


def level_anchor_counts(anchors=SSD_ANCHORS):
    return [anchors_per_location(level) for level in anchors]
