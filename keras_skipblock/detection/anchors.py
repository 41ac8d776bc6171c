"""SSD anchors, box matching and box encoding.

Boxes everywhere in this package are "rel_xyxy": (x_min, y_min, x_max,
y_max) as fractions of the image width and height, so targets do not depend
on the input size.

Anchors: the MobileNetV2 paper's SSD set (the TF Object Detection API's
`ssd_mobilenet_v2`): six levels with scales s_k evenly spaced from 0.2 to
0.95; level 0 has three anchors per cell (scale 0.1 ratio 1, scale 0.2 ratios
2 and 1/2), the other levels six (scale s_k with ratios 1, 2, 1/2, 3, 1/3,
and scale sqrt(s_k * s_k+1) with ratio 1). At 300x300 that is 1,917 anchors
on 19x19, 10x10, 5x5, 3x3, 2x2 and 1x1 maps. Each (scale, ratio) pair is
laid out by keras-cv's `AnchorGenerator` with stride image_size / map_size,
so the cell centres sit at (i + 0.5) / map_size as in SSD.

Matching: keras-cv's `compute_iou` of the anchors and a batch's real boxes,
then each anchor takes its image's best box, positive at IoU >= 0.5, else
background (`BoxMatcher([0.5], [-1, 1])`'s rule, written as segment max/min
over the batch's boxes: the layer needs a padded (batch, anchors, boxes)
table, mostly padding), and each ground-truth box's best anchor is forced
positive. The forcing is not `BoxMatcher(force_match_for_each_col=True)`:
in keras-cv 0.9 that option also force-matches anchor 0 to the matcher's
padding column (an index one past the last box) whenever no real box picked
anchor 0.

Encoding: SSD's centre/size deltas with variances (0.1, 0.1, 0.2, 0.2), by
Keras core's `keras.utils.bounding_boxes.encode_box_to_deltas` /
`decode_deltas_to_boxes` (keras-cv 0.9 keeps its copies private).
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

VARIANCE = (0.1, 0.1, 0.2, 0.2)
IOU_THRESHOLD = 0.5
FORMAT = "rel_xyxy"


def ssd_anchor_table(num_levels=6, min_scale=0.2, max_scale=0.95, aspect_ratios=(1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)):
    """((scale, aspect ratio), ...) per level, the TF OD API's SSD anchor rule
    with `reduce_boxes_in_lowest_layer`. Aspect ratio = width / height."""
    scales = [min_scale + (max_scale - min_scale) * k / (num_levels - 1) for k in range(num_levels)] + [1.0]
    table = [((0.1, 1.0), (min_scale, 2.0), (min_scale, 0.5))]
    for k in range(1, num_levels):
        table.append(tuple((scales[k], r) for r in aspect_ratios) + ((math.sqrt(scales[k] * scales[k + 1]), 1.0),))
    return tuple(table)


SSD_ANCHORS = ssd_anchor_table()


def anchors_per_location(level):
    return len(level)


def generate_anchors(image_shape, feature_sizes, table=SSD_ANCHORS):
    """Anchors (N, 4) float32 in rel_xyxy, level by level, cell by cell
    (row-major), anchor by anchor: the order of the detector's outputs.

    image_shape: (height, width[, channels]); feature_sizes: [(h, w)] per level.
    Anchor sides are scale * min(height, width) pixels, stretched by the
    aspect ratio; the grid must be square-celled (height / h == width / w).
    """
    import keras_cv

    height, width = int(image_shape[0]), int(image_shape[1])
    if len(feature_sizes) != len(table):
        raise ValueError(f"{len(feature_sizes)} feature maps but {len(table)} anchor levels.")
    side = min(height, width)
    levels = []
    for (fh, fw), pairs in zip(feature_sizes, table):
        stride = height / fh
        if not math.isclose(stride, width / fw, rel_tol=1e-6):
            raise ValueError(f"Anchors need square cells: image {height}x{width} on a {fh}x{fw} map.")
        per_pair = []
        for scale, ratio in pairs:
            generator = keras_cv.layers.AnchorGenerator(
                bounding_box_format=FORMAT, sizes=[scale * side], scales=[1.0],
                aspect_ratios=[ratio], strides=[stride])
            boxes = np.asarray(generator(image_shape=(height, width, 3))[0], "float32")
            if len(boxes) != fh * fw:
                raise ValueError(f"AnchorGenerator gave {len(boxes)} anchors for a {fh}x{fw} map.")
            per_pair.append(boxes)
        levels.append(np.stack(per_pair, axis=1).reshape(-1, 4))  # (cells * anchors, 4)
    return np.concatenate(levels, axis=0)


def level_slices(feature_sizes, table=SSD_ANCHORS):
    """[(start, stop)] of each level's anchors in the flat anchor list."""
    out, start = [], 0
    for (fh, fw), pairs in zip(feature_sizes, table):
        stop = start + fh * fw * len(pairs)
        out.append((start, stop))
        start = stop
    return out


