"""The detection training driver: `train_detector(DetectionConfig(...))`.

It reuses the classification driver's pieces: `build_optimizer` (SGD with
the weight EMA), `build_schedule` (cosine), `add_weight_decay`,
`set_bn_momentum` and `standard_callbacks` (BackupAndRestore resume, EMA
validation, best-model checkpoint, CSV and TensorBoard logs). Added here:
the validation mAP callback that picks the best checkpoint, and the final
VOC evaluation on the test split.
"""

import dataclasses
import os
import time
from typing import Optional

import keras
import numpy as np

from keras_skipblock import _compat
from keras_skipblock.data.folder import corrupt_images_named
from keras_skipblock.detection import data as data_lib
from keras_skipblock.detection.anchors import generate_anchors
from keras_skipblock.detection.loss import MultiboxLoss
from keras_skipblock.detection.metrics import format_ap_table, voc_map
from keras_skipblock.detection.model import build_detector, feature_sizes, level_anchor_counts
from keras_skipblock.detection.postprocess import detect
from keras_skipblock.training import callbacks as callbacks_lib
from keras_skipblock.training import optimizers
from keras_skipblock.training.driver import build_schedule, epochs_completed, write_json
from keras_skipblock.validation import InputError, check_dir, check_training_config


@dataclasses.dataclass
class DetectionConfig:
    """Everything a detection run needs. Field names match recipes/voc.py's flags."""

    # data
    dataset: str = "voc"
    data_dir: Optional[str] = None
    image_size: int = 300
    train_images: Optional[int] = None  # cap (scenes: how many to generate)
    validation_size: Optional[int] = None
    test_images: Optional[int] = None
    canvas_size: int = 160  # fashion_mnist_scenes
    augment: str = "ssd"  # none | flip | ssd (detection/augment.py)
    # model
    model: str = "skipblocknet_s"
    head: str = "ssd"
    width: Optional[float] = None
    bn_momentum: Optional[float] = None
    # loss
    loss: str = "ce"
    alpha: float = 0.3
    beta: float = 0.3
    # optimisation (the paper: SGD 0.01, cosine, batch 42, 200 epochs)
    epochs: int = 200
    batch_size: int = 42
    learning_rate: Optional[float] = 0.01
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple = (120, 160)
    lr_factor: float = 0.1
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 4e-5
    ema_decay: Optional[float] = None
    # run
    model_dir: str = "/tmp/keras_skipblock_detection"
    seed: int = 0
    steps_per_epoch: Optional[int] = None
    backup_steps: Optional[int] = None
    run_eagerly: bool = False
    verbose: int = 1


class ValidationMAP(keras.callbacks.Callback):
    """Adds val_map (VOC area mAP@0.5) and val_map_11point to the epoch logs,
    measured on the EMA weights when the optimizer keeps them. Placed before
    the checkpoint callback, which keeps the epoch with the best val_map."""

    def __init__(self, images, truth, anchors, batch_size=32):
        super().__init__()
        self.images, self.truth, self.anchors, self.batch_size = images, truth, anchors, batch_size

    def on_epoch_end(self, epoch, logs=None):
        swapper = None
        if callbacks_lib.has_ema(self.model) and self.model.optimizer.built:
            swapper = callbacks_lib.SwapEMAWeights()  # exact, compiled swap
            swapper.set_model(self.model)
            _compat.swap_ema_weights(swapper)
        try:
            result = evaluate_map(self.model, self.images, self.truth, self.anchors)
        finally:
            if swapper is not None:
                _compat.swap_ema_weights(swapper)
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
    from keras_skipblock.detection.model import BACKBONES

    for field, choices in (("dataset", data_lib.DATASETS), ("head", ("ssd", "ssdlite")),
                           ("loss", ("bias", "ce", "focal")), ("optimizer", ("sgd", "rmsprop")),
                           ("lr_schedule", ("cosine", "multistep", "constant")),
                           ("augment", AUGMENTATIONS)):
        if getattr(config, field) not in choices:
            raise InputError(f"--{field}: unknown value {getattr(config, field)!r}; use one of "
                             f"{', '.join(choices)}.")
    check_training_config(config, BACKBONES)
    if config.dataset == "voc_folder":
        check_dir("--data_dir", config.data_dir, "VOCdevkit folder")
    elif config.data_dir and config.dataset == "fashion_mnist_scenes":
        check_dir("--data_dir", config.data_dir, "Fashion-MNIST IDX folder")
    return config


