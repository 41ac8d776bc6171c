"""fine_tune: a trained float model (or its `.keras` checkpoint) -> a
quantization-aware model fine-tuned for a few epochs, saved as best_qat.keras."""

import os
import time

import keras
import numpy as np

from keras_skipblock.quantization.transform import calibrate_ranges, freeze_ranges, is_quantized, quantize_model


class _FreezeRanges(keras.callbacks.Callback):
    """Freezes every activation range at the end of epoch `after` (1-based)."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            freeze_ranges(self.model)


def _batches(data, batch_size):
    """Image batches of `data`: a tf.data.Dataset / iterable of (x, y[, w]) or an (x, y) tuple of arrays."""
    if isinstance(data, tuple) and len(data) >= 2 and hasattr(data[0], "shape"):
        x = np.asarray(data[0], "float32")
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size]
        return
    for batch in data:
        yield np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch, "float32")


def _fit_args(data, batch_size):
    if isinstance(data, tuple) and len(data) >= 2 and hasattr(data[0], "shape"):
        return {"x": data[0], "y": data[1], "batch_size": batch_size}
    return {"x": data, "shuffle": False}  # a tf.data pipeline shuffles itself


def fine_tune(model, train_data, validation_data=None, epochs=2, learning_rate=1e-4, model_dir=".",
              loss=None, optimizer=None, batch_size=64, calibration_batches=16, range_epochs=1,
              momentum=0.99, steps_per_epoch=None, metrics=("accuracy",), verbose=1, monitor="val_loss",
              return_model=False, run_eagerly=False, jit_compile="auto", callbacks=()):
    """Quantize a trained float model and fine-tune it with int8 simulated.

    Args:
        model: a trained Keras model (float or already quantized) or the path
            of its `.keras` checkpoint (e.g. a recipe's `best.keras`).
        train_data: a tf.data.Dataset of (images, labels) batches, or an
            (images, labels) tuple of arrays (then `batch_size` applies).
        validation_data: the same kinds; selects the best epoch (val_loss).
        epochs: fine-tuning epochs (the recipes' --qat_epochs).
        learning_rate: a small rate, e.g. 1/10 to 1/100 of the float
            training's; default 1e-4 with Adam.
        model_dir: where best_qat.keras is written.
        loss: default: `BiasLoss()` for a BiasLossModel, else sparse
            categorical cross-entropy on logits.
        optimizer: default Adam(learning_rate).
        calibration_batches: training batches that first set the activation
            ranges (forward passes, no weight change): the starting point is
            the post-training-quantized network.
        range_epochs: the ranges keep moving for this many epochs, then are
            frozen (0: frozen right after calibration; None: never).
        momentum: moving-average momentum of the ranges.
        metrics: compiled with the model (a list of names or metric objects).
        monitor: the validation log that picks the best epoch: "val_loss"
            (lowest) or another one, e.g. "val_accuracy" (highest).
        return_model: also return the QAT model, with the best epoch's
            weights (the recipes' run skeleton evaluates it on the test split).
        run_eagerly, jit_compile: passed to `compile` (the run skeleton passes its own).
        callbacks: run before the checkpoint at each epoch end, e.g. one that adds
            the `monitor` log that `evaluate` does not compute (a detector's val_map).

    Returns a dict: path (best_qat.keras), epochs, best_epoch,
    val_loss / val_accuracy before fine-tuning (the calibrated, PTQ-like
    model) and at the best epoch, history, seconds; with `return_model`,
    (QAT model, that dict).
    """
    start = time.time()
    if isinstance(model, (str, os.PathLike)):
        import keras_skipblock  # noqa: F401  registers BiasLossModel, SkipblockNet layers
        import keras_skipblock.models  # noqa: F401

        model = keras.saving.load_model(model, compile=False)
    from keras_skipblock.losses import BiasLoss
    from keras_skipblock.bias_loss_model import BiasLossModel

    qat = model if is_quantized(model) else quantize_model(model, momentum=momentum)
    if loss is None:
        loss = BiasLoss() if isinstance(qat, BiasLossModel) else keras.losses.SparseCategoricalCrossentropy(
            from_logits=True)
    qat.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate), loss=loss,
                metrics=list(metrics) if metrics else None, run_eagerly=run_eagerly, jit_compile=jit_compile)
    if calibration_batches:
        calibrate_ranges(qat, _batches(train_data, batch_size), steps=calibration_batches)
    if range_epochs == 0:
        freeze_ranges(qat)

    def evaluate():
        if validation_data is None:
            return {}
        args = _fit_args(validation_data, batch_size)
        args.pop("shuffle", None)
        return qat.evaluate(**args, verbose=0, return_dict=True)

    lowest = monitor.endswith("loss")
    mode = "min" if lowest else "max"
    before = evaluate()
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, "best_qat.keras")
    callbacks = list(callbacks)
    if range_epochs:
        callbacks.append(_FreezeRanges(range_epochs))
    if validation_data is not None:
        callbacks.append(keras.callbacks.ModelCheckpoint(path, monitor=monitor, save_best_only=True, mode=mode))
        fit_validation = validation_data
        if isinstance(validation_data, tuple):
            fit_validation = tuple(validation_data[:2])
    else:
        fit_validation = None
    history = qat.fit(**_fit_args(train_data, batch_size), validation_data=fit_validation, epochs=epochs,
                      steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose)
    hist = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    if monitor in hist and os.path.exists(path) and np.isfinite(hist[monitor]).any():
        values = np.where(np.isfinite(hist[monitor]), hist[monitor], np.inf if lowest else -np.inf)
        best_epoch = int((np.argmin if lowest else np.argmax)(values)) + 1
        if best_epoch != len(hist[monitor]):  # the model in memory holds the last epoch's weights
            qat.load_weights(path)
    else:  # no validation, or no epoch with a finite `monitor` (nothing checkpointed): the last epoch
        best_epoch = len(history.epoch) or epochs
        qat.save(path)
    summary = {"path": path, "epochs": epochs, "best_epoch": best_epoch, "history": hist,
               "seconds": round(time.time() - start, 1)}
    for key in ("loss", "accuracy"):
        if key in before:
            summary[f"val_{key}_before"] = float(before[key])
        if f"val_{key}" in hist:
            summary[f"val_{key}"] = hist[f"val_{key}"][best_epoch - 1]
    return (qat, summary) if return_model else summary
