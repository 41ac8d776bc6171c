"""Resume: a run killed mid-training continues from its backup when started again.

The backup (keras.callbacks.BackupAndRestore) holds the weights, the
optimizer's slots and step, its EMA weights and BiasLoss's running minimum
(`bias_loss_variance_min`, a model variable).
"""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np

from keras_skipblock import BiasLoss, with_features
from keras_skipblock.training import build_optimizer, standard_callbacks
from test_data import write_fake_fashion
from test_recipes import REPO, TINY, run_recipe, summary_line


def read_backup(model_dir):
    backup = os.path.join(model_dir, "backup")
    with open(os.path.join(backup, "training_metadata.json")) as f:
        epoch = json.load(f)["epoch"]
    with h5py.File(os.path.join(backup, "latest.weights.h5"), "r") as f:
        iterations = int(f["optimizer/vars/0"][()])
        variance_min = float(f["vars/0"][()])  # the model's own variable
        optimizer_vars = len(f["optimizer/vars"])
    return epoch, iterations, variance_min, optimizer_vars


def test_killed_run_resumes_where_it_was(tmp_path):
    data_dir = write_fake_fashion(str(tmp_path / "fm"), n_train=80, n_test=16)
    out = str(tmp_path / "run")
    steps = 8  # 64 training images (16 held out) / batch 8
    args = [f"--data_dir={data_dir}", f"--model_dir={out}", "--normalization=global", *TINY]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "recipes", "fashion_mnist.py"), "--epochs=100", *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    metadata = os.path.join(out, "backup", "training_metadata.json")
    deadline = time.time() + 420
    try:
        while time.time() < deadline and process.poll() is None:
            if os.path.exists(metadata):
                time.sleep(0.5)  # let the first backup finish writing
                break
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert os.path.exists(metadata), "the run made no backup before the deadline"

    epoch, iterations, variance_min, optimizer_vars = read_backup(out)
    assert epoch >= 1 and iterations == epoch * steps
    assert np.isfinite(variance_min)

    result = run_recipe("fashion_mnist.py", f"--epochs={epoch + 1}", *args, in_process=True)
    # Only the one missing epoch ran, from the restored state.
    assert f"Epoch {epoch + 1}/{epoch + 1}" in result.stdout
    assert "Epoch 1/" not in result.stdout
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["optimizer_steps"] == (epoch + 1) * steps  # optimizer step restored
    assert summary["epochs"] == epoch + 1
    assert summary["bias_loss_variance_min"] <= variance_min  # running minimum carried on
    assert read_backup(out)[3] == optimizer_vars
    assert "epochs" in summary_line(result.stdout)


def _tiny_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return with_features(keras.Model(inputs, keras.layers.Dense(10)(x)))


def test_backup_restores_optimizer_ema_and_variance_min(tmp_path, digits):
    x, y = digits
    model = _tiny_model()
    model.compile(optimizer=build_optimizer("rmsprop", 0.01, ema_decay=0.99),
                  loss=BiasLoss(normalization="global"))
    callbacks = standard_callbacks(str(tmp_path), write_outputs=False)
    model.fit(x[:64], y[:64], batch_size=16, epochs=2, verbose=0, callbacks=callbacks)

    restored = _tiny_model()
    restored.compile(optimizer=build_optimizer("rmsprop", 0.01, ema_decay=0.99),
                     loss=BiasLoss(normalization="global"))
    # Epochs done: 2 of 2, so fit only restores the backup and trains nothing.
    restored.fit(x[:64], y[:64], batch_size=16, epochs=2, verbose=0,
                 callbacks=standard_callbacks(str(tmp_path), write_outputs=False))
    assert int(restored.optimizer.iterations.numpy()) == 8
    np.testing.assert_allclose(restored.bias_loss_variance_min.numpy(),
                               model.bias_loss_variance_min.numpy())
    for a, b in zip(model.optimizer._model_variables_moving_average,
                    restored.optimizer._model_variables_moving_average):
        np.testing.assert_allclose(a.numpy(), b.numpy())
    for a, b in zip(model.trainable_variables, restored.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy())
