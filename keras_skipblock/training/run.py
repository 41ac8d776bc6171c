"""The one run skeleton of every task: config -> data -> model -> compile ->
callbacks -> fit -> restore best -> evaluate -> summary.

`run(task)` does what classification (`training.driver.train`) and detection
(`detection.train.train_detector`) share: checks, strategy, seed, precision,
model_dir, optimizer and schedule, the standard callbacks (resume, EMA,
best checkpoint, logs), fit, the best epoch's EMA weights, summary.json and
the SUMMARY line, and, with `config.qat_epochs`, the quantization-aware
fine-tune after it (best_qat.keras, SUMMARY_QAT, summary.json's "qat"). A
`Task` supplies what differs: its checks, data, model, loss, metrics, extra
callbacks, evaluation and summary.
"""

import dataclasses
import json
import math
import os
import time

import keras
import tensorflow as tf

from keras_skipblock.training import callbacks as callbacks_lib
from keras_skipblock.training import optimizers
from keras_skipblock.validation import InputError, check_number

# --qat_learning_rate's default: this fraction of the float run's peak rate, constant (the float
# schedule's peak, not its end). fine_tune's measured runs used 1e-4 to 3e-4 with Adam; with the run's
# own optimizer, 1/100 of the peak (5e-4 for recipes/fashion_mnist.py's SGD 0.05) is the small,
# safe end of the usual 1/10 - 1/100 for fine-tuning a trained network.
QAT_LR_FRACTION = 0.01


class Task:
    """What a task gives `run`. Subclasses override the methods that raise."""

    monitor = "val_accuracy"  # the validation metric the best checkpoint maximises

    def __init__(self, config):
        self.config = config

    def check(self):
        """Every flag in range, before anything is read, built or written (InputError)."""
        raise NotImplementedError

    def load_data(self):
        """The task's data, checked; needs `.name` and `.train_size`."""
        raise NotImplementedError

    def build_model(self, data):
        """The model, inside the strategy's scope, weight decay added."""
        raise NotImplementedError

    def loss(self):
        raise NotImplementedError

    def metrics(self):
        return None

    def jit_compile(self, strategy):
        """XLA on GPU/TPU, not on CPU (slower there, slow to compile); config.jit_compile wins."""
        config = self.config
        if config.run_eagerly:
            return False
        if config.jit_compile is not None:
            return config.jit_compile
        accelerated = config.strategy == "tpu" or bool(tf.config.list_logical_devices("GPU"))
        return "auto" if accelerated else False

    def fit_data(self, data, model, repeat):
        """(training, validation) datasets for `fit`."""
        raise NotImplementedError

    def add_callbacks(self, callbacks, data, model):
        """Insert the task's own callbacks into the standard ones (in place)."""

    def validation_callbacks(self, data):
        """Callbacks that add `monitor` to the epoch logs where Keras' evaluation does not
        compute it (a detector's val_map); the quantization-aware fine-tune runs them before
        its checkpoint."""
        return []

    def image_files(self, data):
        """The files a decoding error is reported by name against."""
        return None

    def describe(self, model, data, steps_per_epoch, replicas):
        """The line printed before training (verbose)."""
        raise NotImplementedError

    def fit_state(self, model):
        """Summary fields read after fit, before the best weights are restored."""
        return {}

    def evaluate(self, model, data):
        """Test results of the restored best weights."""
        raise NotImplementedError

    def summarize(self, results, data, model, model_dir, chief):
        """(summary fields, the text after "SUMMARY ") of the test results; may write files."""
        raise NotImplementedError


