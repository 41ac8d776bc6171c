"""Flags shared by every recipe; each recipe only sets its defaults and calls `run`."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags(names=None, choices=None, helps=None, **defaults):
    """Define the common flags with this recipe's defaults (keyword = flag name).

    names: only these flags (recipes/voc.py takes the ones detection shares);
    choices: other values for enum flags; helps: other help texts. --verbose is
    always defined."""
    d = dict(
        dataset="fashion_mnist", data_dir=None, manual_dir=None, image_size=224, channels=None,
        validation_size=None, model="skipblocknet_m", width=None, dropout=None, bn_momentum=None,
        skip_blocks=True, init_checkpoint=None, loss="bias", alpha=0.3, beta=0.3,
        normalization="batch", label_smoothing=0.0, epochs=350, batch_size=512,
        learning_rate=None, lr_schedule="paper", warmup_epochs=3.0, milestones=["60", "120", "160"],
        lr_factor=0.2, optimizer="rmsprop", momentum=0.9, weight_decay=1e-5, ema_decay=0.9999,
        model_dir=None, seed=0, strategy="default", tpu=None, mixed_precision=False,
        steps_per_epoch=None, eval_steps=None, backup_steps=None, run_eagerly=False,
        qat_epochs=0, qat_learning_rate=None,
    )
    unknown = (set(defaults) | set(names or ()) | set(choices or {}) | set(helps or {})) - set(d)
    if unknown:
        raise ValueError(f"unknown recipe flags {sorted(unknown)}")
    d.update(defaults)
    flags.DEFINE_bool("verbose", False, "Also show TensorFlow's and absl's INFO logs, and a "
                      "failure's traceback.")
    try:
        FLAGS(sys.argv, known_only=True)  # --verbose is needed before TensorFlow is imported
        if FLAGS.verbose:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    except flags.Error:
        pass  # app.run reports it
    from keras_skipblock.data import DATASETS
    from keras_skipblock.training import LOSSES, STRATEGIES
    from keras_skipblock.training.driver import SCHEDULES

    choices = dict(dict(dataset=list(DATASETS), loss=list(LOSSES), lr_schedule=list(SCHEDULES),
                        optimizer=["rmsprop", "sgd"], normalization=["batch", "global"],
                        strategy=list(STRATEGIES)), **(choices or {}))

    def define(kind, name, text):
        if names is not None and name not in names:
            return
        text = (helps or {}).get(name, text)
        if kind == "enum":
            flags.DEFINE_enum(name, d[name], list(choices[name]), text)
        else:
            getattr(flags, f"DEFINE_{kind}")(name, d[name], text)

    define("enum", "dataset", "Data set.")
    define("string", "data_dir", "Where the data is: Fashion-MNIST IDX folder, TFDS data dir, or a "
           "folder of class sub-folders (--dataset=folder).")
    define("string", "manual_dir", "TFDS manual_dir (ImageNet's tar files).")
    define("integer", "image_size", "Side of the square input images.")
    define("integer", "channels", "Grey data sets: feed 1 or 3 channels.")
    define("integer", "validation_size",
           "Training images held out to choose the best checkpoint (array data sets).")
    define("string", "model", "skipblocknet_xs|s|m|l or a keras.applications baseline: "
           "mobilenet_v3_large, mobilenet_v3_small, mobilenet_v2, ...")
    define("float", "width", "Width multiplier (SkipblockNet width, MobileNet alpha).")
    define("float", "dropout", "Dropout before the classifier.")
    define("float", "bn_momentum", "BatchNorm momentum (paper: 0.99).")
    define("bool", "skip_blocks", "SkipblockNet: use the skip blocks.")
    define("string", "init_checkpoint", "A .keras model, or the authors' skipblocknet-m.pth, to "
           "fine-tune from (layers with matching shapes are copied).")
    define("enum", "loss", "bias: Bias Loss; ce: cross-entropy; focal.")
    define("float", "alpha", "Bias Loss alpha.")
    define("float", "beta", "Bias Loss beta.")
    define("enum", "normalization", "Bias Loss variance scaling.")
    define("float", "label_smoothing", "Bias Loss label smoothing.")
    define("integer", "epochs", "Epochs.")
    define("integer", "batch_size", "Global batch size (all replicas).")
    define("float", "learning_rate", "Peak learning rate; for the paper schedule the default is "
           "0.032 * batch_size / 512.")
    define("enum", "lr_schedule", "Learning-rate schedule.")
    define("float", "warmup_epochs", "Warm-up epochs (paper, cosine).")
    define("list", "milestones", "Multistep: epochs where the rate is cut.")
    define("float", "lr_factor", "Multistep: factor at each milestone.")
    define("enum", "optimizer", "Optimizer.")
    define("float", "momentum", "Optimizer momentum.")
    define("float", "weight_decay", "L2 on conv/dense kernels, in the loss.")
    define("float", "ema_decay", "Weight EMA decay; 0 turns EMA off.")
    define("string", "model_dir", "Output folder; rerun with the same one to resume.")
    define("integer", "seed", "Random seed.")
    define("enum", "strategy", "tf.distribute strategy.")
    define("string", "tpu", "--strategy=tpu: TPU name or address.")
    define("bool", "mixed_precision", "mixed_float16 on GPU, mixed_bfloat16 on TPU/CPU.")
    define("integer", "steps_per_epoch", "Cap each epoch at this many steps.")
    define("integer", "eval_steps", "Cap evaluation at this many batches.")
    define("integer", "backup_steps", "Also back up every N steps.")
    define("bool", "run_eagerly", "Debugging and tests: run eagerly, no tracing.")
    define("integer", "qat_epochs", "After the float training, fine-tune the best model quantization-aware "
           "(int8 simulated) for this many epochs: writes best_qat.keras (convert it with tflite/convert.py "
           "--quantize=int8, no calibration data), a SUMMARY_QAT line and summary.json's qat section. "
           "0: none. (To quantize an existing checkpoint without float epochs: quantization.fine_tune.)")
    define("float", "qat_learning_rate", "Constant learning rate of the QAT epochs (the run's optimizer, "
           "no EMA); default 1/100 of the float peak rate.")


def flag_values(config_class):
    """{field: value} of the defined flags that are fields of `config_class`, milestones
    as numbers. --verbose is left out: it shows logs, not progress."""
    from keras_skipblock.validation import InputError

    names = set(config_class.__dataclass_fields__) - {"verbose"}
    values = {name: FLAGS[name].value for name in FLAGS if name in names}
    if "milestones" in values:
        try:
            values["milestones"] = [float(m) for m in values["milestones"]]
        except ValueError:
            raise InputError(f"--milestones must be epochs separated by commas, e.g. 60,120,160; got "
                             f"{','.join(values['milestones'])}.") from None
    return values


def config_from_flags(recipe_name):
    from keras_skipblock.training import TrainConfig

    values = flag_values(TrainConfig)
    if not values.get("model_dir"):
        values["model_dir"] = os.path.join("runs", f"{recipe_name}_{values['model']}_{values['loss']}")
    return TrainConfig(**values)


def check_arguments(argv):
    if len(argv) > 1:
        from absl import app

        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from keras_skipblock.logging_utils import configure_logging

    configure_logging(FLAGS.verbose)


def run(recipe_name, check=None, argv=None):
    """Parse flags, check them, build the config, train. `check(config)` may validate recipe
    specifics. Every bad flag, file or data set ends in one line and exit status 2."""

    def main(argv):
        from keras_skipblock.training import train
        from keras_skipblock.training.driver import check_config

        check_arguments(argv)
        config = check_config(config_from_flags(recipe_name))
        if check is not None:
            check(config)
        train(config)

    from keras_skipblock.validation import run_cli

    run_cli(main, argv)
