"""Callbacks: checkpoints of the EMA weights, backups every worker resumes from, the standard set of a run."""

import contextlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_skipblock import _compat
from keras_skipblock.training.strategy import is_multi_worker

BACKUP_DIR = "backup"
BEST_MODEL = "best.keras"
HISTORY_CSV = "history.csv"
TENSORBOARD_DIR = "logs"


def has_ema(model):
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    return bool(optimizer is not None and getattr(optimizer, "use_ema", False))


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights with every variable swapped in one compiled function.

    Our own swap because Keras' swaps eagerly, with three distributed updates
    per variable (seconds per swap under a tf.distribute strategy), and by
    adding and subtracting, which leaves rounding in the weights swapped back.
    """

    def __init__(self, swap_on_epoch=False):
        super().__init__(swap_on_epoch=swap_on_epoch)
        self._swap_functions = {}

    def _tf_swap_variables(self, optimizer):
        if id(optimizer) not in self._swap_functions:
            self._swap_functions[id(optimizer)] = tf.function(lambda: _swap_with_averages(optimizer))
        self._swap_functions[id(optimizer)]()


def _swap_with_averages(optimizer):
    def swap(variable, average):
        value = tf.identity(variable)  # read before either is written
        variable.assign(average)
        average.assign(value)

    strategy = _compat.optimizer_strategy(optimizer) or tf.distribute.get_strategy()
    for variable, average in _compat.ema_pairs(optimizer):
        strategy.extended.update(variable.value, swap, args=(average.value,))


@contextlib.contextmanager
def ema_weights(model, swapper=None):
    """Inside the block `model` holds the optimizer's EMA weights; its own come back on
    exit, also on an error. A no-op without EMA or before the optimizer is built.
    `swapper`: a SwapEMAWeights set on `model`, kept by a caller that swaps often
    (its compiled swap is traced once)."""
    swap = has_ema(model) and getattr(model.optimizer, "built", False)
    if swap and swapper is None:
        swapper = SwapEMAWeights()
        swapper.set_model(model)
    if swap:
        _compat.swap_ema_weights(swapper)
    try:
        yield
    finally:
        if swap:
            _compat.swap_ema_weights(swapper)


class EMAModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that saves the EMA weights (the ones validation saw).

    Our own because SwapEMAWeights either validates on the EMA weights
    (swap_on_epoch=False) and ModelCheckpoint then saves the raw ones, or
    swaps at epoch end (swap_on_epoch=True) and validation sees the raw ones.
    It also keeps the best weights in memory (`best_weights`); with
    `write=False` (workers other than the chief) it only does that, so that
    every worker evaluates the same weights at the end and only the chief
    writes the file.
    """

    def __init__(self, filepath, *args, write=True, **kwargs):
        super().__init__(filepath, *args, **kwargs)
        self.write = write
        self.best_weights = None

    def set_model(self, model):
        super().set_model(model)
        self._swapper = SwapEMAWeights()
        self._swapper.set_model(model)

    def _save_model(self, epoch, batch, logs):
        with ema_weights(self.model, self._swapper):
            path = _compat.checkpoint_file_path(self, epoch, batch, logs)
            if _compat.checkpoint_should_save(self, epoch, batch, logs, path):
                self.best_weights = self.model.get_weights()
                if self.write:
                    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                    save = self.model.save_weights if self.save_weights_only else self.model.save
                    save(path, overwrite=True)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore whose workers all restore the same backup.

    Each worker writes its own backup (the latest and, with
    `double_checkpoint`, the one before). A kill can land between two
    workers' writes of the same step, leaving one a backup ahead; each
    restoring its latest would train replicas holding different weights.
    Here the workers exchange which backups they hold and all restore the
    newest one every worker has. One worker: Keras' own restore.
    """

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        if not is_multi_worker(strategy):
            return super().on_train_begin(logs)
        held = self._backups_held()
        every_worker = _exchange(strategy, sorted(held))
        common = set.intersection(*every_worker)
        if common:
            newest = max(common)
            self._restore(held[newest], newest)
        elif any(every_worker):
            raise RuntimeError(
                "The workers' backups have no step in common (backed-up (epoch, batch) per "
                f"worker: {[sorted(w) for w in every_worker]}), so they cannot resume together. "
                f"Give every worker the same --model_dir it had (this worker's backup: "
                f"{self.backup_dir}), or delete the backup/ folders to start over.")

    def _backups_held(self):
        """{(epoch, batch): weights file} of this worker's readable backups.

        Keras writes the weights before the metadata: a latest backup whose
        metadata equals the previous one's was cut off mid-write, and the
        previous one (listed second, so it wins) holds that step.
        """
        held = {}
        for weights, metadata in _compat.backup_files(self):
            key = _backup_key(weights, metadata)
            if key is not None:
                held[key] = weights
        return held

    def _restore(self, weights, key):
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        with tempfile.TemporaryDirectory() as scratch:
            if not weights.endswith(".weights.h5"):  # the previous backup, "....h5.bkp"
                weights = shutil.copy(weights, os.path.join(scratch, "previous.weights.h5"))
            self.model.load_weights(weights)
        _compat.set_initial_epoch(self.model, key[0])


def _backup_key(weights, metadata):
    import h5py

    try:
        with open(metadata) as f:
            state = json.load(f)
        with h5py.File(weights, "r"):
            pass
        return int(state["epoch"]), int(state["batch"])
    except (OSError, ValueError, KeyError):
        return None


def _exchange(strategy, keys):
    """Every worker's `keys` ((epoch, batch) pairs, at most 2), as a list of sets."""
    local = np.full((2, 2), -1, dtype="int64")
    for row, key in enumerate(keys):
        local[row] = key
    local = tf.constant(local.reshape(1, 4))

    def gather():
        return tf.distribute.get_replica_context().all_gather(local, axis=0)

    gathered = strategy.experimental_local_results(strategy.run(gather))[0].numpy()
    return [{(int(e), int(b)) for e, b in row.reshape(2, 2) if e >= 0} for row in gathered]


