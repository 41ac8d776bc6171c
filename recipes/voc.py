"""Object detection (paper §5.4, Table 6): SkipblockNet-S + SSD on PASCAL VOC.

    python recipes/voc.py --data_dir=<VOCdevkit> --dataset=voc_folder     # VOC 07+12 trainval, 07 test
    python recipes/voc.py --data_dir=<TFDS dir> --dataset=voc             # the same through TFDS
    python recipes/voc.py --dataset=fashion_mnist_scenes                  # offline, ~18 min on 2 idle cores
    python recipes/voc.py --dataset=fashion_mnist_scenes --model=mobilenet_v2

VOC defaults are the paper's set-up: 300x300, SGD 0.01 with cosine
annealing, batch 42, 200 epochs. fashion_mnist_scenes (real Fashion-MNIST
items on a 128x128 canvas, generated from the installed IDX files) has its
own defaults for a 2-core CPU: 4,000 training scenes at 128x128, 5 epochs,
batch 32, BN momentum 0.9, SGD 0.04 with a 1-epoch warm-up then cosine. Any flag given on the command line
wins. Rerun with the same --model_dir to resume. Ends with one SUMMARY line
(test mAP@0.5, area and VOC07 11-point); with --qat_epochs N, N quantization-aware
epochs follow (best_qat.keras, a SUMMARY_QAT line; docs/quantization.md).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from absl import flags  # noqa: E402

# Per data set defaults of the flags left None below.
DEFAULTS = {
    "voc": dict(image_size=300, canvas_size=None, epochs=200, batch_size=42, learning_rate=0.01,
                warmup_epochs=0.0, bn_momentum=None, train_images=None, validation_size=None,
                test_images=None, augment="ssd"),
    "fashion_mnist_scenes": dict(image_size=128, canvas_size=128, epochs=5, batch_size=32,
                                 learning_rate=0.04, warmup_epochs=1.0, bn_momentum=0.9,
                                 train_images=4000, validation_size=200, test_images=1000,
                                 augment="flip"),
}
DEFAULTS["voc_folder"] = DEFAULTS["voc"]

FLAGS = flags.FLAGS
# The flags every recipe shares, with detection's choices and defaults.
common.define_flags(
    names=("dataset", "data_dir", "image_size", "validation_size", "model", "width", "bn_momentum", "loss",
           "alpha", "beta", "epochs", "batch_size", "learning_rate", "lr_schedule", "warmup_epochs",
           "milestones", "lr_factor", "optimizer", "momentum", "weight_decay", "ema_decay", "model_dir",
           "seed", "steps_per_epoch", "backup_steps", "run_eagerly", "qat_epochs", "qat_learning_rate"),
    choices=dict(dataset=["voc", "voc_folder", "fashion_mnist_scenes"],
                 lr_schedule=["cosine", "multistep", "constant"], optimizer=["sgd", "rmsprop"]),
    helps=dict(
        dataset="voc: TFDS voc/2007 + voc/2012; voc_folder: a VOCdevkit folder; fashion_mnist_scenes: offline.",
        data_dir="TFDS data dir (voc) or VOCdevkit folder (voc_folder) or Fashion-MNIST IDX folder "
                 "(scenes; default: the usual places).",
        image_size="Input side (voc: 300, scenes: 128).",
        validation_size="Validation images (scenes; VOC validates on 2007 test).",
        model="Backbone: skipblocknet_xs|s|m|l, mobilenet_v2, mobilenet_v3_large.",
        bn_momentum="Backbone BatchNorm momentum (scenes: 0.9).",
        loss="Classification branch: bias (Bias Loss on hard-mined anchors), ce (SSD), focal.",
        epochs="Epochs (voc: 200).", batch_size="Batch size (voc: 42).",
        learning_rate="Peak learning rate (voc: 0.01).",
        warmup_epochs="Linear warm-up epochs before the cosine decay.",
        seed="Random seed (also the scenes' generator seed)."),
    dataset="voc", image_size=None, validation_size=None, model="skipblocknet_s", loss="ce", epochs=None,
    batch_size=None, learning_rate=None, lr_schedule="cosine", warmup_epochs=None, milestones=["120", "160"],
    lr_factor=0.1, optimizer="sgd", weight_decay=4e-5, ema_decay=0.0)
flags.DEFINE_integer("train_images", None, "Training images (scenes: how many to generate; VOC: a cap).")
flags.DEFINE_integer("test_images", None, "Test images (scenes: how many; VOC: a cap).")
flags.DEFINE_integer("canvas_size", None, "fashion_mnist_scenes: canvas side in pixels (128).")
flags.DEFINE_enum("augment", None, ["none", "flip", "ssd"], "Training augmentation: ssd (photometric, zoom-out, "
                  "min-IoU crop, flip; VOC's default), flip (horizontal flip; the scenes' default), none.")
flags.DEFINE_bool("cache_images", False, "Keep the decoded training images in memory after the first epoch "
                  "(decoding is a quarter of the ssd pipeline's CPU on VOC; VOC07+12 trainval needs about 9 GB).")
flags.DEFINE_enum("head", "ssd", ["ssd", "ssdlite"], "ssd: 3x3 convolutions; ssdlite: depthwise-separable.")


def config_from_flags():
    from keras_skipblock.detection.train import DetectionConfig

    values = common.flag_values(DetectionConfig)
    for name, default in DEFAULTS[values["dataset"]].items():
        if values.get(name) is None:
            values[name] = default
    if values["canvas_size"] is None:
        values["canvas_size"] = values["image_size"]
    if not values.get("model_dir"):
        values["model_dir"] = os.path.join(
            "runs", f"detection_{values['dataset']}_{values['model']}_{values['head']}_{values['loss']}")
    return DetectionConfig(**values)


def main(argv):
    from keras_skipblock.detection.train import check_detection_config, train_detector

    common.check_arguments(argv)
    train_detector(check_detection_config(config_from_flags()))


if __name__ == "__main__":
    from keras_skipblock.validation import run_cli

    run_cli(main)
