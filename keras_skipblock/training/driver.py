"""Classification runs: `train(TrainConfig(...))`, which every classification recipe calls.

`TrainConfig` holds the fields every task shares (detection's `DetectionConfig`
extends it); `Classification` is the task `training.run.run` trains.
"""

import dataclasses
import math
from typing import Optional, Sequence

import keras

from keras_skipblock import _compat
from keras_skipblock.flops import count_params
from keras_skipblock.models import registry
from keras_skipblock.models.authors_weights import is_authors_checkpoint, load_authors_weights
from keras_skipblock.training import optimizers, schedules
from keras_skipblock.training.loss_factory import make_loss
from keras_skipblock.training.run import Task, run, write_json  # noqa: F401  write_json: importable here as before
from keras_skipblock.validation import InputError, check_model_file, check_training_config

SCHEDULES = ("paper", "multistep", "cosine", "constant")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs. Field names match the recipes' flags."""

    # data
    dataset: str = "fashion_mnist"
    data_dir: Optional[str] = None
    manual_dir: Optional[str] = None
    image_size: int = 224
    channels: Optional[int] = None  # grey data sets: 1 or 3
    validation_size: Optional[int] = None
    augment: bool = True
    # model
    model: str = "skipblocknet_m"
    width: Optional[float] = None
    dropout: Optional[float] = None
    bn_momentum: Optional[float] = None
    skip_blocks: bool = True
    init_checkpoint: Optional[str] = None  # fine-tune: copy matching layers from this .keras
    # loss
    loss: str = "bias"
    alpha: float = 0.3
    beta: float = 0.3
    normalization: str = "batch"
    clamp: Optional[Sequence[float]] = (0.5, 1.5)
    label_smoothing: float = 0.0
    # optimisation
    epochs: int = 350
    batch_size: int = 512  # global, all replicas together
    learning_rate: Optional[float] = None  # peak; None: 0.032 * batch_size / 512
    lr_schedule: str = "paper"
    warmup_epochs: float = schedules.WARMUP_EPOCHS
    decay_epochs: float = schedules.DECAY_EPOCHS
    decay_rate: float = schedules.DECAY_RATE
    milestones: Sequence[float] = (60, 120, 160)
    lr_factor: float = 0.2
    optimizer: str = "rmsprop"
    momentum: float = 0.9
    weight_decay: float = 1e-5
    ema_decay: Optional[float] = optimizers.PAPER_EMA_DECAY
    # quantization-aware fine-tuning after the float training (training.run.quantization_aware_training)
    qat_epochs: int = 0  # 0: none
    qat_learning_rate: Optional[float] = None  # None: QAT_LR_FRACTION of the float peak rate
    # run
    model_dir: str = "/tmp/keras_skipblock"
    seed: int = 0
    strategy: str = "default"
    tpu: Optional[str] = None
    mixed_precision: bool = False
    steps_per_epoch: Optional[int] = None
    eval_steps: Optional[int] = None
    backup_steps: Optional[int] = None
    run_eagerly: bool = False  # debugging and tests: no graph tracing
    jit_compile: Optional[bool] = None  # None: XLA on GPU/TPU, not on CPU (slower there, slow to compile)
    verbose: int = 1


def build_model(config, input_shape, num_classes):
    """The `BiasLossModel` named `config.model`, with BN momentum, checkpoint and L2 applied."""
    model = registry.build_classifier(
        config.model, input_shape, num_classes, width=config.width, dropout=config.dropout,
        bn_momentum=config.bn_momentum, skip_blocks=config.skip_blocks,
        init_checkpoint=config.init_checkpoint)
    if config.init_checkpoint:
        copied, skipped = load_matching_weights(model, config.init_checkpoint)
        print(f"Fine-tuning from {config.init_checkpoint}: {copied} layers copied, "
              f"{len(skipped)} kept fresh ({', '.join(skipped[:5])}{'...' if len(skipped) > 5 else ''}).")
    optimizers.add_weight_decay(model, config.weight_decay)
    return model


def load_matching_weights(model, checkpoint):
    """Copy weights layer by layer (same name, same shapes) from a saved .keras
    model or the authors' .pth.

    Layers that differ (a classifier with another number of classes) keep
    their fresh initialisation. Returns (copied count, skipped layer names).
    """
    check_model_file("--init_checkpoint", checkpoint, (".keras", ".pth", ".pt"))
    if is_authors_checkpoint(checkpoint):
        skipped = load_authors_weights(model, checkpoint, strict=False)
        with_weights = [layer for layer in model.layers if layer.weights]
        return len(with_weights) - len(skipped), skipped
    source = keras.saving.load_model(checkpoint, compile=False)
    by_name = {layer.name: layer for layer in _compat.flatten_layers(source)}
    copied, skipped = 0, []
    for layer in _compat.flatten_layers(model):
        weights = layer.get_weights()
        if not weights:
            continue
        other = by_name.get(layer.name)
        other_weights = other.get_weights() if other is not None else None
        if other_weights is not None and [w.shape for w in other_weights] == [w.shape for w in weights]:
            layer.set_weights(other_weights)
            copied += 1
        else:
            skipped.append(layer.name)
    return copied, skipped


