"""Top-1 accuracy of `.tflite` models on a data set, next to the Keras model's.

  python tflite/evaluate.py --tflite=fp32.tflite,int8.tflite \
      --checkpoint=runs/fmnist/best.keras --dataset=fashion_mnist

--dataset: fashion_mnist or digits (their test splits) or a folder of class
sub-folders (its held-out split). --checkpoint is optional; with it the
Keras accuracy is printed first and each .tflite's difference to it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("tflite", None, "One or more .tflite files (comma-separated).")
flags.DEFINE_string("checkpoint", None, "Optional .keras checkpoint to compare with.")
flags.DEFINE_string("dataset", "fashion_mnist", "fashion_mnist, digits or a folder.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX folder.")
flags.DEFINE_integer("limit", None, "Evaluate on at most this many test images.")
flags.DEFINE_integer("num_threads", 1, "LiteRT CPU threads.")
flags.DEFINE_string("output_json", None, "Also write the accuracies here.")
flags.DEFINE_bool("verbose", False, "On an error, also show its traceback.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import json

    from keras_skipblock import validation
    from keras_skipblock.litert import (LiteRTError, LiteRTModel, keras_accuracy, load_images,
                                        load_keras_model, tflite_accuracy)

    # every flag and file first: nothing is loaded or written before they pass
    if not FLAGS.tflite:
        raise LiteRTError("--tflite=<file.tflite>[,...] is required.")
    for path in FLAGS.tflite:
        validation.check_tflite_file("--tflite", path)
    if FLAGS.checkpoint:
        validation.check_model_file("--checkpoint", FLAGS.checkpoint, (".keras", ".pth", ".pt"))
    validation.check_image_source("--dataset", FLAGS.dataset)
    if FLAGS.data_dir:
        validation.check_dir("--data_dir", FLAGS.data_dir, "Fashion-MNIST IDX folder")
    validation.check_number("--limit", FLAGS.limit, low=1, integer=True, allow_none=True,
                            fix="Leave it unset to evaluate every test image.")
    validation.check_number("--num_threads", FLAGS.num_threads, low=1, integer=True)
    if FLAGS.output_json:
        validation.check_output_file("--output_json", FLAGS.output_json, ".json")

    lites = [LiteRTModel(path, FLAGS.num_threads) for path in FLAGS.tflite]
    shape = lites[0].input_shape
    for lite in lites[1:]:
        if lite.input_shape != shape:
            raise LiteRTError(f"Input shapes differ: {shape} vs {lite.input_shape} ({lite.path}).")
    if len(shape) != 3 or shape[0] != shape[1]:
        raise LiteRTError(f"{lites[0].path} takes {shape}, not square images (H, W, C).")
    classes = {int(lite.output["shape"][-1]) for lite in lites}
    model = None
    if FLAGS.checkpoint:  # before any data is read: a model that does not fit stops here
        model = load_keras_model(checkpoint=FLAGS.checkpoint)
        validation.check_classifier_fits(model, FLAGS.checkpoint, shape, max(classes), "the .tflite")
    images, labels = load_images(FLAGS.dataset, "test", shape[0], shape[2], FLAGS.limit,
                                 data_dir=FLAGS.data_dir)
    if int(labels.max()) >= min(classes):
        raise validation.InputError(
            f"{FLAGS.dataset} has labels up to {int(labels.max())}; the .tflite has {min(classes)} "
            "classes. Evaluate on the data set the model was trained for.")
    results = []
    reference = None
    if model is not None:
        reference = keras_accuracy(model, images, labels, name=f"keras {FLAGS.checkpoint}")
        print(reference.describe())
        results.append(reference)
    for lite in lites:
        accuracy = tflite_accuracy(lite, images, labels)
        delta = "" if reference is None else (
            f"  ({100 * (accuracy.top1 - reference.top1):+.2f} points vs Keras)")
        print(accuracy.describe() + delta)
        results.append(accuracy)
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"dataset": FLAGS.dataset, "results": [vars(r) for r in results]}, f, indent=2)
    return 0


if __name__ == "__main__":
    from keras_skipblock.validation import run_cli

    run_cli(main)
