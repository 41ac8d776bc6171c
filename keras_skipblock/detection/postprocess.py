"""From the detector's raw outputs to detections: decode the box deltas on
the anchors, softmax the class logits, and keep per class the boxes that
survive non-maximum suppression (keras-cv's `MultiClassNonMaxSuppression`).

Detections are rel_xyxy boxes, scores, and classes in [0, num_classes)
(background removed).
"""

import numpy as np
from keras import ops

from keras_skipblock.detection.anchors import decode

IOU_THRESHOLD = 0.45  # SSD's NMS overlap
SCORE_THRESHOLD = 0.01  # SSD's evaluation threshold: keep low scores for AP
MAX_DETECTIONS = 100


def boxes_and_scores(outputs, anchors):
    """(rel_xyxy boxes (b, N, 4), class probabilities without background (b, N, C))."""
    boxes = decode(ops.cast(outputs["boxes"], "float32"), ops.convert_to_tensor(anchors, "float32"))
    scores = ops.softmax(ops.cast(outputs["logits"], "float32"), axis=-1)[..., 1:]
    return boxes, scores


def non_max_suppression(boxes, scores, iou_threshold=IOU_THRESHOLD, score_threshold=SCORE_THRESHOLD,
                        max_detections=MAX_DETECTIONS):
    """keras-cv's per-class NMS on a batch. Returns its dict (dense, padded
    with -1): "boxes" (b, K, 4), "confidence" (b, K), "classes" (b, K), "num_detections" (b,)."""
    import keras_cv

    nms = keras_cv.layers.MultiClassNonMaxSuppression(
        bounding_box_format="rel_xyxy", from_logits=False, iou_threshold=iou_threshold,
        confidence_threshold=score_threshold, max_detections=max_detections,
        max_detections_per_class=max_detections)
    return nms(boxes, scores)


def detect(model, images, anchors, batch_size=32, **nms_kwargs):
    """Detections of `model` on `images` (an array (n, H, W, 3) in [-1, 1] or
    a tf.data of such batches): a list, per image, of (boxes (K, 4), scores
    (K,), classes (K,)) as numpy."""
    if isinstance(images, np.ndarray):
        batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    else:
        batches = images
    out = []
    for batch in batches:
        outputs = model(batch, training=False)
        boxes, scores = boxes_and_scores(outputs, anchors)
        result = non_max_suppression(boxes, scores, **nms_kwargs)
        counts = np.asarray(result["num_detections"])
        for i, count in enumerate(counts):
            count = int(count)
            out.append((np.asarray(result["boxes"][i][:count], "float32"),
                        np.asarray(result["confidence"][i][:count], "float32"),
                        np.asarray(result["classes"][i][:count]).astype("int32")))
    return out
