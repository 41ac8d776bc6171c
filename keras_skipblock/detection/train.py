"""Detection runs: `train_detector(DetectionConfig(...))`.

A task of the one run skeleton (`keras_skipblock.training.run`), which does
what classification does too: optimizer with EMA, schedule, weight decay,
resume, best-model checkpoint, logs, restoring the best weights, summary.
Added here: SSD data and model, the multibox loss, the validation mAP
callback that picks the best checkpoint, and the final VOC evaluation on the
test split.
"""

import dataclasses
import os
from typing import Optional

import keras

from keras_skipblock.detection import data as data_lib
from keras_skipblock.detection.anchors import generate_anchors
from keras_skipblock.detection.loss import MultiboxLoss
from keras_skipblock.detection.metrics import format_ap_table, voc_map
from keras_skipblock.detection.model import BACKBONES, build_detector, feature_sizes, level_anchor_counts
from keras_skipblock.detection.postprocess import detect
from keras_skipblock.flops import count_flops, count_params
from keras_skipblock.quantization import is_quantized
from keras_skipblock.training import callbacks as callbacks_lib
from keras_skipblock.training import optimizers
from keras_skipblock.training.driver import TrainConfig
from keras_skipblock.training.run import Task, run
from keras_skipblock.validation import InputError, check_dir, check_training_config


@dataclasses.dataclass
class DetectionConfig(TrainConfig):
    """A `TrainConfig` with detection's defaults and fields. Field names match recipes/voc.py's flags."""

    # data
    dataset: str = "voc"
    image_size: int = 300
    augment: str = "ssd"  # none | flip | ssd (detection/augment.py); TrainConfig's is a bool
    cache_images: bool = False  # keep decoded training images in memory after the first epoch
    # model
    model: str = "skipblocknet_s"
    # loss
    loss: str = "ce"
    # optimisation (the paper: SGD 0.01, cosine, batch 42, 200 epochs)
    epochs: int = 200
    batch_size: int = 42
    learning_rate: Optional[float] = 0.01
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple = (120, 160)
    lr_factor: float = 0.1
    optimizer: str = "sgd"
    weight_decay: float = 4e-5
    ema_decay: Optional[float] = None
    # run
    model_dir: str = "/tmp/keras_skipblock_detection"
    # detection only
    head: str = "ssd"
    train_images: Optional[int] = None  # cap (scenes: how many to generate)
    test_images: Optional[int] = None
    canvas_size: int = 160  # fashion_mnist_scenes


# TrainConfig fields a detection run does not use yet: refused unless left at their defaults.
_CLASSIFICATION_ONLY = ("manual_dir", "channels", "dropout", "skip_blocks", "init_checkpoint",
                        "normalization", "clamp", "label_smoothing", "strategy", "tpu", "mixed_precision")


class ValidationMAP(keras.callbacks.Callback):
    """Adds val_map (VOC area mAP@0.5) and val_map_11point to the epoch logs,
    measured on the EMA weights when the optimizer keeps them. Placed before
    the checkpoint callback, which keeps the epoch with the best val_map."""

    def __init__(self, images, truth, anchors, batch_size=32):
        super().__init__()
        self.images, self.truth, self.anchors, self.batch_size = images, truth, anchors, batch_size

    def set_model(self, model):
        super().set_model(model)
        self._swapper = callbacks_lib.SwapEMAWeights()  # one per model: its compiled swap is traced once
        self._swapper.set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        with callbacks_lib.ema_weights(self.model, self._swapper):
            result = evaluate_map(self.model, self.images, self.truth, self.anchors)
        if logs is not None:
            logs["val_map"] = result["map_area"]
            logs["val_map_11point"] = result["map_11point"]


def evaluate_map(model, images, truth, anchors):
    """VOC mAP of `model` on a tf.data of preprocessed image batches against
    `truth` (DetectionExamples)."""
    detections = detect(model, images, anchors)
    truths = list(zip(truth.boxes, truth.classes, truth.difficult))
    return voc_map(detections, truths, len(truth.class_names), truth.class_names)


def check_detection_config(config):
    """Every flag of a detection run in range, before any work (InputError)."""
    from keras_skipblock.detection.augment import AUGMENTATIONS

    for field, choices in (("dataset", data_lib.DATASETS), ("head", ("ssd", "ssdlite")),
                           ("loss", ("bias", "ce", "focal")), ("optimizer", ("sgd", "rmsprop")),
                           ("lr_schedule", ("cosine", "multistep", "constant")),
                           ("augment", AUGMENTATIONS)):
        if getattr(config, field) not in choices:
            raise InputError(f"--{field}: unknown value {getattr(config, field)!r}; use one of "
                             f"{', '.join(choices)}.")
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    changed = [name for name in _CLASSIFICATION_ONLY if getattr(config, name) != defaults[name]]
    if changed:
        raise InputError(f"Detection runs do not support {', '.join(changed)} yet; leave "
                         f"{'it' if len(changed) == 1 else 'them'} at the default.")
    check_training_config(config, BACKBONES)
    if config.dataset == "voc_folder":
        check_dir("--data_dir", config.data_dir, "VOCdevkit folder")
    elif config.data_dir and config.dataset == "fashion_mnist_scenes":
        check_dir("--data_dir", config.data_dir, "Fashion-MNIST IDX folder")
    return config