def run(task):
    """Train, checkpoint, resume, evaluate `task`. Returns the summary dict.

    - `config.model_dir` receives backup/ (resume state), best.keras (EMA
      weights of the best validation epoch), history.csv, logs/ (TensorBoard),
      config.json and summary.json. Started again with the same model_dir,
      the run continues from its last backup: weights, optimizer slots and
      step, EMA weights and BiasLoss's running minimum.
    - Ends by evaluating the best weights on the test split and printing one
      SUMMARY line.
    """
    from keras_skipblock.data.folder import corrupt_images_named
    from keras_skipblock.training.driver import build_schedule
    from keras_skipblock.training.strategy import get_strategy, is_chief

    start = time.time()
    config = task.config
    task.check()  # before anything is read, built or written
    check_qat(task)
    strategy = get_strategy(config.strategy, config.tpu)  # first: multi-worker needs it early
    keras.utils.set_random_seed(config.seed)
    set_precision(config.mixed_precision)
    chief = is_chief(strategy)
    model_dir = config.model_dir if chief else os.path.join(
        config.model_dir, f"worker_{strategy.cluster_resolver.task_id}")

    data = task.load_data()
    check_enough_data(config, data)
    repeat = config.steps_per_epoch is not None
    steps_per_epoch = config.steps_per_epoch or max(data.train_size // config.batch_size, 1)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise InputError(f"--batch_size {config.batch_size} (global) must be divisible by the "
                         f"{replicas} replicas of --strategy {config.strategy}.")
    os.makedirs(model_dir, exist_ok=True)  # only now: a refused run leaves nothing behind

    with strategy.scope():
        model = task.build_model(data)
        optimizer = optimizers.build_optimizer(
            config.optimizer, build_schedule(config, steps_per_epoch),
            ema_decay=config.ema_decay, momentum=config.momentum)
        model.compile(optimizer=optimizer, loss=task.loss(), metrics=task.metrics(),
                      jit_compile=task.jit_compile(strategy), run_eagerly=config.run_eagerly)
    if chief:  # the other workers write only their backup, under worker_<i>/
        write_json(os.path.join(model_dir, "config.json"), dataclasses.asdict(config))
    if config.verbose:
        print(task.describe(model, data, steps_per_epoch, replicas), flush=True)

    train, validation = task.fit_data(data, model, repeat)
    callbacks = callbacks_lib.standard_callbacks(
        model_dir, monitor=task.monitor, ema=bool(config.ema_decay), backup_steps=config.backup_steps,
        chief=chief)
    task.add_callbacks(callbacks, data, model)
    with corrupt_images_named(task.image_files(data)):
        history = model.fit(
            train,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch if repeat else None,
            validation_data=validation,
            validation_steps=config.eval_steps,
            shuffle=False,  # the tf.data pipeline shuffles; Keras warns on shuffle=True
            callbacks=callbacks,
            verbose=config.verbose,
        )
        optimizer_steps = int(model.optimizer.iterations.numpy())
        state = task.fit_state(model)
        best_path = os.path.join(config.model_dir, callbacks_lib.BEST_MODEL)
        callbacks_lib.restore_best_weights(model, callbacks, best_path)  # EMA weights of the best epoch
        results = task.evaluate(model, data)
    if not os.path.exists(best_path):
        best_path = None  # e.g. no epoch had a finite validation metric: claim no file
    fields, line = task.summarize(results, data, model, model_dir, chief)
    summary = {"model": config.model, "loss": config.loss, "dataset": data.name, **fields,
               "epochs": int(epochs_completed(history, model_dir)), "optimizer_steps": optimizer_steps,
               "wall_time_s": round(time.time() - start, 1), "best_model": best_path, **state}
    if chief:
        write_json(os.path.join(model_dir, "summary.json"), summary)
    print(f"SUMMARY {line}, epochs {summary['epochs']}, wall time {summary['wall_time_s']:.0f} s "
          f"(this process), model {best_path or 'not saved (no epoch was checkpointed)'}", flush=True)
    if config.qat_epochs:
        summary["qat"] = quantization_aware_training(task, model, data, model_dir, chief, repeat, steps_per_epoch,
                                                     task.jit_compile(strategy))
        if chief:
            write_json(os.path.join(model_dir, "summary.json"), summary)
    return summary


