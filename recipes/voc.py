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
(test mAP@0.5, area and VOC07 11-point).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags  # noqa: E402

# Per data set defaults of the flags marked None below.
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
flags.DEFINE_enum("dataset", "voc", ["voc", "voc_folder", "fashion_mnist_scenes"],
                  "voc: TFDS voc/2007 + voc/2012; voc_folder: a VOCdevkit folder; fashion_mnist_scenes: offline.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (voc) or VOCdevkit folder (voc_folder) or "
                    "Fashion-MNIST IDX folder (scenes; default: the usual places).")
flags.DEFINE_integer("image_size", None, "Input side (voc: 300, scenes: 128).")
flags.DEFINE_integer("train_images", None, "Training images (scenes: how many to generate; VOC: a cap).")
flags.DEFINE_integer("validation_size", None, "Validation images (scenes; VOC validates on 2007 test).")
flags.DEFINE_integer("test_images", None, "Test images (scenes: how many; VOC: a cap).")
flags.DEFINE_integer("canvas_size", None, "fashion_mnist_scenes: canvas side in pixels (128).")
flags.DEFINE_enum("augment", None, ["none", "flip", "ssd"], "Training augmentation: ssd (photometric, zoom-out, "
                  "min-IoU crop, flip; VOC's default), flip (horizontal flip; the scenes' default), none.")
flags.DEFINE_string("model", "skipblocknet_s", "Backbone: skipblocknet_xs|s|m|l, mobilenet_v2, mobilenet_v3_large.")
flags.DEFINE_enum("head", "ssd", ["ssd", "ssdlite"], "ssd: 3x3 convolutions; ssdlite: depthwise-separable.")
flags.DEFINE_float("width", None, "Backbone width multiplier (SkipblockNet width, MobileNet alpha).")
flags.DEFINE_float("bn_momentum", None, "Backbone BatchNorm momentum (scenes: 0.9).")
flags.DEFINE_enum("loss", "ce", ["bias", "ce", "focal"], "Classification branch: bias (Bias Loss on "
                  "hard-mined anchors), ce (SSD), focal.")
flags.DEFINE_float("alpha", 0.3, "Bias Loss alpha.")
flags.DEFINE_float("beta", 0.3, "Bias Loss beta.")
flags.DEFINE_integer("epochs", None, "Epochs (voc: 200).")
flags.DEFINE_integer("batch_size", None, "Batch size (voc: 42).")
flags.DEFINE_float("learning_rate", None, "Peak learning rate (voc: 0.01).")
flags.DEFINE_enum("lr_schedule", "cosine", ["cosine", "multistep", "constant"], "Learning-rate schedule.")
flags.DEFINE_float("warmup_epochs", None, "Linear warm-up epochs before the cosine decay.")
flags.DEFINE_list("milestones", ["120", "160"], "Multistep: epochs where the rate is cut.")
flags.DEFINE_float("lr_factor", 0.1, "Multistep: factor at each milestone.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "rmsprop"], "Optimizer.")
flags.DEFINE_float("momentum", 0.9, "Optimizer momentum.")
flags.DEFINE_float("weight_decay", 4e-5, "L2 on conv kernels, in the loss.")
flags.DEFINE_float("ema_decay", 0.0, "Weight EMA decay; 0 turns EMA off.")
flags.DEFINE_string("model_dir", None, "Output folder; rerun with the same one to resume.")
flags.DEFINE_integer("seed", 0, "Random seed (also the scenes' generator seed).")
flags.DEFINE_integer("steps_per_epoch", None, "Cap each epoch at this many steps.")
flags.DEFINE_integer("backup_steps", None, "Also back up every N steps.")
flags.DEFINE_bool("run_eagerly", False, "Debugging and tests: run eagerly, no tracing.")
flags.DEFINE_bool("verbose", False, "On an error, also show its traceback.")


def config_from_flags():
    from keras_skipblock.detection.train import DetectionConfig
    from keras_skipblock.validation import InputError

    values = {name: FLAGS[name].value for name in FLAGS if name in DetectionConfig.__dataclass_fields__}
    for name, default in DEFAULTS[values["dataset"]].items():
        if values.get(name) is None:
            values[name] = default
    try:
        values["milestones"] = tuple(float(m) for m in values["milestones"])
    except ValueError:
        raise InputError(f"--milestones must be epochs separated by commas, e.g. 120,160; got "
                         f"{','.join(values['milestones'])}.") from None
    values["ema_decay"] = values["ema_decay"] or None
    if values["canvas_size"] is None:
        values["canvas_size"] = values["image_size"]
    if not values.get("model_dir"):
        values["model_dir"] = os.path.join(
            "runs", f"detection_{values['dataset']}_{values['model']}_{values['head']}_{values['loss']}")
    return DetectionConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from keras_skipblock.detection.train import check_detection_config, train_detector

    train_detector(check_detection_config(config_from_flags()))


if __name__ == "__main__":
    from keras_skipblock.validation import run_cli

    run_cli(main)
