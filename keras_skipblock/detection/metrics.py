"""PASCAL VOC detection metric: average precision per class at IoU 0.5,
with the VOC 2007 11-point interpolation and the area under the
interpolated precision-recall curve (VOC 2010+), and their means.

Rules of the VOC devkit: detections of a class are taken in decreasing
score; each is a true positive if its best-overlapping ground-truth box of
that class in the same image has IoU >= 0.5 and was not matched before; a
second detection of a matched box is a false positive (duplicate); a
detection whose best box is "difficult" is ignored (neither true nor false
positive) and difficult boxes do not count among the positives to find.
IoU is computed on continuous coordinates (the devkit adds 1 to pixel
widths; with relative boxes there are no pixels). Classes with no
non-difficult ground truth have no AP and are left out of the mean.

Written here because keras-cv 0.9's detection metric is COCO's (BoxCOCOMetrics,
pycocotools-style), not VOC's.
"""

import numpy as np

IOU_THRESHOLD = 0.5


def _iou(box, boxes):
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def precision_recall(detections, truths, class_id, iou_threshold=IOU_THRESHOLD):
    """(precision, recall, number of positives) for one class.

    detections: per image (boxes (K, 4), scores (K,), classes (K,)).
    truths: per image (boxes (M, 4), classes (M,), difficult (M,)).
    """
    records = []
    for image, (boxes, scores, classes) in enumerate(detections):
        keep = np.asarray(classes) == class_id
        for box, score in zip(np.asarray(boxes)[keep], np.asarray(scores)[keep]):
            records.append((float(score), image, box))
    records.sort(key=lambda r: -r[0])  # stable: equal scores keep image order
    truth_boxes, truth_difficult, matched = {}, {}, {}
    positives = 0
    for image, (boxes, classes, difficult) in enumerate(truths):
        keep = np.asarray(classes) == class_id
        truth_boxes[image] = np.asarray(boxes, "float64").reshape(-1, 4)[keep]
        truth_difficult[image] = np.asarray(difficult, bool)[keep]
        matched[image] = np.zeros(int(keep.sum()), bool)
        positives += int((~truth_difficult[image]).sum())
    tp, fp = [], []
    for _, image, box in records:
        candidates = truth_boxes.get(image, np.zeros((0, 4)))
        if len(candidates):
            overlaps = _iou(np.asarray(box, "float64"), candidates)
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou_threshold:
                if truth_difficult[image][best]:
                    continue  # ignored
                if not matched[image][best]:
                    matched[image][best] = True
                    tp.append(1.0)
                    fp.append(0.0)
                    continue
        tp.append(0.0)
        fp.append(1.0)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / positives if positives else np.zeros_like(tp)
    precision = tp / np.maximum(tp + fp, np.finfo("float64").eps)
    return precision, recall, positives


def average_precision(precision, recall, method="area"):
    """AP from a precision-recall curve: "11point" (VOC 2007) or "area" (VOC 2010+)."""
    precision, recall = np.asarray(precision, "float64"), np.asarray(recall, "float64")
    if method == "11point":
        return float(np.mean([precision[recall >= t].max() if np.any(recall >= t) else 0.0
                              for t in np.linspace(0.0, 1.0, 11)]))
    if method != "area":
        raise ValueError(f"Unknown AP method {method!r}; use '11point' or 'area'.")
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    changes = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def voc_map(detections, truths, num_classes, class_names=None, iou_threshold=IOU_THRESHOLD):
    """VOC mAP@0.5, both interpolations, and AP per class.

    Returns {"map_11point", "map_area", "ap_11point": {name: AP}, "ap_area": {...},
    "positives": {name: count}}; classes with no positives are absent from the AP dicts.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images of detections but {len(truths)} of ground truth.")
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    out = {"ap_11point": {}, "ap_area": {}, "positives": {}}
    for class_id in range(num_classes):
        precision, recall, positives = precision_recall(detections, truths, class_id, iou_threshold)
        out["positives"][names[class_id]] = positives
        if positives == 0:
            continue
        out["ap_11point"][names[class_id]] = average_precision(precision, recall, "11point")
        out["ap_area"][names[class_id]] = average_precision(precision, recall, "area")
    out["map_11point"] = float(np.mean(list(out["ap_11point"].values()))) if out["ap_11point"] else 0.0
    out["map_area"] = float(np.mean(list(out["ap_area"].values()))) if out["ap_area"] else 0.0
    return out


def format_ap_table(result):
    """Markdown table of per-class AP (11-point and area) and the means."""
    lines = ["| class | positives | AP (11-point) | AP (area) |", "|---|---|---|---|"]
    for name, ap in result["ap_area"].items():
        lines.append(f"| {name} | {result['positives'][name]} | {result['ap_11point'][name]:.4f} | {ap:.4f} |")
    lines.append(f"| **mAP** | | **{result['map_11point']:.4f}** | **{result['map_area']:.4f}** |")
    return "\n".join(lines)