class Detection(Task):
    """SSD detection: `SSDDetector` + `MultiboxLoss`, VOC mAP@0.5 on the test split."""

    monitor = "val_map"

    def check(self):
        check_detection_config(self.config)

    def load_data(self):
        config = self.config
        return data_lib.load_detection_data(
            config.dataset, config.data_dir, seed=config.seed, train_images=config.train_images,
            validation_size=config.validation_size, test_images=config.test_images,
            canvas_size=config.canvas_size)

    def build_model(self, data):
        config = self.config
        size = config.image_size
        model = build_detector(config.model, len(data.class_names), (size, size, 3), config.head,
                               width=config.width, bn_momentum=config.bn_momentum)
        self.anchors = generate_anchors((size, size), feature_sizes(model))
        optimizers.add_weight_decay(model, config.weight_decay)
        return model

    def loss(self):
        config = self.config
        return MultiboxLoss(config.loss, level_anchor_counts(), alpha=config.alpha, beta=config.beta)

    def jit_compile(self, strategy):
        return False

    def fit_data(self, data, model, repeat):
        config, size = self.config, self.config.image_size
        train = data_lib.training_dataset(data.train, self.anchors, size, config.batch_size, seed=config.seed,
                                          augment=config.augment, repeat=repeat, cache=config.cache_images)
        return train, data_lib.evaluation_dataset(data.validation, self.anchors, size, config.batch_size)

    def validation_callbacks(self, data):
        images = data_lib.images_dataset(data.validation, self.config.image_size, self.config.batch_size)
        return [ValidationMAP(images, data.validation_truth, self.anchors)]

    def add_callbacks(self, callbacks, data, model):
        checkpoint = next(i for i, c in enumerate(callbacks) if isinstance(c, callbacks_lib.EMAModelCheckpoint))
        callbacks[checkpoint:checkpoint] = self.validation_callbacks(data)

    def image_files(self, data):
        return data_lib.image_files(data)

    def describe(self, model, data, steps_per_epoch, replicas):
        config, size = self.config, self.config.image_size
        return (f"{model.name} ({count_params(model):,} parameters, {count_flops(model) / 1e9:.3f} B MACs, "
                f"{len(self.anchors)} anchors) on {data.name}: {data.train_size} training images, "
                f"{len(data.class_names)} classes, {size}x{size}, batch {config.batch_size}, "
                f"{steps_per_epoch} steps/epoch, loss {config.loss}" + (f" ({data.note})" if data.note else "") + ".")

    def evaluate(self, model, data):
        config = self.config
        return evaluate_map(model, data_lib.images_dataset(data.test, config.image_size, config.batch_size),
                            data.test_truth, self.anchors)

    def summarize(self, result, data, model, model_dir, chief):
        config = self.config
        table = format_ap_table(result)
        if chief:  # the quantization-aware model's next to the float one's
            with open(os.path.join(model_dir, "test_ap_qat.md" if is_quantized(model) else "test_ap.md"), "w") as f:
                f.write(table + "\n")
        if config.verbose:
            print(table)
        params, macs = count_params(model), count_flops(model)
        fields = {
            "head": config.head, "image_size": config.image_size, "params": params, "macs": macs,
            "test_map_area": result["map_area"], "test_map_11point": result["map_11point"],
            "test_ap_area": result["ap_area"], "test_ap_11point": result["ap_11point"],
            "test_images": len(data.test_truth),
        }
        return fields, (f"{data.name} {config.model}+{config.head} loss={config.loss}: test mAP@0.5 "
                        f"{result['map_area']:.4f} (area), {result['map_11point']:.4f} (VOC07 11-point) on "
                        f"{len(data.test_truth)} images, {params / 1e6:.2f} M params, {macs / 1e9:.3f} B MACs")


def train_detector(config):
    """Train, checkpoint, resume, evaluate a detector (see `training.run.run`).
    Returns the summary dict.

    config.model_dir receives backup/ (resume state: rerun with the same
    model_dir to continue), best.keras (the epoch with the best validation
    mAP, EMA weights if any), history.csv, logs/, config.json, summary.json
    and test_ap.md (per-class AP); with config.qat_epochs also best_qat.keras
    (the quantization-aware fine-tune's best val_map, `training.run`) and
    test_ap_qat.md.
    """
    return run(Detection(config))
