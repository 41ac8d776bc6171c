"""Object detection (paper §5.4, Table 6): SSD / SSDLite on SkipblockNet or
MobileNet backbones, anchors and box coding (keras-cv / Keras core), the
multibox loss with an optional Bias Loss, VOC mAP, data and training.

    from keras_skipblock.detection import build_detector
    detector = build_detector("skipblocknet_s", num_classes=20)  # 300x300 SSD, VOC
"""

from keras_skipblock.detection.anchors import (
    SSD_ANCHORS,
    decode,
    encode,
    encode_targets,
    generate_anchors,
    level_slices,
    match,
    ssd_anchor_table,
)
from keras_skipblock.detection.data import (
    VOC_CLASSES,
    AnnotationError,
    DetectionExamples,
    fashion_mnist_scenes,
    load_detection_data,
    parse_voc_xml,
    read_voc_folder,
)
from keras_skipblock.detection.loss import CLASS_LOSSES, MultiboxLoss
from keras_skipblock.detection.metrics import average_precision, voc_map
from keras_skipblock.detection.model import (
    BACKBONES,
    HEADS,
    SSDDetector,
    backbone_features,
    build_detector,
    feature_sizes,
    level_anchor_counts,
)
from keras_skipblock.detection.postprocess import detect
from keras_skipblock.detection.train import DetectionConfig, train_detector

__all__ = [
    "SSD_ANCHORS", "decode", "encode", "encode_targets", "generate_anchors", "level_slices", "match",
    "ssd_anchor_table", "VOC_CLASSES", "AnnotationError", "DetectionExamples", "fashion_mnist_scenes",
    "load_detection_data", "parse_voc_xml", "read_voc_folder", "CLASS_LOSSES", "MultiboxLoss",
    "average_precision", "voc_map", "BACKBONES", "HEADS", "SSDDetector", "backbone_features",
    "build_detector", "feature_sizes", "level_anchor_counts", "detect", "DetectionConfig", "train_detector",
]
