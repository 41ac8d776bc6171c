"""One worker of tests/test_multi_worker.py: `train(TrainConfig)` under
MultiWorkerMirroredStrategy, the cluster in TF_CONFIG.

    multi_worker_train.py <record_dir> '<TrainConfig fields as JSON>'

Records for the test, in <record_dir>, as worker<i>_*.npz / .json:
- step<n>: what training step n fed BiasLoss on this worker (its share of
  the global batch's features, the weights it used, the running minimum
  before and after), written from inside the compiled step;
- state<n>: the training state after step n (and its backup, if any),
  for n <= RECORD_STATES_UNTIL;
- restored: the training state when fit starts (after BackupAndRestore);
- evaluated: the weights the final evaluation used;
- result.json: what `train` returned.
With PAUSE_AFTER_STEP=n it stops after step n (its backup written) and
waits to be killed.
The driver, strategy, callbacks and loss are the package's own; only the
recording is added here, and the model is small_skipblocknet's.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_skipblock.losses import BiasLoss  # noqa: E402
from keras_skipblock.bias_loss_model import BiasLossModel  # noqa: E402
from keras_skipblock.training import callbacks as callbacks_lib  # noqa: E402
from keras_skipblock.training import driver  # noqa: E402

import small_skipblocknet  # noqa: E402  (beside this script)

keras.config.disable_traceback_filtering()  # whole tracebacks in the logs a failing test shows
record_dir = sys.argv[1]
config = driver.TrainConfig(**json.loads(sys.argv[2]))
worker = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
os.makedirs(record_dir, exist_ok=True)


def record_path(name):
    return os.path.join(record_dir, f"worker{worker}_{name}")


small_skipblocknet.install()  # SkipblockNet's blocks in one stage: 63 variables, not XS's 302


# -- what each training step fed BiasLoss ------------------------------------

_per_sample = BiasLoss.per_sample
_compute_loss = BiasLossModel.compute_loss


def per_sample(self, *args, **kwargs):
    losses, bias = _per_sample(self, *args, **kwargs)
    self._recorded_bias = bias  # symbolic, read by compute_loss below while tracing
    return losses, bias


def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    before = tf.identity(self.bias_loss_variance_min.value)
    total = _compute_loss(self, x, y, y_pred, sample_weight, training)
    if not training:
        return total

    def save(step, features, labels, weights, variance_min_before, variance_min_after):
        np.savez(record_path(f"step{int(step)}.npz"), features=features, labels=labels,
                 weights=weights, variance_min_before=variance_min_before,
                 variance_min_after=variance_min_after)
        return np.int64(step)

    bias = self.loss._recorded_bias
    done = tf.numpy_function(
        save, [self.optimizer.iterations, y_pred["features"], y, bias.weights, before,
               bias.variance_min], tf.int64, stateful=True)
    with tf.control_dependencies([done]):
        return tf.identity(total)


BiasLoss.per_sample = per_sample
BiasLossModel.compute_loss = compute_loss


# -- the training state after each backup, after the restore, at the end ----

def training_state(model):
    optimizer = model.optimizer
    state = {"iterations": int(optimizer.iterations.numpy()),
             "variance_min": float(model.bias_loss_variance_min.numpy())}
    for i, variable in enumerate(model.weights):
        state[f"model/{i}"] = keras.ops.convert_to_numpy(variable.value)
    for i, variable in enumerate(optimizer.variables):
        state[f"optimizer/{i}"] = keras.ops.convert_to_numpy(variable.value)
    for i, variable in enumerate(optimizer._model_variables_moving_average):
        state[f"ema/{i}"] = keras.ops.convert_to_numpy(variable.value)
    return state


def save_npz(name, arrays):
    temporary = record_path(name + ".tmp.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, record_path(name + ".npz"))  # the test never reads half a file


class RecordState(keras.callbacks.Callback):
    """Appended last, so it runs after BackupAndRestore has restored or written."""

    def on_train_begin(self, logs=None):
        save_npz("restored", training_state(self.model))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step <= record_states_until:
            save_npz(f"state{step}", training_state(self.model))
        if step == pause_after:
            # Wait here, backups written, to be killed by the test.
            open(record_path("paused"), "w").close()
            time.sleep(3600)


pause_after = int(os.environ.get("PAUSE_AFTER_STEP", "-1"))
record_states_until = int(os.environ.get("RECORD_STATES_UNTIL", "-1"))
_standard_callbacks = callbacks_lib.standard_callbacks
callbacks_lib.standard_callbacks = lambda *a, **k: _standard_callbacks(*a, **k) + [RecordState()]
_restore_best_weights = callbacks_lib.restore_best_weights


def restore_best_weights(model, callbacks, best_path):
    source = _restore_best_weights(model, callbacks, best_path)
    weights = {f"model/{i}": w for i, w in enumerate(model.get_weights())}
    save_npz("evaluated", dict(weights, source=source))
    return source


callbacks_lib.restore_best_weights = restore_best_weights

summary = driver.train(config)
with open(record_path("result.json"), "w") as f:
    json.dump(summary, f)
