"""The one training driver that every recipe calls: `train(TrainConfig(...))`."""

import dataclasses
import json
import math
import os
import time
from typing import Optional, Sequence

import keras
import tensorflow as tf

from keras_skipblock import _compat
from keras_skipblock.models.authors_weights import is_authors_checkpoint, load_authors_weights
from keras_skipblock.models.torch_state_dict import CheckpointError
from keras_skipblock.training import callbacks as callbacks_lib
from keras_skipblock.training import optimizers, schedules
from keras_skipblock.training.loss_factory import make_loss
from keras_skipblock.training.strategy import get_strategy, is_chief
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


def _model_kwargs(config):
    name = config.model.lower()
    kwargs = {}
    if name.startswith("skipblocknet"):
        for key in ("width", "dropout", "bn_momentum"):
            if getattr(config, key) is not None:
                kwargs[key] = getattr(config, key)
        kwargs["skip_blocks"] = config.skip_blocks
    elif name.startswith("mobilenet"):
        if config.width is not None:
            kwargs["alpha"] = config.width
        if config.dropout is not None and name.startswith("mobilenet_v3"):
            kwargs["dropout"] = config.dropout
    elif name == "efficientnet_b0" and config.dropout is not None:
        kwargs["dropout"] = config.dropout
    return kwargs


def build_model(config, input_shape, num_classes):
    """The `BiasLossModel` named `config.model`, with BN momentum, L2 and checkpoint applied."""
    from keras_skipblock.models import get_model

    kwargs = _model_kwargs(config)
    if is_authors_checkpoint(config.init_checkpoint):
        _check_authors_checkpoint_model(config)
        # The data pipelines feed [-1, 1]; the authors' weights expect ImageNet-normalised
        # input: the model takes [-1, 1] and rescales it inside (InputScaling).
        kwargs.update(include_preprocessing=True, input_range=(-1, 1), normalization="authors")
    model = get_model(config.model, input_shape=input_shape, num_classes=num_classes, **kwargs)
    if config.bn_momentum is not None:
        optimizers.set_bn_momentum(model, config.bn_momentum)
    if config.init_checkpoint:
        copied, skipped = load_matching_weights(model, config.init_checkpoint)
        print(f"Fine-tuning from {config.init_checkpoint}: {copied} layers copied, "
              f"{len(skipped)} kept fresh ({', '.join(skipped[:5])}{'...' if len(skipped) > 5 else ''}).")
    optimizers.add_weight_decay(model, config.weight_decay)
    return model


def _check_authors_checkpoint_model(config):
    width = _model_kwargs(config).get("width", 1.0)
    if config.model.lower() != "skipblocknet_m" or width != 1.0:
        raise CheckpointError(f"--init_checkpoint {config.init_checkpoint} holds the authors' SkipblockNet-M "
                              f"at width 1.0; use --model skipblocknet_m without --width (got {config.model}).")


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


def build_schedule(config, steps_per_epoch):
    lr = config.learning_rate
    if config.lr_schedule == "paper":
        return schedules.paper_schedule(
            config.batch_size, steps_per_epoch, peak_learning_rate=lr,
            warmup_epochs=config.warmup_epochs, decay_epochs=config.decay_epochs,
            decay_rate=config.decay_rate,
        )
    lr = lr if lr is not None else 0.1
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


def _set_precision(config):
    if not config.mixed_precision:
        return
    policy = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)


def _jit_compile(config):
    if config.jit_compile is not None:
        return config.jit_compile
    accelerated = config.strategy == "tpu" or bool(tf.config.list_logical_devices("GPU"))
    return "auto" if accelerated else False


