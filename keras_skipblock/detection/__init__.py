"""Object detection (paper §5.4, Table 6): SSD / SSDLite on SkipblockNet or
MobileNet backbones, anchors and box coding (keras-cv / Keras core), the
multibox loss with an optional Bias Loss, VOC mAP, data and training.

    from keras_skipblock.detection import build_detector
    detector = build_detector("skipblocknet_s", num_classes=20)  # 300x300 SSD, VOC

The names below load with their module on first use: `import keras_skipblock`
loads only `detection.model` (it registers `SSDDetector` for loading saved
detectors), not the data pipelines (TFDS), keras-cv or the training stack.
"""

import importlib

_EXPORTS = {
    "anchors": ("SSD_ANCHORS", "decode", "encode", "encode_targets", "generate_anchors", "level_slices",
                "ssd_anchor_table"),
    "data": ("VOC_CLASSES", "AnnotationError", "DetectionExamples", "fashion_mnist_scenes",
             "load_detection_data", "parse_voc_xml", "read_voc_folder"),
    "loss": ("CLASS_LOSSES", "MultiboxLoss"),
    "metrics": ("average_precision", "voc_map"),
    "model": ("BACKBONES", "HEADS", "SSDDetector", "backbone_features", "build_detector", "feature_sizes",
              "level_anchor_counts"),
    "postprocess": ("detect",),
    "train": ("DetectionConfig", "train_detector"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = list(_MODULE_OF)


def __getattr__(name):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
        globals()[name] = value  # next time a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
