"""The package's surface: what `import keras_skipblock` loads, the one way to load a
saved model, and the pieces every task shares (EMA swap, parameter count)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Heavy or task-specific modules that `import keras_skipblock` must not load.
NOT_ON_IMPORT = ("keras_cv", "tensorflow_datasets", "keras_skipblock.training", "keras_skipblock.data",
                 "keras_skipblock.detection.data", "keras_skipblock.detection.train", "keras_skipblock.litert",
                 "keras_skipblock.analysis", "keras_skipblock.evaluation")


def _python(code, timeout=300):
    """Run `code` in a fresh interpreter on this checkout; its last stdout line as JSON."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                            env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_is_light_and_gives_the_core_then_the_rest_loads_on_use():
    on_import, on_use = _python(
        "import json, sys\n"
        "import keras_skipblock as ks\n"
        "names = [ks.BiasLoss, ks.BiasWeights, ks.bias_weights, ks.BiasLossModel, ks.with_features,\n"
        "         ks.models.SkipblockNetM, ks.models.get_model, ks.count_flops, ks.count_params]\n"
        f"on_import = [m for m in {NOT_ON_IMPORT!r} if m in sys.modules]\n"
        "ks.training.TrainConfig, ks.detection.DetectionConfig, ks.detection.voc_map\n"
        "print(json.dumps([on_import, [m for m in ('keras_skipblock.training', 'keras_skipblock.detection.train')\n"
        "                              if m in sys.modules]]))\n")
    assert on_import == []
    assert on_use == ["keras_skipblock.training", "keras_skipblock.detection.train"]


def test_load_model_revives_a_saved_detector_in_a_fresh_process(tmp_path):
    from keras_skipblock import detection

    model = detection.build_detector("skipblocknet_xs", 3, (32, 32, 3), "ssdlite")
    model.compile(optimizer="sgd", loss=detection.MultiboxLoss("bias", detection.level_anchor_counts()))
    path = str(tmp_path / "detector.keras")
    model.save(path)
    image = np.linspace(-1, 1, 32 * 32 * 3, dtype="float32").reshape(1, 32, 32, 3)
    np.save(tmp_path / "image.npy", image)
    expected = np.asarray(model(image)["logits"])
    got = _python(
        "import json, numpy as np\n"
        "import keras, keras_skipblock as ks\n"
        # What LiteRT conversion does: Keras' own loader, uncompiled, after the import alone.
        f"plain = keras.saving.load_model({path!r}, compile=False)\n"
        f"model = ks.load_model({path!r})\n"
        f"logits = np.asarray(model(np.load({str(tmp_path / 'image.npy')!r}))['logits'])\n"
        "print(json.dumps([type(model).__name__, type(model.loss).__name__, type(plain).__name__,\n"
        "                  logits.ravel().tolist()]))\n")
    assert got[:3] == ["SSDDetector", "MultiboxLoss", "SSDDetector"]
    np.testing.assert_array_equal(np.asarray(got[3], "float32"), expected.ravel())


def test_ema_weights_swaps_in_and_back_also_on_error():
    import keras

    from keras_skipblock import _compat
    from keras_skipblock.training import build_optimizer
    from keras_skipblock.training.callbacks import ema_weights

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=build_optimizer("sgd", 0.5, ema_decay=0.5), loss="mse")
    with ema_weights(model):  # no-op before the optimizer is built
        pass
    for _ in range(2):  # not fit: fit ends by copying the averages into the weights
        model.train_on_batch(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"))
    own = [w.copy() for w in model.get_weights()]
    averages = [np.asarray(v) for v in _compat.ema_averages(model.optimizer)]
    assert not all(np.array_equal(a, b) for a, b in zip(own, averages))
    with pytest.raises(RuntimeError, match="inside"):
        with ema_weights(model):
            for got, average in zip(model.get_weights(), averages):
                np.testing.assert_array_equal(got, average)
            raise RuntimeError("inside")
    for got, before in zip(model.get_weights(), own):
        np.testing.assert_array_equal(got, before)


def test_count_params_counts_trainable_weights():
    import keras_skipblock as ks

    model = ks.models.SkipblockNetM(input_shape=(224, 224, 3), num_classes=1000)
    assert ks.count_params(model) == 5_532_352  # the authors' network, as the README says
    assert model.count_params() > ks.count_params(model)  # + BatchNorm statistics, running minimum