def encode(boxes, anchors):
    """Deltas (..., N, 4) of rel_xyxy `boxes` relative to `anchors` (N, 4)."""
    # Relative coordinates on both sides: the encoding is scale-free, so the
    # plain "xyxy" conversion is exact and needs no image size.
    return keras.utils.bounding_boxes.encode_box_to_deltas(
        anchors, boxes, anchor_format="xyxy", box_format="xyxy", encoding_format="center_yxhw",
        variance=VARIANCE)


def decode(deltas, anchors):
    """rel_xyxy boxes from deltas (..., N, 4) and anchors (N, 4)."""
    return keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors, deltas, anchor_format="xyxy", box_format="xyxy", encoded_format="center_yxhw",
        variance=VARIANCE)


def encode_targets(boxes, classes, anchors, iou_threshold=IOU_THRESHOLD):
    """Training targets of one image.

    boxes (M, 4) rel_xyxy, classes (M,) int in [0, num_classes).
    Returns (deltas (N, 4) float32, labels (N,) int32): labels are class + 1
    for positive anchors and 0 (background) for the rest; deltas are zero on
    background anchors.
    """
    # One image is a batch of one: a single matching rule for training and evaluation.
    deltas, labels = encode_targets_batch(tf.reshape(tf.cast(boxes, tf.float32), (1, -1, 4)),
                                          tf.reshape(tf.cast(classes, tf.int32), (1, -1)), anchors, iou_threshold)
    return deltas[0], labels[0]


def encode_targets_batch(boxes, classes, anchors, iou_threshold=IOU_THRESHOLD):
    """`encode_targets` for a batch at once: boxes (B, M, 4) rel_xyxy and
    classes (B, M), padded with class -1 (the padding's boxes are ignored).
    Returns (deltas (B, N, 4), labels (B, N)): labels are class + 1 on positive
    anchors (IoU >= iou_threshold, and each box's best anchor), 0 elsewhere.

    One set of ops per batch: tf.data matches a whole training batch at once.
    The IoU is computed for the batch's real boxes only, (real boxes, N), not for
    the padded (B, N, M): a batch is padded to its most crowded image (VOC has
    images with 40 objects, most have 1-3), so the padded table is mostly padding.
    Each anchor's best box within its own image is a segment max over the boxes."""
    import keras_cv

    boxes = tf.convert_to_tensor(boxes, tf.float32)
    classes = tf.cast(tf.convert_to_tensor(classes), tf.int32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    batch = tf.shape(boxes)[0]
    where = tf.where(classes >= 0)  # (K, 2): image, slot of each real box, image by image
    image = tf.cast(where[:, 0], tf.int32)
    count = tf.shape(where)[0]
    # One dummy box more, so that the gathers below are valid when no image has a box.
    real = tf.concat([tf.gather_nd(boxes, where), tf.zeros((1, 4))], axis=0)  # (K + 1, 4)
    real_classes = tf.concat([tf.gather_nd(classes, where), [-1]], axis=0)
    iou = tf.transpose(keras_cv.bounding_box.compute_iou(anchors, real[:-1], bounding_box_format="xyxy"))  # (K, N)
    # Each anchor's best box in its image (the first one on ties, as an argmax), positive
    # at IoU >= the threshold: BoxMatcher([iou_threshold], [-1, 1])'s rule, per image.
    best_iou = tf.math.unsorted_segment_max(iou, image, batch)  # (B, N); an image without boxes: lowest float
    is_best = iou >= tf.gather(best_iou, image)
    matched = tf.math.unsorted_segment_min(tf.where(is_best, tf.range(count)[:, None], count), image, batch)
    positive = best_iou >= iou_threshold
    # Each real box's best anchor is positive and matched to it (SSD's rule).
    best_anchor = tf.argmax(iou, axis=1, output_type=tf.int32)  # (K,)
    forced = tf.stack([image, best_anchor], axis=1)
    matched = tf.tensor_scatter_nd_update(matched, forced, tf.range(count))
    positive = tf.tensor_scatter_nd_update(positive, forced, tf.ones((count,), tf.bool))
    matched = tf.where(positive, matched, count)  # background: the dummy box
    deltas = encode(tf.gather(real, matched), anchors)  # (B, N, 4)
    labels = tf.where(positive, tf.gather(real_classes, matched) + 1, 0)
    deltas = tf.where(positive[..., None], tf.cast(deltas, tf.float32), 0.0)
    return deltas, tf.cast(labels, tf.int32)
