"""ImageNet top-1 / top-5 of a .pth, .keras or .tflite classifier with the authors'
protocol (shorter side 256, bilinear; centre crop 224).

  python recipes/evaluate_imagenet.py --model skipblocknet-m.pth --data_dir /data/imagenet/val
  python recipes/evaluate_imagenet.py --model m.tflite --input_range 0,255 --data_dir /data/imagenet/val
  python recipes/evaluate_imagenet.py --model best.keras --dataset imagenet2012 --data_dir ~/tensorflow_datasets

--data_dir: a folder of class sub-folders (the layout torchvision's ImageFolder
and the authors' validate.py read; class folders in sorted order, e.g.
n01440764 ... n15075141) or, with --dataset imagenet2012, a TFDS data dir.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The classifier: the authors' .pth, a .keras or a .tflite.")
flags.DEFINE_enum("dataset", "folder", ["folder", "imagenet2012"], "Where the images come from.")
flags.DEFINE_string("data_dir", None, "Validation folder (class sub-folders) or TFDS data dir.")
flags.DEFINE_string("split", "validation", "TFDS split (--dataset imagenet2012).")
flags.DEFINE_list("input_range", None, "low,high of the model's input (needed for .tflite): "
                  "0,255 for a .tflite of the authors' .pth, -1,1 for one of a .keras.")
flags.DEFINE_integer("batch_size", 50, "Images per batch.")
flags.DEFINE_integer("limit", None, "Evaluate at most this many images.")
flags.DEFINE_integer("num_threads", 1, "LiteRT CPU threads (.tflite).")
flags.DEFINE_string("output_json", None, "Also write the result here.")
flags.DEFINE_bool("verbose", False, "On an error, also show its traceback.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import json

    from keras_skipblock import validation
    from keras_skipblock.evaluation import (check_classifier_file, check_input_range, evaluate_top_k,
                                            imagenet_eval_dataset, load_classifier)

    # every flag and file first: nothing is read or written before they pass
    if not FLAGS.model:
        raise validation.InputError("--model is required: pass the model file (.pth, .keras or .tflite).")
    validation.check_dir("--data_dir", FLAGS.data_dir,
                         "folder of class sub-folders" if FLAGS.dataset == "folder" else "TFDS data dir")
    input_range = check_input_range(FLAGS.input_range) if FLAGS.input_range else None
    check_classifier_file(FLAGS.model, input_range)
    validation.check_number("--batch_size", FLAGS.batch_size, low=1, integer=True)
    validation.check_number("--limit", FLAGS.limit, low=1, integer=True, allow_none=True,
                            fix="Leave it unset to evaluate every image.")
    validation.check_number("--num_threads", FLAGS.num_threads, low=1, integer=True)
    if FLAGS.output_json:
        validation.check_output_file("--output_json", FLAGS.output_json, ".json")
    source = FLAGS.data_dir if FLAGS.dataset == "folder" else "imagenet2012"
    dataset, count, info = imagenet_eval_dataset(source, FLAGS.batch_size, data_dir=FLAGS.data_dir,
                                                 split=FLAGS.split, limit=FLAGS.limit, with_info=True)
    predict, name = load_classifier(FLAGS.model, input_range, FLAGS.num_threads, info.num_classes)
    print(f"Evaluating {name} on {count} images from {FLAGS.data_dir} "
          "(resize shorter side 256, bilinear; centre crop 224)", flush=True)
    result = evaluate_top_k(predict, dataset, count, files=info.files)
    print(f"SUMMARY {result.describe(FLAGS.model)}", flush=True)
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"model": FLAGS.model, "data_dir": FLAGS.data_dir, **vars(result)}, f, indent=2)
    return 0


if __name__ == "__main__":
    from keras_skipblock.validation import run_cli

    run_cli(main)