def restore_best_weights(model, callbacks, best_path):
    """Put the best epoch's EMA weights into `model` for the final evaluation.

    Those the EMAModelCheckpoint in `callbacks` kept during this fit; else
    `best_path` (a finished run started again trains nothing); else the EMA
    weights as they are now. With several workers, all then take the
    chief's: Keras 3 keeps BatchNormalization's moving statistics per worker
    (they are not aggregated), and only the chief may see `best_path`.
    Returns where the weights came from.
    """
    checkpoint = next((c for c in callbacks if isinstance(c, EMAModelCheckpoint)), None)
    if checkpoint is not None and checkpoint.best_weights is not None:
        model.set_weights(checkpoint.best_weights)
        source = "best epoch"
    elif os.path.exists(best_path):
        model.load_weights(best_path)
        source = best_path
    elif has_ema(model) and model.optimizer.built:
        swapper = SwapEMAWeights()
        swapper.set_model(model)
        _compat.swap_ema_weights(swapper)
        source = "EMA"
    else:
        source = "last step"
    if is_multi_worker(model.distribute_strategy):
        model.set_weights(_chief_values(model.distribute_strategy, model.get_weights()))
    return source


def _chief_values(strategy, arrays):
    """The first replica's (the chief's) `arrays` on every worker: one
    all-reduce sum to which every other replica adds zeros."""
    values = [tf.constant(a) for a in arrays]

    @tf.function
    def exchange():
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        return context.all_reduce("SUM", [tf.where(first, v, tf.zeros_like(v)) for v in values])

    return [t.numpy() for t in strategy.experimental_local_results(strategy.run(exchange))[0]]


def standard_callbacks(model_dir, monitor="val_accuracy", ema=True, backup_steps=None,
                       write_outputs=True, tensorboard=True, chief=True):
    """[BackupAndRestore, TerminateOnNaN, SwapEMAWeights, EMAModelCheckpoint, CSVLogger, TensorBoard].

    Order matters: the backup (raw weights + optimizer + EMA + BiasLoss
    state) is written at epoch end before anything swaps weights; validation
    runs on the EMA weights (SwapEMAWeights swaps them in around it); the
    best model file holds the EMA weights.
    backup_steps: also back up every that many steps (long epochs).
    chief: False for the other workers of a multi-worker run: they write
    their backup only, and keep the best weights in memory.
    """
    callbacks = [
        BackupAndRestore(
            os.path.join(model_dir, BACKUP_DIR),
            save_freq=backup_steps or "epoch",
            double_checkpoint=True,  # a kill while writing leaves the previous backup usable
            delete_checkpoint=False,  # a finished run started again just evaluates
        ),
        keras.callbacks.TerminateOnNaN(),
    ]
    if ema:
        callbacks.append(SwapEMAWeights(swap_on_epoch=False))
    if write_outputs:
        callbacks.append(EMAModelCheckpoint(os.path.join(model_dir, BEST_MODEL), monitor=monitor,
                                            mode="max", save_best_only=True, write=chief))
    if write_outputs and chief:
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(model_dir, HISTORY_CSV), append=True))
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
