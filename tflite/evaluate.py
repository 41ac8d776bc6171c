"""Top-1 accuracy of `.tflite` models on a data set, next to the Keras model's.

  python tflite/evaluate.py --tflite=fp32.tflite,int8.tflite \
      --checkpoint=runs/fmnist/best.keras --dataset=fashion_mnist

--dataset: fashion_mnist or digits (their test splits) or a folder of class
sub-folders (its held-out split). --checkpoint is optional; with it the
Keras accuracy is printed first and each .tflite's difference to it.
"""

import os
import sys

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


def main(argv):
    del argv
    import json

    from keras_skipblock.litert import (LiteRTError, LiteRTModel, keras_accuracy, load_images,
                                        load_keras_model, tflite_accuracy)

    try:
        if not FLAGS.tflite:
            raise LiteRTError("--tflite=<file.tflite>[,...] is required.")
        lites = [LiteRTModel(path, FLAGS.num_threads) for path in FLAGS.tflite]
        shape = lites[0].input_shape
        for lite in lites[1:]:
            if lite.input_shape != shape:
                raise LiteRTError(f"Input shapes differ: {shape} vs {lite.input_shape} ({lite.path}).")
        images, labels = load_images(FLAGS.dataset, "test", shape[0], shape[2], FLAGS.limit,
                                     data_dir=FLAGS.data_dir)
        results = []
        reference = None
        if FLAGS.checkpoint:
            model = load_keras_model(checkpoint=FLAGS.checkpoint)
            reference = keras_accuracy(model, images, labels, name=f"keras {FLAGS.checkpoint}")
            print(reference.describe())
            results.append(reference)
        for lite in lites:
            accuracy = tflite_accuracy(lite, images, labels)
            delta = "" if reference is None else (
                f"  ({100 * (accuracy.top1 - reference.top1):+.2f} points vs Keras)")
            print(accuracy.describe() + delta)
            results.append(accuracy)
    except LiteRTError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"dataset": FLAGS.dataset, "results": [vars(r) for r in results]}, f, indent=2)
    return 0


if __name__ == "__main__":
    app.run(main)