def train(config):
    """Train, checkpoint, resume, evaluate. Returns a dict of the run's results.

    - `config.model_dir` receives backup/ (resume state), best.keras (EMA
      weights of the best validation epoch), history.csv, logs/ (TensorBoard)
      and summary.json. Started again with the same model_dir, the run
      continues from its last backup: weights, optimizer slots and step,
      EMA weights and BiasLoss's running minimum.
    - Ends by evaluating best.keras on the test split and printing one
      summary line.
    """
    start = time.time()
    check_config(config)  # before anything is read, built or written
    strategy = get_strategy(config.strategy, config.tpu)  # first: multi-worker needs it early
    keras.utils.set_random_seed(config.seed)
    _set_precision(config)
    chief = is_chief(strategy)
    model_dir = config.model_dir if chief else os.path.join(
        config.model_dir, f"worker_{strategy.cluster_resolver.task_id}")

    from keras_skipblock.data import get_datasets

    repeat = config.steps_per_epoch is not None
    data = get_datasets(
        config.dataset, config.image_size, config.batch_size, data_dir=config.data_dir,
        manual_dir=config.manual_dir, seed=config.seed, validation_size=config.validation_size,
        channels=config.channels, repeat=repeat, augment=config.augment,
        drop_remainder=True if config.strategy == "tpu" else None,
    )
    check_enough_data(config, data)
    steps_per_epoch = config.steps_per_epoch or max(data.train_size // config.batch_size, 1)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise InputError(f"--batch_size {config.batch_size} (global) must be divisible by the "
                         f"{replicas} replicas of --strategy {config.strategy}.")
    os.makedirs(model_dir, exist_ok=True)  # only now: a refused run leaves nothing behind

    with strategy.scope():
        model = build_model(config, data.image_shape, data.num_classes)
        optimizer = optimizers.build_optimizer(
            config.optimizer, build_schedule(config, steps_per_epoch),
            ema_decay=config.ema_decay, momentum=config.momentum)
        loss = make_loss(config.loss, config.alpha, config.beta, config.normalization,
                         tuple(config.clamp) if config.clamp else None, config.label_smoothing)
        model.compile(
            optimizer=optimizer, loss=loss,
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                     keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")],
            jit_compile=False if config.run_eagerly else _jit_compile(config),
            run_eagerly=config.run_eagerly,
        )
    if chief:  # the other workers write only their backup, under worker_<i>/
        write_json(os.path.join(model_dir, "config.json"), dataclasses.asdict(config))
    if config.verbose:
        print(f"{config.model} ({model.count_params():,} parameters) on {data.name}: "
              f"{data.train_size} training images, {data.num_classes} classes, "
              f"{data.image_shape}, global batch {config.batch_size} on {replicas} replica(s), "
              f"{steps_per_epoch} steps/epoch, loss {config.loss}.")

    validation = data.validation if data.validation is not None else data.test
    callbacks = callbacks_lib.standard_callbacks(
        model_dir, ema=bool(config.ema_decay), backup_steps=config.backup_steps, chief=chief)
    from keras_skipblock.data.folder import corrupt_images_named

    with corrupt_images_named(data.files):
        history = model.fit(
            data.train,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch if repeat else None,
            validation_data=validation,
            validation_steps=config.eval_steps,
            shuffle=False,  # the tf.data pipeline shuffles; Keras warns on shuffle=True
            callbacks=callbacks,
            verbose=config.verbose,
        )

        optimizer_steps = int(model.optimizer.iterations.numpy())
        variance_min = float(model.bias_loss_variance_min.numpy())
        best_path = os.path.join(config.model_dir, callbacks_lib.BEST_MODEL)
        callbacks_lib.restore_best_weights(model, callbacks, best_path)  # EMA weights of the best epoch
        results = model.evaluate(data.test, steps=config.eval_steps, verbose=0, return_dict=True)
    if not os.path.exists(best_path):
        best_path = None  # e.g. no epoch had a finite validation loss: claim no file
    epochs_done = epochs_completed(history, model_dir)
    summary = {
        "model": config.model, "loss": config.loss, "dataset": data.name,
        "test_top1": float(results["accuracy"]), "test_top5": float(results["top5"]),
        "test_loss": float(results["loss"]),
        "epochs": int(epochs_done), "optimizer_steps": optimizer_steps,
        "wall_time_s": round(time.time() - start, 1), "best_model": best_path,
        # +inf until Bias Loss sees a batch (and always with ce/focal): JSON has no inf
        "bias_loss_variance_min": variance_min if math.isfinite(variance_min) else None,
    }
    if chief:
        write_json(os.path.join(model_dir, "summary.json"), summary)
    print(f"SUMMARY {data.name} {config.model} loss={config.loss}: test top-1 "
          f"{summary['test_top1']:.4f}, top-5 {summary['test_top5']:.4f}, "
          f"epochs {summary['epochs']}, wall time {summary['wall_time_s']:.0f} s "
          f"(this process), model {best_path or 'not saved (no epoch was checkpointed)'}",
          flush=True)
    return summary


def epochs_completed(history, model_dir):
    """Epochs trained in all: this fit's last epoch, or, when a finished run
    is started again and fit trains nothing, the rows of the history CSV."""
    if history.epoch:
        return history.epoch[-1] + 1
    path = os.path.join(model_dir, callbacks_lib.HISTORY_CSV)
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max(sum(1 for _ in f) - 1, 0)


def json_safe(value):
    """`value` with NaN and +-inf floats as None: strict JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(json_safe(value), f, indent=2, default=str, allow_nan=False)


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
    if is_authors_checkpoint(config.init_checkpoint):
        _check_authors_checkpoint_model(config)
    if config.dataset == "folder" and not config.data_dir:
        raise InputError("--dataset=folder needs --data_dir=<folder of class sub-folders>.")
    return config  # data folders are checked by their loaders, which say where they looked


def check_enough_data(config, data):
    """Enough images for the batch size: training drops incomplete batches, so without
    --steps_per_epoch (which repeats the data) fewer images than one batch train nothing."""
    if data.train_size < config.batch_size and config.steps_per_epoch is None:
        raise InputError(f"--batch_size {config.batch_size} is larger than the {data.train_size} "
                         f"training images of {data.name}: every batch would be incomplete and "
                         "dropped, and nothing trained. Lower --batch_size.")
    if not data.test_size:
        raise InputError(f"{config.data_dir or data.name} has no test images (a class folder with one "
                         "image holds none out): add images (at least 2 per class) or a val/ folder "
                         "beside train/.")