def train_detector(config):
    """Train, checkpoint, resume, evaluate. Returns the summary dict.

    config.model_dir receives backup/ (resume state: rerun with the same
    model_dir to continue), best.keras (the epoch with the best validation
    mAP, EMA weights if any), history.csv, logs/, summary.json and
    test_ap.md (per-class AP).
    """
    start = time.time()
    check_detection_config(config)  # before anything is read, built or written
    keras.utils.set_random_seed(config.seed)
    data = data_lib.load_detection_data(
        config.dataset, config.data_dir, seed=config.seed, train_images=config.train_images,
        validation_size=config.validation_size, test_images=config.test_images,
        canvas_size=config.canvas_size)
    if data.train_size < config.batch_size:
        raise InputError(f"--batch_size {config.batch_size} is larger than the {data.train_size} "
                         f"training images of {data.name}: every batch would be incomplete and "
                         "dropped, and nothing trained. Lower --batch_size.")
    os.makedirs(config.model_dir, exist_ok=True)  # only now: a refused run leaves nothing behind
    num_classes = len(data.class_names)
    size = config.image_size
    model = build_detector(config.model, num_classes, (size, size, 3), config.head, width=config.width,
                           bn_momentum=config.bn_momentum)
    anchors = generate_anchors((size, size), feature_sizes(model))
    optimizers.add_weight_decay(model, config.weight_decay)

    repeat = config.steps_per_epoch is not None
    steps_per_epoch = config.steps_per_epoch or max(data.train_size // config.batch_size, 1)
    train = data_lib.training_dataset(data.train, anchors, size, config.batch_size, seed=config.seed,
                                      augment=config.augment, repeat=repeat)
    validation = data_lib.evaluation_dataset(data.validation, anchors, size, config.batch_size)
    validation_images = data_lib.images_dataset(data.validation, size, config.batch_size)
    model.compile(
        optimizer=optimizers.build_optimizer(config.optimizer, build_schedule(config, steps_per_epoch),
                                             ema_decay=config.ema_decay, momentum=config.momentum),
        loss=MultiboxLoss(config.loss, level_anchor_counts(), alpha=config.alpha, beta=config.beta),
        jit_compile=False, run_eagerly=config.run_eagerly)
    write_json(os.path.join(config.model_dir, "config.json"), dataclasses.asdict(config))
    from keras_skipblock import count_flops

    params = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    macs = count_flops(model)
    if config.verbose:
        print(f"{model.name} ({params:,} parameters, {macs / 1e9:.3f} B MACs, {len(anchors)} anchors) on "
              f"{data.name}: {data.train_size} training images, {num_classes} classes, {size}x{size}, "
              f"batch {config.batch_size}, {steps_per_epoch} steps/epoch, loss {config.loss}"
              + (f" ({data.note})" if data.note else "") + ".", flush=True)

    callbacks = callbacks_lib.standard_callbacks(config.model_dir, monitor="val_map",
                                                 ema=bool(config.ema_decay), backup_steps=config.backup_steps)
    checkpoint = next(i for i, c in enumerate(callbacks) if isinstance(c, callbacks_lib.EMAModelCheckpoint))
    callbacks.insert(checkpoint, ValidationMAP(validation_images, data.validation_truth, anchors))
    with corrupt_images_named(data_lib.image_files(data)):
        history = model.fit(train, epochs=config.epochs, steps_per_epoch=steps_per_epoch if repeat else None,
                            validation_data=validation, callbacks=callbacks, verbose=config.verbose,
                            shuffle=False)  # the tf.data pipeline shuffles; Keras warns on shuffle=True

        best_path = os.path.join(config.model_dir, callbacks_lib.BEST_MODEL)
        callbacks_lib.restore_best_weights(model, callbacks, best_path)  # EMA weights of the best epoch
        result = evaluate_map(model, data_lib.images_dataset(data.test, size, config.batch_size),
                              data.test_truth, anchors)
    if not os.path.exists(best_path):
        best_path = None  # no epoch was checkpointed: claim no file
    table = format_ap_table(result)
    with open(os.path.join(config.model_dir, "test_ap.md"), "w") as f:
        f.write(table + "\n")
    epochs_done = epochs_completed(history, config.model_dir)
    summary = {
        "model": config.model, "head": config.head, "loss": config.loss, "dataset": data.name,
        "image_size": size, "params": params, "macs": macs,
        "test_map_area": result["map_area"], "test_map_11point": result["map_11point"],
        "test_ap_area": result["ap_area"], "test_ap_11point": result["ap_11point"],
        "test_images": len(data.test_truth), "epochs": int(epochs_done),
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "wall_time_s": round(time.time() - start, 1), "best_model": best_path,
    }
    write_json(os.path.join(config.model_dir, "summary.json"), summary)
    if config.verbose:
        print(table)
    print(f"SUMMARY {data.name} {config.model}+{config.head} loss={config.loss}: test mAP@0.5 "
          f"{result['map_area']:.4f} (area), {result['map_11point']:.4f} (VOC07 11-point) on "
          f"{len(data.test_truth)} images, {params / 1e6:.2f} M params, {macs / 1e9:.3f} B MACs, "
          f"epochs {summary['epochs']}, wall time {summary['wall_time_s']:.0f} s (this process), "
          f"model {best_path or 'not saved (no epoch was checkpointed)'}", flush=True)
    return summary
