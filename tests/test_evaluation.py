"""The authors' ImageNet evaluation protocol (recipes/evaluate_imagenet.py) on
image folders generated here."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_skipblock as ks
from keras_skipblock.evaluation import evaluate_top_k, imagenet_eval_dataset, preprocess_authors_eval
from test_recipes import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torchvision_reference(image, resize_to=256, crop=224):
    """torchvision's Resize(256) + CenterCrop(224) on a PIL image, written out."""
    width, height = image.size
    if width <= height:
        size = (resize_to, int(resize_to * height / width))
    else:
        size = (int(resize_to * width / height), resize_to)
    image = image.resize(size, Image.BILINEAR)
    top, left = int(round((size[1] - crop) / 2.0)), int(round((size[0] - crop) / 2.0))
    return np.asarray(image.crop((left, top, left + crop, top + crop)), "float32")


@pytest.mark.parametrize("height,width", [(300, 400), (333, 500), (257, 256), (224, 600)])
def test_preprocessing_matches_pil_resize_and_centre_crop(height, width, tmp_path):
    rng = np.random.RandomState(height + width)
    # smooth content (a photograph's statistics), not per-pixel noise
    small = rng.randint(0, 256, (height // 16 + 2, width // 16 + 2, 3)).astype("uint8")
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    path = tmp_path / "image.png"
    image.save(path)
    ours = (preprocess_authors_eval(tf.io.read_file(str(path))).numpy() + 1.0) * 127.5
    reference = _torchvision_reference(image)
    assert ours.shape == reference.shape == (224, 224, 3)
    # TF's antialiased bilinear vs PIL's, 6 sizes: mean 0.0-0.2, max 1.0 grey level (rounding);
    # the crop shifted by one pixel gives a mean of 5.0-7.8.
    assert np.abs(ours - reference).mean() < 0.5
    assert np.abs(ours - reference).max() <= 2.0


def _colour_folder(root):
    """3 classes of solid-colour images of assorted sizes, one mislabeled."""
    colours = {"a_red": (200, 20, 20), "b_green": (20, 200, 20), "c_blue": (20, 20, 200)}
    sizes = [(300, 260), (240, 400), (256, 256)]
    for index, (name, colour) in enumerate(colours.items()):
        os.makedirs(root / name)
        for j, (w, h) in enumerate(sizes):
            Image.new("RGB", (w, h), colour).save(root / name / f"{j}.jpg", quality=95)
    # a green image filed as red: a top-1 miss, still in the top 2
    Image.new("RGB", (280, 300), (20, 200, 20)).save(root / "a_red" / "3.jpg", quality=95)
    return 10


def _channel_mean_classifier():
    """A model whose logits are the mean of each input channel: top-1 is the dominant colour."""
    inputs = keras.Input((224, 224, 3))
    x = ks.models.preprocessing_layer((0, 255), "symmetric")(inputs)
    logits = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {"logits": logits, "features": x})


def test_folder_evaluation_counts_top1_and_top5(tmp_path):
    count = _colour_folder(tmp_path / "val")
    model = _channel_mean_classifier()
    dataset, n = imagenet_eval_dataset(str(tmp_path / "val"), batch_size=4)
    assert n == count
    result = evaluate_top_k(lambda images: model(images * 127.5 + 127.5)["logits"], dataset, n, log=None)
    assert result.images == 10
    assert result.top1 == pytest.approx(9 / 10)
    assert result.top5 == 1.0  # 3 classes: all in the top 5


def test_command_evaluates_keras_and_tflite_alike(tmp_path):
    _colour_folder(tmp_path / "val")
    path = str(tmp_path / "colour.keras")
    _channel_mean_classifier().save(path)
    tflite = str(tmp_path / "colour.tflite")
    from keras_skipblock.litert.conversion import convert

    with open(tflite, "wb") as f:
        f.write(convert(keras.saving.load_model(path), "none", input_shape=(224, 224, 3)))
    outputs = []
    for extra in ([f"--model={path}"], [f"--model={tflite}", "--input_range=0,255"]):
        run = run_script("recipes/evaluate_imagenet.py", [f"--data_dir={tmp_path / 'val'}", "--batch_size=3", *extra])
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.append([line for line in run.stdout.splitlines() if line.startswith("SUMMARY")][0])
    for line in outputs:
        assert "top-1 90.00%, top-5 100.00% on 10 images" in line


def test_command_errors_are_one_line(tmp_path):
    _colour_folder(tmp_path / "val")
    model = str(tmp_path / "m.tflite")
    open(model, "wb").close()
    for args, message in [
        ([f"--model={model}", f"--data_dir={tmp_path / 'val'}"], "does not record its input range"),
        ([f"--model={tmp_path / 'missing.pth'}", f"--data_dir={tmp_path / 'val'}"], "not found"),
        ([f"--model={model}", "--input_range=0,255", f"--data_dir={tmp_path / 'nowhere'}"], "does not exist"),
    ]:
        if message == "not found":  # once as a command: what a shell sees
            run = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "evaluate_imagenet.py"), *args],
                                 capture_output=True, text=True, timeout=120)
        else:
            run = run_script("recipes/evaluate_imagenet.py", args)
        assert run.returncode == 2, run.stderr[-2000:]
        assert message in run.stderr and "Traceback" not in run.stderr