def check_qat(task):
    """--qat_epochs and --qat_learning_rate in range, and the task able to fine-tune quantized (InputError)."""
    config = task.config
    epochs = config.qat_epochs
    check_number("--qat_epochs", epochs, low=0, integer=True,
                 fix="It counts quantization-aware fine-tuning epochs after the float training; 0: none.")
    check_number("--qat_learning_rate", config.qat_learning_rate, low=0, low_open=True,
                 allow_none=True)
    if not epochs and config.qat_learning_rate is not None:
        raise InputError("--qat_learning_rate is the rate of the quantization-aware epochs: give --qat_epochs "
                         "N > 0 too, or leave it out.")


def qat_learning_rate(config):
    """--qat_learning_rate, or QAT_LR_FRACTION of the float run's peak rate."""
    from keras_skipblock.training.driver import peak_learning_rate

    if config.qat_learning_rate is not None:
        return config.qat_learning_rate
    return QAT_LR_FRACTION * peak_learning_rate(config)


def quantization_aware_training(task, model, data, model_dir, chief, repeat, steps_per_epoch, jit_compile=False):
    """Fine-tune `model` (the run's restored best weights: EMA weights of the best epoch)
    quantization-aware for config.qat_epochs epochs with the task's data, loss, metrics and
    validation metric, through `quantization.fine_tune`: writes best_qat.keras, evaluates it on the
    test split like the float model, prints the SUMMARY_QAT line. Returns summary.json's "qat" section.

    The optimizer is the run's kind at a constant `qat_learning_rate(config)`, without EMA; the
    run's weight decay applies to the quantized kernels too."""
    from keras_skipblock.data.folder import corrupt_images_named
    from keras_skipblock.quantization import fine_tune, quantize_model

    start = time.time()
    config = task.config
    rate = qat_learning_rate(config)
    optimizer = optimizers.build_optimizer(config.optimizer, rate, ema_decay=None, momentum=config.momentum)
    train, validation = task.fit_data(data, model, repeat)
    quantized = quantize_model(model)
    optimizers.add_weight_decay(quantized, config.weight_decay)
    with corrupt_images_named(task.image_files(data)):
        qat, tuned = fine_tune(
            quantized, train, validation, epochs=config.qat_epochs, model_dir=model_dir, loss=task.loss(),
            optimizer=optimizer, batch_size=config.batch_size, steps_per_epoch=steps_per_epoch if repeat else None,
            metrics=task.metrics(), monitor=task.monitor, verbose=config.verbose, return_model=True,
            run_eagerly=config.run_eagerly, jit_compile=jit_compile, callbacks=task.validation_callbacks(data))
        results = task.evaluate(qat, data)
    fields, line = task.summarize(results, data, qat, model_dir, chief)
    section = {**fields, "epochs": config.qat_epochs, "best_epoch": tuned["best_epoch"],
               "learning_rate": rate, "optimizer": config.optimizer, "best_model": tuned["path"],
               "monitor": task.monitor, "history": tuned["history"],
               "wall_time_s": round(time.time() - start, 1)}
    for key in ("val_loss_before", "val_accuracy_before", "val_loss", "val_accuracy"):
        if key in tuned:
            section[key] = tuned[key]
    print(f"SUMMARY_QAT {line}, qat epochs {config.qat_epochs} at learning rate {rate:g}, best epoch "
          f"{tuned['best_epoch']}, wall time {section['wall_time_s']:.0f} s, model {tuned['path']}", flush=True)
    return section


def set_precision(mixed_precision):
    if not mixed_precision:
        return
    policy = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)


def check_enough_data(config, data):
    """Enough images for the batch size: training drops incomplete batches, so without
    --steps_per_epoch (which repeats the data) fewer images than one batch train nothing."""
    if data.train_size < config.batch_size and config.steps_per_epoch is None:
        raise InputError(f"--batch_size {config.batch_size} is larger than the {data.train_size} "
                         f"training images of {data.name}: every batch would be incomplete and "
                         "dropped, and nothing trained. Lower --batch_size.")


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
