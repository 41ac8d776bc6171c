"""Every bad input gets one clear error (issue 19).

Each command-line case runs the script's own entry point in this process (absl flags
are removed again after each run) and asserts exit status 2, stderr of exactly one
`error:` line that names the problem, no traceback, no SUMMARY, and, where the case would
write something, that nothing was left behind. Each API case asserts a ValueError (or
the documented TensorFlow error) with a one-line message. No case trains a model.
"""

import json
import math
import os
import sys
import warnings
import zipfile

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "recipes"))  # the recipes `import common`

from test_data import write_fake_fashion  # noqa: E402
from test_recipes import run_script  # noqa: E402


def _tiny_classifier(shape, classes):
    """A small functional classifier with Bias Loss's two outputs."""
    import keras

    inputs = keras.Input(shape)
    features = keras.layers.Conv2D(4, 3, strides=4, name="conv")(inputs)
    logits = keras.layers.Dense(classes, name="logits")(keras.layers.GlobalAveragePooling2D()(features))
    return keras.Model(inputs, {"logits": logits, "features": features})


def _image(path, size=(40, 40), colour=(90, 120, 150)):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _voc(root, image_ids, image_set, corrupt=False):
    year = os.path.join(root, "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(year, sub), exist_ok=True)
    for image_id in image_ids:
        path = os.path.join(year, "JPEGImages", f"{image_id}.jpg")
        if corrupt:  # a JPEG's start and end markers around garbage: passes the cheap check
            with open(path, "wb") as f:
                f.write(b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9")
        else:
            _image(path, (64, 64))
        with open(os.path.join(year, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write("<annotation><size><width>64</width><height>64</height></size><object>"
                    "<name>dog</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>5</ymin>"
                    "<xmax>40</xmax><ymax>40</ymax></bndbox></object></annotation>")
    with open(os.path.join(year, "ImageSets", "Main", f"{image_set}.txt"), "a") as f:
        f.write("".join(f"{i}\n" for i in image_ids))


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Every fixture file once: tiny models, broken files, small image folders."""
    import keras

    from keras_skipblock.detection import build_detector
    from keras_skipblock.litert.conversion import convert

    root = tmp_path_factory.mktemp("bad_inputs")
    p = {"tmp": str(root)}
    p["fm"] = write_fake_fashion(str(root / "fm"), n_train=40, n_test=20)
    p["empty_dir"] = str(root / "empty_dir")
    os.makedirs(p["empty_dir"])
    p["afile"] = str(root / "notes.txt")
    with open(p["afile"], "w") as f:
        f.write("not a model, not a folder\n")
    p["text_keras"] = str(root / "text.keras")
    with open(p["text_keras"], "w") as f:
        f.write("hello\n")
    p["empty_keras"] = str(root / "empty.keras")
    open(p["empty_keras"], "w").close()
    p["zip_keras"] = str(root / "other.keras")  # a zip, but not a Keras archive
    with zipfile.ZipFile(p["zip_keras"], "w") as z:
        z.writestr("readme.txt", "no config here")
    p["fake_pth"] = str(root / "skipblocknet-m.pth")  # named like the authors' file; never read
    with open(p["fake_pth"], "wb") as f:
        f.write(b"PK not really")
    p["fake_tflite"] = str(root / "fake.tflite")
    with open(p["fake_tflite"], "w") as f:
        f.write("not a flatbuffer at all\n")

    grey = _tiny_classifier((32, 32, 1), 10)  # a Fashion-MNIST-like classifier
    p["grey_keras"] = str(root / "grey.keras")
    grey.save(p["grey_keras"])
    p["grey_tflite"] = str(root / "grey.tflite")
    with open(p["grey_tflite"], "wb") as f:
        f.write(convert(grey, "none", input_shape=(32, 32, 1)))
    with open(p["grey_keras"], "rb") as f:
        data = f.read()
    p["truncated_keras"] = str(root / "truncated.keras")
    with open(p["truncated_keras"], "wb") as f:
        f.write(data[: len(data) // 2])
    p["rgb3_keras"] = str(root / "rgb3.keras")  # fits the 3-class evaluation folder
    _tiny_classifier((224, 224, 3), 3).save(p["rgb3_keras"])
    p["rgb5_keras"] = str(root / "rgb5.keras")
    _tiny_classifier((224, 224, 3), 5).save(p["rgb5_keras"])
    p["detector_keras"] = str(root / "detector.keras")
    build_detector("skipblocknet_xs", 2, (32, 32, 3)).save(p["detector_keras"])
    keras.backend.clear_session()

    p["val"] = str(root / "val")  # 3 classes x 2 images
    for name in ("a", "b", "c"):
        for i in range(2):
            _image(os.path.join(p["val"], name, f"{i}.jpg"))
    p["corrupt_val"] = str(root / "corrupt_val")
    for name in ("a", "b", "c"):
        _image(os.path.join(p["corrupt_val"], name, "0.jpg"))
    p["corrupt_png"] = os.path.join(p["corrupt_val"], "b", "1.png")
    with open(p["corrupt_png"], "w") as f:
        f.write("this is not a PNG")
    p["corrupt_train"] = str(root / "corrupt_train")  # JPEG markers around garbage: decoding fails
    for name in ("a", "b"):
        for i in range(3):
            path = os.path.join(p["corrupt_train"], name, f"{i}.jpg")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9")
    p["one_image"] = str(root / "one_image")
    _image(os.path.join(p["one_image"], "only", "0.jpg"))
    p["voc"] = str(root / "VOCdevkit")
    _voc(p["voc"], ["000001", "000002"], "trainval", corrupt=True)
    _voc(p["voc"], ["000003"], "test")
    p["corrupt_jpeg"] = os.path.join(p["voc"], "VOC2007", "JPEGImages", "00000")  # prefix
    return p


def _run(script, args):
    """(exit status, stdout, stderr) of `script` run in this process with `args`."""
    run = run_script(script, args)
    return run.returncode, run.stdout, run.stderr


FM = ["--data_dir={fm}"]
RUN_DIR = "--model_dir={tmp}/runs/{case}"
SCENES = ["--dataset=fashion_mnist_scenes", "--data_dir={fm}", RUN_DIR]

# (case id, script, arguments, text the one error line must contain, a path that must not exist after)
CLI_CASES = [
    # recipes/fashion_mnist.py: each flag's range
    ("epochs_0", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--epochs=0"], "--epochs must be an integer >= 1", RUN_DIR),
    ("epochs_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--epochs=-1"], "--epochs must be an integer >= 1", RUN_DIR),
    ("epochs_text", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--epochs=abc"], "--epochs=abc", RUN_DIR),
    ("steps_per_epoch_0", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--steps_per_epoch=0"], "--steps_per_epoch must be", RUN_DIR),
    ("batch_size_0", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--batch_size=0"], "--batch_size must be an integer >= 1", RUN_DIR),
    ("qat_epochs_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--qat_epochs=-1"], "--qat_epochs must be an integer >= 0", RUN_DIR),
    ("qat_learning_rate_alone", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--qat_learning_rate=1e-3"], "give --qat_epochs N > 0 too", RUN_DIR),
    ("qat_learning_rate_0", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--qat_epochs=1", "--qat_learning_rate=0"], "--qat_learning_rate must be", RUN_DIR),
    ("batch_size_over_data", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--batch_size=4096"], "larger than the", RUN_DIR),
    ("learning_rate_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--learning_rate=-1"], "--learning_rate must be a finite number > 0", RUN_DIR),
    ("learning_rate_nan", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--learning_rate=nan"], "--learning_rate must be", RUN_DIR),
    ("image_size_7", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--image_size=7"], "--image_size must be an integer >= 32", RUN_DIR),
    ("model_unknown", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--model=unknown"], "unknown model 'unknown'", RUN_DIR),
    ("model_dir_is_file", "recipes/fashion_mnist.py", [*FM, "--model_dir={afile}"], "is a file; pass a folder", None),
    ("alpha_nan", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--alpha=nan"], "--alpha must be a finite number", RUN_DIR),
    ("alpha_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--alpha=-1"], "--alpha must be a finite number >= 0", RUN_DIR),
    ("beta_inf", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--beta=inf"], "--beta must be a finite number", RUN_DIR),
    ("beta_2_all_clamped", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--beta=2"], "every sample is clamped to 0.5", RUN_DIR),
    ("label_smoothing_1", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--label_smoothing=1"], "--label_smoothing must be", RUN_DIR),
    ("momentum_1_5", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--momentum=1.5"], "--momentum must be", RUN_DIR),
    ("weight_decay_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--weight_decay=-1"], "--weight_decay must be", RUN_DIR),
    ("ema_decay_1", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--ema_decay=1"], "--ema_decay must be", RUN_DIR),
    ("width_0", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--width=0"], "--width must be a finite number > 0", RUN_DIR),
    ("dropout_1", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--dropout=1"], "--dropout must be", RUN_DIR),
    ("bn_momentum_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--bn_momentum=-0.1"], "--bn_momentum must be", RUN_DIR),
    ("channels_2", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--channels=2"], "--channels must be 1 or 3", RUN_DIR),
    ("validation_size_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--validation_size=-5"], "--validation_size must be", RUN_DIR),
    ("warmup_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--warmup_epochs=-1"], "--warmup_epochs must be", RUN_DIR),
    ("lr_factor_0", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--lr_factor=0"], "--lr_factor must be", RUN_DIR),
    ("milestones_text", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--milestones=abc"], "--milestones must be epochs", RUN_DIR),
    ("milestones_decreasing", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--milestones=120,60"], "--milestones must increase", RUN_DIR),
    ("seed_negative", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--seed=-1"], "--seed must be", RUN_DIR),
    ("eval_steps_0", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--eval_steps=0"], "--eval_steps must be", RUN_DIR),
    ("backup_steps_0", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--backup_steps=0"], "--backup_steps must be", RUN_DIR),
    ("loss_unknown", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--loss=nope"], "--loss", RUN_DIR),
    ("strategy_unknown", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--strategy=nope"], "--strategy", RUN_DIR),
    ("positional_argument", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "extra"], "Unexpected arguments", RUN_DIR),
    # data and checkpoint files a user could mix up
    ("fashion_data_dir_empty", "recipes/fashion_mnist.py", ["--data_dir={empty_dir}", RUN_DIR], "Fashion-MNIST not found", RUN_DIR),
    ("fashion_data_dir_is_file", "recipes/fashion_mnist.py", ["--data_dir={afile}", RUN_DIR], "Fashion-MNIST not found", RUN_DIR),
    ("init_checkpoint_missing", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--init_checkpoint={tmp}/no.keras"], "not found", RUN_DIR),
    ("init_checkpoint_text", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--init_checkpoint={text_keras}"], "not a valid .keras archive", RUN_DIR),
    ("init_checkpoint_empty", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--init_checkpoint={empty_keras}"], "is empty", RUN_DIR),
    ("init_checkpoint_truncated", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--init_checkpoint={truncated_keras}"], "not a valid .keras archive", RUN_DIR),
    ("init_checkpoint_tflite", "recipes/fashion_mnist.py", [*FM, RUN_DIR, "--init_checkpoint={grey_tflite}"], "is not a .keras or .pth or .pt file", RUN_DIR),
    ("init_checkpoint_pth_wrong_model", "recipes/food101.py", ["--init_checkpoint={fake_pth}", "--model=skipblocknet_s", RUN_DIR], "use --model skipblocknet_m", RUN_DIR),
    ("folder_without_data_dir", "recipes/imagenet.py", ["--dataset=folder", RUN_DIR], "--dataset=folder needs --data_dir", RUN_DIR),
    ("folder_data_dir_missing", "recipes/imagenet.py", ["--dataset=folder", "--data_dir={tmp}/nowhere", RUN_DIR], "does not exist", RUN_DIR),
    ("folder_one_image", "recipes/imagenet.py", ["--dataset=folder", "--data_dir={one_image}", "--batch_size=1", RUN_DIR], "has no test images", RUN_DIR),
    ("folder_corrupt_jpeg", "recipes/imagenet.py", ["--dataset=folder", "--data_dir={corrupt_train}", "--model=mobilenet_v3_small",
                                                   "--width=0.35", "--image_size=32", "--batch_size=2", "--epochs=1",
                                                   "--steps_per_epoch=1", "--run_eagerly", RUN_DIR],
     "{corrupt_train}/a/0.jpg: cannot decode the image", None),
    ("manual_dir_missing", "recipes/imagenet.py", ["--manual_dir={tmp}/no_tars", RUN_DIR], "--manual_dir", RUN_DIR),
    ("imagenet_not_prepared", "recipes/imagenet.py", ["--data_dir={empty_dir}", RUN_DIR], "no ILSVRC2012_img_*.tar", RUN_DIR),
    ("cifar100_offline", "recipes/cifar100.py", ["--data_dir={empty_dir}", "--epochs=1", "--steps_per_epoch=1", RUN_DIR], "cifar100 is not prepared", "{empty_dir}/cifar100"),
    ("food101_channels_1", "recipes/food101.py", ["--channels=1", RUN_DIR], "--channels 1: food101 images are RGB", RUN_DIR),
    # recipes/voc.py
    ("voc_epochs_0", "recipes/voc.py", [*SCENES, "--epochs=0"], "--epochs must be an integer >= 1", RUN_DIR),
    ("voc_image_size_16", "recipes/voc.py", [*SCENES, "--image_size=16"], "--image_size must be an integer >= 32", RUN_DIR),
    ("voc_model_unknown", "recipes/voc.py", [*SCENES, "--model=resnet50"], "unknown model 'resnet50'", RUN_DIR),
    ("voc_train_images_0", "recipes/voc.py", [*SCENES, "--train_images=0"], "--train_images must be", RUN_DIR),
    ("voc_qat_learning_rate_alone", "recipes/voc.py", [*SCENES, "--qat_learning_rate=0.001"], "--qat_learning_rate is the rate of the quantization-aware epochs", RUN_DIR),
    ("voc_canvas_8", "recipes/voc.py", [*SCENES, "--canvas_size=8"], "--canvas_size must be", RUN_DIR),
    ("voc_head_unknown", "recipes/voc.py", [*SCENES, "--head=yolo"], "--head", RUN_DIR),
    ("voc_alpha_nan", "recipes/voc.py", [*SCENES, "--loss=bias", "--alpha=nan"], "--alpha must be a finite number", RUN_DIR),
    ("voc_folder_missing", "recipes/voc.py", ["--dataset=voc_folder", "--data_dir={tmp}/noVOC", RUN_DIR], "does not exist", RUN_DIR),
    ("voc_folder_is_file", "recipes/voc.py", ["--dataset=voc_folder", "--data_dir={afile}", RUN_DIR], "is a file, not a folder", RUN_DIR),
    ("voc_corrupt_jpeg", "recipes/voc.py", ["--dataset=voc_folder", "--data_dir={voc}", "--model=skipblocknet_xs", "--image_size=32",
                                            "--batch_size=1", "--epochs=1", "--steps_per_epoch=1", "--run_eagerly", RUN_DIR],
     "{corrupt_jpeg}", None),
    # recipes/evaluate_imagenet.py
    ("eval_model_required", "recipes/evaluate_imagenet.py", ["--data_dir={val}"], "--model is required", None),
    ("eval_model_missing", "recipes/evaluate_imagenet.py", ["--model={tmp}/missing.pth", "--data_dir={val}"], "not found", None),
    ("eval_model_text_keras", "recipes/evaluate_imagenet.py", ["--model={text_keras}", "--data_dir={val}"], "not a valid .keras archive", None),
    ("eval_model_zip_keras", "recipes/evaluate_imagenet.py", ["--model={zip_keras}", "--data_dir={val}"], "no config.json inside", None),
    ("eval_model_txt", "recipes/evaluate_imagenet.py", ["--model={afile}", "--data_dir={val}"], "is not a .keras or .pth or .pt or .tflite file", None),
    ("eval_model_fake_tflite", "recipes/evaluate_imagenet.py", ["--model={fake_tflite}", "--input_range=0,255", "--data_dir={val}"], "not a TFLite flatbuffer", None),
    ("eval_grey_classifier", "recipes/evaluate_imagenet.py", ["--model={grey_keras}", "--data_dir={val}"], "takes 32x32x1 images", None),
    ("eval_grey_tflite", "recipes/evaluate_imagenet.py", ["--model={grey_tflite}", "--input_range=-1,1", "--data_dir={val}"], "takes 32x32x1 images", None),
    ("eval_detector", "recipes/evaluate_imagenet.py", ["--model={detector_keras}", "--data_dir={val}"], "is an SSD detector, not a classifier", None),
    ("eval_classes_differ", "recipes/evaluate_imagenet.py", ["--model={rgb5_keras}", "--data_dir={val}"], "has 5 classes", None),
    ("eval_data_dir_missing", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={tmp}/nowhere"], "does not exist", None),
    ("eval_data_dir_is_file", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={afile}"], "is a file, not a folder", None),
    ("eval_data_dir_empty", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={empty_dir}"], "No images", None),
    ("eval_batch_size_0", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={val}", "--batch_size=0"], "--batch_size must be", None),
    ("eval_limit_0", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={val}", "--limit=0"], "--limit must be", None),
    ("eval_num_threads_0", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={val}", "--num_threads=0"], "--num_threads must be", None),
    ("eval_input_range_one", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={val}", "--input_range=0"], "--input_range must be low,high", None),
    ("eval_input_range_text", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={val}", "--input_range=a,b"], "--input_range must be a finite number", None),
    ("eval_input_range_reversed", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={val}", "--input_range=255,0"], "low < high", None),
    ("eval_output_json_dir", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={val}", "--output_json={empty_dir}"], "is a folder", None),
    ("eval_corrupt_png", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={corrupt_val}", "--output_json={tmp}/eval_corrupt.json"],
     "{corrupt_png}: corrupt or unsupported image", "{tmp}/eval_corrupt.json"),
    ("eval_dataset_unknown", "recipes/evaluate_imagenet.py", ["--model={rgb3_keras}", "--data_dir={val}", "--dataset=imagenet"], "--dataset", None),
    # tflite/convert.py
    ("convert_output_required", "tflite/convert.py", ["--checkpoint={grey_keras}"], "--output is required", None),
    ("convert_output_folder_missing", "tflite/convert.py", ["--checkpoint={grey_keras}", "--output={tmp}/nodir/m.tflite"], "does not exist", None),
    ("convert_output_is_folder", "tflite/convert.py", ["--checkpoint={grey_keras}", "--output={empty_dir}"], "is a folder", None),
    ("convert_both_sources", "tflite/convert.py", ["--checkpoint={grey_keras}", "--model=skipblocknet_m", "--output={tmp}/c.tflite"], "exactly one of", "{tmp}/c.tflite"),
    ("convert_checkpoint_text", "tflite/convert.py", ["--checkpoint={text_keras}", "--output={tmp}/c.tflite"], "not a valid .keras archive", "{tmp}/c.tflite"),
    ("convert_checkpoint_truncated", "tflite/convert.py", ["--checkpoint={truncated_keras}", "--output={tmp}/c.tflite"], "not a valid .keras archive", "{tmp}/c.tflite"),
    ("convert_checkpoint_tflite", "tflite/convert.py", ["--checkpoint={grey_tflite}", "--output={tmp}/c.tflite"], "is not a .keras or .pth or .pt file", "{tmp}/c.tflite"),
    ("convert_image_size_7", "tflite/convert.py", ["--model=skipblocknet_xs", "--image_size=7", "--output={tmp}/c.tflite"], "--image_size must be", "{tmp}/c.tflite"),
    ("convert_num_classes_0", "tflite/convert.py", ["--model=skipblocknet_xs", "--num_classes=0", "--output={tmp}/c.tflite"], "--num_classes must be", "{tmp}/c.tflite"),
    ("convert_channels_2", "tflite/convert.py", ["--model=skipblocknet_xs", "--channels=2", "--output={tmp}/c.tflite"], "--channels must be 1 or 3", "{tmp}/c.tflite"),
    ("convert_num_calibration_0", "tflite/convert.py", ["--checkpoint={grey_keras}", "--num_calibration=0", "--output={tmp}/c.tflite"], "--num_calibration must be", "{tmp}/c.tflite"),
    ("convert_num_verify_0", "tflite/convert.py", ["--checkpoint={grey_keras}", "--num_verify=0", "--output={tmp}/c.tflite"], "--num_verify must be", "{tmp}/c.tflite"),
    ("convert_min_agreement_1_5", "tflite/convert.py", ["--checkpoint={grey_keras}", "--min_agreement=1.5", "--output={tmp}/c.tflite"], "--min_agreement must be", "{tmp}/c.tflite"),
    ("convert_max_abs_diff_0", "tflite/convert.py", ["--checkpoint={grey_keras}", "--max_abs_diff=0", "--output={tmp}/c.tflite"], "--max_abs_diff must be", "{tmp}/c.tflite"),
    ("convert_representative_missing", "tflite/convert.py", ["--checkpoint={grey_keras}", "--quantize=int8", "--representative_data={tmp}/nope", "--output={tmp}/c.tflite"], "--representative_data", "{tmp}/c.tflite"),
    ("convert_int8_one_image", "tflite/convert.py", ["--checkpoint={grey_keras}", "--quantize=int8", "--representative_data={one_image}", "--output={tmp}/c.tflite"], "test split has no images", "{tmp}/c.tflite"),
    ("convert_recalibrate_checkpoint", "tflite/convert.py", ["--checkpoint={grey_keras}", "--recalibrate_bn", "--output={tmp}/c.tflite"], "--recalibrate_bn is for fresh", "{tmp}/c.tflite"),
    ("convert_quantize_int4", "tflite/convert.py", ["--checkpoint={grey_keras}", "--quantize=int4", "--output={tmp}/c.tflite"], "--quantize", "{tmp}/c.tflite"),
    ("convert_model_unknown", "tflite/convert.py", ["--model=resnet9000", "--output={tmp}/c.tflite"], "Unknown model 'resnet9000'", "{tmp}/c.tflite"),
    # tflite/benchmark.py, tflite/benchmark_detection.py
    ("bench_models_unknown", "tflite/benchmark.py", ["--models=resnet50", "--output_dir={tmp}/bench"], "--models: unknown value 'resnet50'", "{tmp}/bench"),
    ("bench_modes_int4", "tflite/benchmark.py", ["--modes=int4", "--output_dir={tmp}/bench"], "--modes: unknown value 'int4'", "{tmp}/bench"),
    ("bench_rounds_0", "tflite/benchmark.py", ["--rounds=0", "--output_dir={tmp}/bench"], "--rounds must be", "{tmp}/bench"),
    ("bench_num_runs_0", "tflite/benchmark.py", ["--num_runs=0", "--output_dir={tmp}/bench"], "--num_runs must be", "{tmp}/bench"),
    ("bench_image_size_7", "tflite/benchmark.py", ["--image_size=7", "--output_dir={tmp}/bench"], "--image_size must be", "{tmp}/bench"),
    ("bench_output_dir_file", "tflite/benchmark.py", ["--output_dir={afile}"], "is a file; pass a folder", None),
    ("bench_representative_missing", "tflite/benchmark.py", ["--representative_data={tmp}/nope", "--output_dir={tmp}/bench"], "--representative_data: folder", "{tmp}/bench"),
    ("bench_tflite_fake", "tflite/benchmark.py", ["--tflite={fake_tflite}"], "not a TFLite flatbuffer", None),
    ("det_bench_checkpoint_not_pair", "tflite/benchmark_detection.py", ["--checkpoints=best.keras", "--output_dir={tmp}/dbench"], "is not a new label=path.keras pair", "{tmp}/dbench"),
    ("det_bench_checkpoint_text", "tflite/benchmark_detection.py", ["--checkpoints=a={text_keras}", "--output_dir={tmp}/dbench"], "not a valid .keras archive", "{tmp}/dbench"),
    ("det_bench_models_unknown", "tflite/benchmark_detection.py", ["--models=resnet50", "--output_dir={tmp}/dbench"], "--models: unknown value 'resnet50'", "{tmp}/dbench"),
    ("det_bench_modes_float16", "tflite/benchmark_detection.py", ["--modes=float16", "--output_dir={tmp}/dbench"], "--modes: unknown value 'float16'", "{tmp}/dbench"),
    ("det_bench_reference_unknown", "tflite/benchmark_detection.py", ["--reference=zzz", "--output_dir={tmp}/dbench"], "--reference 'zzz' is none of", "{tmp}/dbench"),
    ("det_bench_warmup_negative", "tflite/benchmark_detection.py", ["--warmup_runs=-1", "--output_dir={tmp}/dbench"], "--warmup_runs must be", "{tmp}/dbench"),
    # tflite/evaluate.py
    ("tfl_eval_tflite_required", "tflite/evaluate.py", [], "--tflite=<file.tflite>", None),
    ("tfl_eval_tflite_missing", "tflite/evaluate.py", ["--tflite={tmp}/none.tflite"], "not found", None),
    ("tfl_eval_tflite_fake", "tflite/evaluate.py", ["--tflite={fake_tflite}"], "not a TFLite flatbuffer", None),
    ("tfl_eval_tflite_is_keras", "tflite/evaluate.py", ["--tflite={grey_keras}"], "is not a .tflite file", None),
    ("tfl_eval_limit_0", "tflite/evaluate.py", ["--tflite={grey_tflite}", "--dataset=digits", "--limit=0"], "--limit must be", None),
    ("tfl_eval_one_image", "tflite/evaluate.py", ["--tflite={grey_tflite}", "--dataset={one_image}"], "test split has no images", None),
    ("tfl_eval_dataset_missing", "tflite/evaluate.py", ["--tflite={grey_tflite}", "--dataset={tmp}/nowhere"], "does not exist", None),
    ("tfl_eval_detector_checkpoint", "tflite/evaluate.py", ["--tflite={grey_tflite}", "--checkpoint={detector_keras}"], "is an SSD detector, not a classifier", None),
    ("tfl_eval_checkpoint_mismatch", "tflite/evaluate.py", ["--tflite={grey_tflite}", "--checkpoint={rgb3_keras}"], "takes 224x224x3 images", None),
    ("tfl_eval_checkpoint_text", "tflite/evaluate.py", ["--tflite={grey_tflite}", "--checkpoint={text_keras}"], "not a valid .keras archive", None),
    ("tfl_eval_num_threads_0", "tflite/evaluate.py", ["--tflite={grey_tflite}", "--num_threads=0"], "--num_threads must be", None),
    ("tfl_eval_output_json_dir", "tflite/evaluate.py", ["--tflite={grey_tflite}", "--output_json={empty_dir}"], "is a folder", None),
]


@pytest.mark.parametrize("case, script, args, expected, absent", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_line(files, case, script, args, expected, absent):
    values = dict(files, case=case)
    code, out, err = _run(script, [a.format(**values) for a in args])
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    print(f"CASE {case} | {code} | {errors[0] if errors else err[-300:]!r}")  # the table, with -s
    assert code == 2, (code, out[-2000:], err[-3000:])
    assert len(errors) == 1 and len(err.splitlines()) == 1, err[-3000:]  # one line, nothing else
    assert expected.format(**values) in errors[0], errors[0]
    assert "Traceback" not in err and "SUMMARY" not in out, err[-3000:]
    if absent:
        path = absent.format(**values)
        if path.startswith("--model_dir="):
            path = path[len("--model_dir="):]
        assert not os.path.exists(path), f"{path} was left behind"


def test_verbose_adds_the_traceback(files):
    code, _, err = _run("tflite/evaluate.py", [f"--tflite={files['fake_tflite']}", "--verbose"])
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_cifar100_offline_fails_at_once(files):
    import time

    start = time.time()
    code, _, err = _run("recipes/cifar100.py", [f"--data_dir={files['empty_dir']}",
                                                f"--model_dir={files['tmp']}/runs/cifar_offline"])
    assert code == 2 and time.time() - start < 30
    assert files["empty_dir"] in err and "download_and_prepare" in err  # where it looked, how to get it
    assert os.listdir(files["empty_dir"]) == []


# -- the Python API ------------------------------------------------------------------------


def _api_cases():
    import keras_skipblock as ks
    from keras_skipblock.evaluation import imagenet_eval_dataset, load_classifier
    from keras_skipblock.litert import load_images
    from keras_skipblock.training import TrainConfig, train

    nan, inf = float("nan"), float("inf")
    return [
        ("bias_alpha_nan", lambda f: ks.BiasLoss(alpha=nan), "alpha must be a finite number"),
        ("bias_alpha_inf", lambda f: ks.BiasLoss(alpha=inf), "alpha must be a finite number"),
        ("bias_alpha_negative", lambda f: ks.BiasLoss(alpha=-0.5), "alpha must be a finite number >= 0"),
        ("bias_beta_nan", lambda f: ks.BiasLoss(beta=nan), "beta must be a finite number"),
        ("bias_clamp_nan", lambda f: ks.BiasLoss(clamp=(0.5, nan)), "0 < low < high"),
        ("bias_label_smoothing_nan", lambda f: ks.BiasLoss(label_smoothing=nan), "label_smoothing"),
        ("bias_weights_alpha_nan", lambda f: ks.bias_weights(np.ones((2, 3, 3, 1)), alpha=nan), "alpha must be"),
        ("model_num_classes_0", lambda f: ks.models.SkipblockNetM(num_classes=0), "num_classes must be an integer >= 1"),
        ("model_num_classes_float", lambda f: ks.models.SkipblockNetXS(num_classes=2.5), "num_classes must be an integer"),
        ("model_weights_imagenet", lambda f: ks.models.SkipblockNetM(weights="imagenet"), "no automatic ImageNet download"),
        ("model_weights_keras", lambda f: ks.models.SkipblockNetM(weights=f["rgb3_keras"]), "is a whole saved model"),
        ("model_weights_missing", lambda f: ks.models.SkipblockNetM(weights=f["tmp"] + "/w.weights.h5"), "not found"),
        ("model_weights_txt", lambda f: ks.models.SkipblockNetM(weights=f["afile"]), "is not a .weights.h5"),
        ("model_width_0", lambda f: ks.models.SkipblockNetS(width=0), "width must be a finite number > 0"),
        ("model_dropout_1", lambda f: ks.models.SkipblockNetS(dropout=1.0), "dropout must be"),
        ("model_input_16", lambda f: ks.models.SkipblockNetS(input_shape=(16, 16, 3)), "sides >= 32"),
        ("get_model_unknown", lambda f: ks.models.get_model("resnet9000"), "Unknown model 'resnet9000'"),
        ("get_model_num_classes_0", lambda f: ks.models.get_model("mobilenet_v2", num_classes=0), "num_classes must be"),
        ("train_epochs_0", lambda f: train(TrainConfig(epochs=0, model_dir=f["tmp"] + "/api_run")), "--epochs must be"),
        ("train_model_dir_file", lambda f: train(TrainConfig(model_dir=f["afile"])), "is a file"),
        ("train_dataset_unknown", lambda f: train(TrainConfig(dataset="mnist", model_dir=f["tmp"] + "/api_run")), "--dataset: unknown value 'mnist'"),
        ("eval_dataset_batch_0", lambda f: imagenet_eval_dataset(f["val"], batch_size=0), "batch_size must be"),
        ("eval_classifier_text_keras", lambda f: load_classifier(f["text_keras"]), "not a valid .keras archive"),
        ("eval_classifier_detector", lambda f: load_classifier(f["detector_keras"]), "is an SSD detector"),
        ("load_images_limit_0", lambda f: load_images("digits", "test", 8, limit=0), "limit must be"),
    ]


def test_python_api(files):
    failures = []
    cases = _api_cases()
    assert len(cases) >= 25
    for name, call, message in cases:
        try:
            call(files)
        except ValueError as error:
            text = str(error)
            print(f"CASE {name} | {type(error).__name__} | {text!r}")  # the table, with -s
            if message not in text or "\n" in text:
                failures.append(f"{name}: {text!r}")
            continue
        failures.append(f"{name}: no error")
    assert not failures, "\n".join(failures)
    assert not os.path.exists(files["tmp"] + "/api_run")


def test_beta_of_2_with_the_clamp_warns():
    import keras_skipblock as ks

    with pytest.warns(UserWarning, match="every sample is clamped to 0.5"):
        ks.BiasLoss(beta=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ks.BiasLoss(beta=0.3)  # the default is quiet


def test_infinite_logits_are_a_clear_error():
    import tensorflow as tf

    import keras_skipblock as ks

    logits = np.zeros((4, 10), "float32")
    logits[1, 3] = np.inf
    features = np.random.RandomState(0).rand(4, 3, 3, 2).astype("float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="logits contain NaN or Inf"):
        ks.BiasLoss()(np.arange(4), {"logits": logits, "features": features})


def test_json_outputs_hold_no_infinity(tmp_path):
    from keras_skipblock.training.driver import write_json

    path = str(tmp_path / "summary.json")
    write_json(path, {"bias_loss_variance_min": math.inf, "x": [1.0, math.nan], "ok": 0.5})
    with open(path) as f:
        text = f.read()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"bias_loss_variance_min": None, "x": [1.0, None], "ok": 0.5}
