"""SSD's multibox loss, with hard-negative mining and an optional Bias Loss.

Written here because keras-cv 0.9 has no SSD loss (its detection losses are
RetinaNet's focal loss and YOLO's IoU losses, none with hard-negative mining).

    loss = (sum over positives of smooth-L1(deltas)
            + sum over selected anchors of w_a * CE_a) / number of positives

- Positives: anchors matched to a ground-truth box (label > 0).
- "ce": selected = positives + the `negative_ratio` (3) x positives
  background anchors with the highest cross-entropy, per image (SSD's hard
  negative mining); w_a = 1.
- "bias": the same selection, and w_a is Bias Loss's weight of the anchor.
  Per anchor, the "sample" whose variance Bias Loss reads is the feature
  vector at the anchor's cell of the map its head level reads (the C
  channels that the head's convolution sees at its centre). Per level
  (levels differ in width and statistics), the unbiased variances of all
  cells in the batch are scaled to [0, 1] by their min and max, then
  w = clamp(exp(alpha * v) - beta, 0.5, 1.5), with no gradient through w
  (`keras_skipblock.bias_weights` with normalization "batch"). Every anchor of
  a cell shares the cell's weight.
- "focal": softmax focal loss (gamma 2) on every anchor, no mining
  (RetinaNet's alternative to mining); w_a = 1.
"""

import keras
from keras import ops

from keras_skipblock.losses import bias_weights

CLASS_LOSSES = ("bias", "ce", "focal")


@keras.saving.register_keras_serializable(package="keras_skipblock")
class MultiboxLoss:
    """Callable: (targets, predictions) -> (total loss, parts dict).

    targets: {"boxes": (b, N, 4) encoded deltas, "labels": (b, N) int, 0 = background}.
    predictions: the detector's outputs {"boxes", "logits", "features_0", ...}.
    level_anchors: anchors per cell of each level (for Bias Loss's weights).
    """

    def __init__(self, class_loss="ce", level_anchors=None, negative_ratio=3.0, alpha=0.3, beta=0.3,
                 clamp=(0.5, 1.5), focal_gamma=2.0, box_weight=1.0):
        if class_loss not in CLASS_LOSSES:
            raise ValueError(f"Unknown detection class loss {class_loss!r}; use one of {CLASS_LOSSES}.")
        if class_loss == "bias" and not level_anchors:
            raise ValueError("Bias Loss on a detector needs level_anchors (anchors per cell of each level).")
        self.class_loss = class_loss
        self.level_anchors = None if level_anchors is None else [int(a) for a in level_anchors]
        self.negative_ratio = float(negative_ratio)
        self.alpha, self.beta = float(alpha), float(beta)
        self.clamp = None if clamp is None else tuple(float(c) for c in clamp)
        self.focal_gamma = float(focal_gamma)
        self.box_weight = float(box_weight)

    def anchor_weights(self, predictions):
        """(b, N) Bias Loss weights, one per anchor, and the fraction clamped."""
        weights, clamped = [], []
        for level, per_cell in enumerate(self.level_anchors):
            features = predictions[f"features_{level}"]
            b, h, w, c = ops.shape(features)
            cells = ops.reshape(features, (-1, c))  # one "sample" per cell
            bias = bias_weights(cells, self.alpha, self.beta, self.clamp, "batch")
            weights.append(ops.repeat(ops.reshape(bias.weights, (b, h * w)), per_cell, axis=1))
            clamped.append(ops.mean(ops.cast(bias.clamped, "float32")))
        return ops.concatenate(weights, axis=1), ops.mean(ops.stack(clamped))

    def __call__(self, targets, predictions):
        labels = ops.cast(targets["labels"], "int32")
        logits = ops.cast(predictions["logits"], "float32")
        deltas = ops.cast(predictions["boxes"], "float32")
        positive = labels > 0
        positive_f = ops.cast(positive, "float32")
        num_positive = ops.sum(positive_f, axis=1)  # per image
        normalizer = ops.maximum(ops.sum(num_positive), 1.0)

        box = ops.sum(_smooth_l1(ops.cast(targets["boxes"], "float32") - deltas), axis=-1)
        box_loss = ops.sum(box * positive_f) / normalizer

        num_classes = logits.shape[-1]
        one_hot = ops.one_hot(labels, num_classes)
        if self.class_loss == "focal":
            per_anchor = keras.losses.categorical_focal_crossentropy(
                one_hot, logits, alpha=1.0, gamma=self.focal_gamma, from_logits=True)
            selected = ops.ones_like(positive_f)
        else:
            per_anchor = keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True)
            selected = ops.maximum(positive_f, self._hard_negatives(per_anchor, positive, num_positive))
        parts = {}
        if self.class_loss == "bias":
            weights, clamped = self.anchor_weights(predictions)
            per_anchor = per_anchor * weights
            parts["bias_weight"] = ops.sum(weights * selected) / ops.maximum(ops.sum(selected), 1.0)
            parts["bias_clamped"] = clamped
        class_loss = ops.sum(per_anchor * selected) / normalizer
        parts.update(box_loss=box_loss, class_loss=class_loss)
        return self.box_weight * box_loss + class_loss, parts

    def _hard_negatives(self, per_anchor, positive, num_positive):
        """1.0 on the negative_ratio x positives highest-loss background anchors of each image."""
        candidate_loss = ops.where(positive, -1.0, ops.stop_gradient(per_anchor))
        order = ops.argsort(-candidate_loss, axis=1)
        rank = ops.argsort(order, axis=1)  # rank of each anchor by loss, 0 = highest
        limit = ops.cast(self.negative_ratio * num_positive, "int32")[:, None]
        return ops.cast(ops.logical_and(rank < limit, ops.logical_not(positive)), "float32")

    def get_config(self):
        return dict(class_loss=self.class_loss, level_anchors=self.level_anchors,
                    negative_ratio=self.negative_ratio, alpha=self.alpha, beta=self.beta,
                    clamp=None if self.clamp is None else list(self.clamp),
                    focal_gamma=self.focal_gamma, box_weight=self.box_weight)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _smooth_l1(x):
    """SSD's smooth L1 (Huber with delta 1), elementwise."""
    absolute = ops.abs(x)
    return ops.where(absolute < 1.0, 0.5 * ops.square(x), absolute - 0.5)