def peak_learning_rate(config):
    """--learning_rate, or its default: the paper's linearly scaled rate for the paper
    schedule, 0.1 for the others."""
    if config.learning_rate is not None:
        return config.learning_rate
    return schedules.scaled_learning_rate(config.batch_size) if config.lr_schedule == "paper" else 0.1


def build_schedule(config, steps_per_epoch):
    lr = peak_learning_rate(config)
    if config.lr_schedule == "paper":
        return schedules.paper_schedule(
            config.batch_size, steps_per_epoch, peak_learning_rate=lr,
            warmup_epochs=config.warmup_epochs, decay_epochs=config.decay_epochs,
            decay_rate=config.decay_rate,
        )
    if config.lr_schedule == "multistep":
        return schedules.multistep_schedule(lr, config.milestones, steps_per_epoch, config.lr_factor)
    if config.lr_schedule == "cosine":
        warmup = int(config.warmup_epochs * steps_per_epoch)
        total = max(config.epochs * steps_per_epoch - warmup, 1)
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else lr, total, warmup_target=lr if warmup else None, warmup_steps=warmup)
    if config.lr_schedule == "constant":
        return lr
    raise ValueError(f"Unknown lr_schedule {config.lr_schedule!r}; use one of {SCHEDULES}.")


class Classification(Task):
    """Image classification: `BiasLossModel` + `--loss`, top-1/top-5 on the test split."""

    def check(self):
        check_config(self.config)

    def load_data(self):
        from keras_skipblock.data import get_datasets

        config = self.config
        data = get_datasets(
            config.dataset, config.image_size, config.batch_size, data_dir=config.data_dir,
            manual_dir=config.manual_dir, seed=config.seed, validation_size=config.validation_size,
            channels=config.channels, repeat=config.steps_per_epoch is not None, augment=config.augment,
            drop_remainder=True if config.strategy == "tpu" else None,
        )
        if not data.test_size:
            raise InputError(f"{config.data_dir or data.name} has no test images (a class folder with one "
                             "image holds none out): add images (at least 2 per class) or a val/ folder "
                             "beside train/.")
        return data

    def build_model(self, data):
        return build_model(self.config, data.image_shape, data.num_classes)

    def loss(self):
        config = self.config
        return make_loss(config.loss, config.alpha, config.beta, config.normalization,
                         tuple(config.clamp) if config.clamp else None, config.label_smoothing)

    def metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")]

    def fit_data(self, data, model, repeat):
        return data.train, data.validation if data.validation is not None else data.test

    def image_files(self, data):
        return data.files

    def describe(self, model, data, steps_per_epoch, replicas):
        config = self.config
        return (f"{config.model} ({count_params(model):,} parameters) on {data.name}: "
                f"{data.train_size} training images, {data.num_classes} classes, "
                f"{data.image_shape}, global batch {config.batch_size} on {replicas} replica(s), "
                f"{steps_per_epoch} steps/epoch, loss {config.loss}.")

    def fit_state(self, model):
        variance_min = float(model.bias_loss_variance_min.numpy())
        # +inf until Bias Loss sees a batch (and always with ce/focal): JSON has no inf
        return {"bias_loss_variance_min": variance_min if math.isfinite(variance_min) else None}

    def evaluate(self, model, data):
        return model.evaluate(data.test, steps=self.config.eval_steps, verbose=0, return_dict=True)

    def summarize(self, results, data, model, model_dir, chief):
        config = self.config
        fields = {"test_top1": float(results["accuracy"]), "test_top5": float(results["top5"]),
                  "test_loss": float(results["loss"])}
        return fields, (f"{data.name} {config.model} loss={config.loss}: test top-1 "
                        f"{fields['test_top1']:.4f}, top-5 {fields['test_top5']:.4f}")


def train(config):
    """Train, checkpoint, resume, evaluate a classifier (see `training.run.run`).
    Returns the summary dict: test top-1/top-5/loss, epochs, optimizer steps, wall
    time, best.keras, BiasLoss's running minimum."""
    return run(Classification(config))


def check_config(config):
    """Every flag of a classification run in range, before any work (InputError)."""
    from keras_skipblock.data import DATASETS
    from keras_skipblock.models import MODEL_NAMES
    from keras_skipblock.training.loss_factory import LOSSES
    from keras_skipblock.training.strategy import STRATEGIES

    for field, choices in (("dataset", DATASETS), ("loss", LOSSES), ("lr_schedule", SCHEDULES),
                           ("optimizer", ("rmsprop", "sgd")), ("strategy", STRATEGIES)):
        if getattr(config, field) not in choices:
            raise InputError(f"--{field}: unknown value {getattr(config, field)!r}; use one of "
                             f"{', '.join(choices)}.")
    check_training_config(config, MODEL_NAMES)
    if config.channels is not None and config.dataset not in ("fashion_mnist", "digits") \
            and config.channels != 3:
        raise InputError(f"--channels {config.channels}: {config.dataset} images are RGB; "
                         "--channels applies to the grey data sets (fashion_mnist, digits).")
    registry.check_authors_checkpoint(config.model, config.width, config.init_checkpoint)
    if config.dataset == "folder" and not config.data_dir:
        raise InputError("--dataset=folder needs --data_dir=<folder of class sub-folders>.")
    return config  # data folders are checked by their loaders, which say where they looked

