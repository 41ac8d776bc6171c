"""Each recipe runs end to end for a few steps on tiny data it is given.

Recipes run in this process through their own entry point (`run_script`: absl
flags removed again after each run), which skips a TensorFlow start-up per
run; `run_recipe(..., in_process=False)` runs one as a command in a fresh
process, as every recipe is somewhere in the suite (imagenet.py here,
fashion_mnist.py in test_resume.py, cifar100.py in
test_distributed_training.py, food101.py in test_authors_weights.py).
ImageNet, CIFAR-100 and Food-101 read TFDS data sets that need a network or
the user's files; here they run on `--dataset=folder` with JPEGs the test
writes, which exercises the same recipe, driver and preprocessing code.
"""

import importlib.util
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout


from test_data import write_fake_fashion, write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model=mobilenet_v3_small", "--width=0.35", "--image_size=32", "--batch_size=8",
        "--run_eagerly"]


def load_module(path, name):
    """The Python file at `path` (under the repository), loaded as a module named `name`."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script, args):
    """`script` (a path under the repository, e.g. "recipes/imagenet.py") run in this
    process with `args` through its own entry point, as a CompletedProcess: exit status,
    stdout and stderr. absl flags the script defines are removed again afterwards."""
    from absl import flags

    from keras_skipblock import validation

    before = set(flags.FLAGS)
    path = os.path.join(REPO, script)
    out, err = io.StringIO(), io.StringIO()
    argv = [path, *args]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            module = load_module(script, f"script_{os.path.basename(script)[:-3]}")
            try:
                if hasattr(module, "DEFAULTS") and script.startswith("recipes/") and script != "recipes/voc.py":
                    module.main(argv)  # a recipe: common.define_flags + common.run
                else:
                    validation.run_cli(module.main, argv)
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def run_recipe(recipe, *args, check=True, timeout=600, in_process=False):
    """recipes/<recipe> with `args`, in a fresh process (or with `in_process`, `run_script`)."""
    if in_process:
        result = run_script(os.path.join("recipes", recipe), args)
    else:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, "recipes", recipe), *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        )
    if check and result.returncode != 0:
        raise AssertionError(f"{recipe} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return result


def summary_line(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("SUMMARY ")]
    assert len(lines) == 1, stdout[-2000:]
    return lines[0]


def assert_run_outputs(model_dir, epochs):
    for name in ("best.keras", "history.csv", "summary.json", "config.json", "backup"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    assert os.listdir(os.path.join(model_dir, "logs")), "no TensorBoard logs"
    with open(os.path.join(model_dir, "history.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + epochs
    with open(os.path.join(model_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["epochs"] == epochs and 0 <= summary["test_top1"] <= summary["test_top5"] <= 1
    return summary


def test_imagenet_recipe_then_food101_fine_tune(tmp_path):
    images = write_image_folder(str(tmp_path / "imagenet_like"), per_class=6)
    out = str(tmp_path / "imagenet_run")
    result = run_recipe("imagenet.py", "--dataset=folder", f"--data_dir={images}",  # as a command
                        f"--model_dir={out}", "--epochs=1", "--steps_per_epoch=2", *TINY)
    line = summary_line(result.stdout)
    assert "top-1" in line and "top-5" in line and "epochs 1" in line and "wall time" in line
    summary = assert_run_outputs(out, epochs=1)
    assert summary["optimizer_steps"] == 2
    assert "/step" in result.stdout  # Keras progress bar

    food = write_image_folder(str(tmp_path / "food_like"), classes=("a", "b", "c", "d", "e"),
                              per_class=3)
    out2 = str(tmp_path / "food_run")
    result = run_recipe("food101.py", "--dataset=folder", f"--data_dir={food}",
                        f"--model_dir={out2}", f"--init_checkpoint={out}/best.keras",
                        "--epochs=1", "--steps_per_epoch=2", "--loss=ce", *TINY, in_process=True)
    assert "layers copied" in result.stdout
    copied = int(result.stdout.split("Fine-tuning from")[1].split(":")[1].split("layers")[0])
    assert copied > 10
    assert_run_outputs(out2, epochs=1)


def test_cifar100_recipe(tmp_path):
    images = write_image_folder(str(tmp_path / "cifar_like"), per_class=4, size=(32, 32))
    out = str(tmp_path / "run")
    result = run_recipe("cifar100.py", "--dataset=folder", f"--data_dir={images}",
                        f"--model_dir={out}", "--epochs=2", "--steps_per_epoch=2",
                        "--loss=focal", *TINY, in_process=True)
    assert "loss=focal" in summary_line(result.stdout)
    assert_run_outputs(out, epochs=2)


def test_fashion_mnist_recipe_with_missing_data_explains(tmp_path):
    result = run_recipe("fashion_mnist.py", f"--data_dir={tmp_path}/none",
                        f"--model_dir={tmp_path}/run", check=False, in_process=True)
    assert result.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in result.stderr
    assert f"{tmp_path}/none" in result.stderr


def test_fashion_mnist_recipe_runs_then_fine_tunes_quantization_aware(tmp_path, monkeypatch):
    """--qat_epochs: after the float epoch, one QAT epoch from the best weights writes
    best_qat.keras (a quantized BiasLossModel), a SUMMARY_QAT line and summary.json's qat
    section. (Its conversion and deploy check: test_quantization.py, on a trained model.)
    The network is SkipblockNet's blocks in one stage (tests/scripts/small_skipblocknet.py):
    all of its layer kinds quantized, in 15 convolutions where MobileNetV3-Small has 54 (QAT
    runs eagerly here, and its cost grows with the layers)."""
    import keras

    import keras_skipblock as ks
    from keras_skipblock.models import registry
    from keras_skipblock.quantization import is_quantized

    small = load_module(os.path.join("tests", "scripts", "small_skipblocknet.py"), "small_skipblocknet")
    monkeypatch.setattr(registry, "get_model", small.get_model)
    data_dir = write_fake_fashion(str(tmp_path / "fm"), n_train=64, n_test=16)
    out = str(tmp_path / "run")
    result = run_recipe("fashion_mnist.py", f"--data_dir={data_dir}", f"--model_dir={out}",
                        "--epochs=1", "--steps_per_epoch=3", "--loss=bias", "--qat_epochs=1",
                        "--qat_learning_rate=1e-3", *TINY, "--model=skipblocknet_xs", in_process=True)
    assert "loss=bias" in summary_line(result.stdout)
    summary = assert_run_outputs(out, epochs=1)
    qat_lines = [line for line in result.stdout.splitlines() if line.startswith("SUMMARY_QAT ")]
    assert len(qat_lines) == 1 and "qat epochs 1 at learning rate 0.001" in qat_lines[0], result.stdout[-2000:]
    path = os.path.join(out, "best_qat.keras")
    assert path in qat_lines[0] and summary["best_model"] == os.path.join(out, "best.keras")
    qat = summary["qat"]
    assert qat["best_model"] == path and qat["epochs"] == 1 and qat["learning_rate"] == 1e-3
    assert qat["monitor"] == "val_accuracy" and 0 <= qat["test_top1"] <= qat["test_top5"] <= 1
    assert len(qat["history"]["val_accuracy"]) == 1 and "val_loss_before" in qat
    model = keras.saving.load_model(path, compile=False)
    assert is_quantized(model) and isinstance(model, ks.BiasLossModel)


def test_train_in_process_on_digits_with_mixed_precision(tmp_path):
    """The driver itself: digits (no held-out split), bfloat16 on CPU, EMA checkpoint."""
    import keras

    from keras_skipblock.training import TrainConfig, train

    config = TrainConfig(dataset="digits", model="mobilenet_v3_small", width=0.35, image_size=32,
                         batch_size=32, epochs=1, steps_per_epoch=2, eval_steps=2,
                         model_dir=str(tmp_path), mixed_precision=True, run_eagerly=True,
                         ema_decay=0.99, verbose=0)
    try:
        summary = train(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert summary["optimizer_steps"] == 2 and summary["epochs"] == 1
    assert os.path.exists(os.path.join(str(tmp_path), "best.keras"))
