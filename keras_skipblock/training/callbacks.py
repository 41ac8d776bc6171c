"""Callbacks: checkpoints of the EMA weights, and the standard set of a run."""

import os

import keras

BACKUP_DIR = "backup"
BEST_MODEL = "best.keras"
HISTORY_CSV = "history.csv"
TENSORBOARD_DIR = "logs"


def has_ema(model):
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    return bool(optimizer is not None and getattr(optimizer, "use_ema", False))


class EMAModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that saves the EMA weights (the ones validation saw).

    Our own because SwapEMAWeights either validates on the EMA weights
    (swap_on_epoch=False) and ModelCheckpoint then saves the raw ones, or
    swaps at epoch end (swap_on_epoch=True) and validation sees the raw ones.
    """

    def set_model(self, model):
        super().set_model(model)
        self._swapper = keras.callbacks.SwapEMAWeights()
        self._swapper.set_model(model)

    def _save_model(self, epoch, batch, logs):
        if not has_ema(self.model) or not getattr(self.model.optimizer, "built", False):
            return super()._save_model(epoch, batch, logs)
        self._swapper._swap_variables()
        try:
            return super()._save_model(epoch, batch, logs)
        finally:
            self._swapper._swap_variables()


def standard_callbacks(model_dir, monitor="val_accuracy", ema=True, backup_steps=None,
                       write_outputs=True, tensorboard=True):
    """[BackupAndRestore, SwapEMAWeights, EMAModelCheckpoint, CSVLogger, TensorBoard].

    Order matters: the backup (raw weights + optimizer + EMA + BiasLoss
    state) is written at epoch end before anything swaps weights; validation
    runs on the EMA weights (SwapEMAWeights swaps them in around it); the
    best model file holds the EMA weights.
    backup_steps: also back up every that many steps (long epochs).
    """
    callbacks = [
        keras.callbacks.BackupAndRestore(
            os.path.join(model_dir, BACKUP_DIR),
            save_freq=backup_steps or "epoch",
            double_checkpoint=True,  # a kill while writing leaves the previous backup usable
            delete_checkpoint=False,  # a finished run started again just evaluates
        ),
        keras.callbacks.TerminateOnNaN(),
    ]
    if ema:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
    if write_outputs:
        callbacks += [
            EMAModelCheckpoint(os.path.join(model_dir, BEST_MODEL), monitor=monitor,
                               mode="max", save_best_only=True),
            keras.callbacks.CSVLogger(os.path.join(model_dir, HISTORY_CSV), append=True),
        ]
        if tensorboard and _tensorboard_installed():
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(model_dir, TENSORBOARD_DIR),
                                                         update_freq="epoch", profile_batch=0))
    return callbacks


def _tensorboard_installed():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print("WARNING: the tensorboard package is not installed; no TensorBoard logs "
              "(pip install tensorboard).")
        return False
    return True
