"""Flags shared by every recipe; each recipe only sets its defaults and calls `run`."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags(**defaults):
    """Define the common flags with this recipe's defaults (keyword = flag name)."""
    d = dict(
        dataset="fashion_mnist", data_dir=None, manual_dir=None, image_size=224, channels=None,
        validation_size=None, model="skipblocknet_m", width=None, dropout=None, bn_momentum=None,
        skip_blocks=True, init_checkpoint=None, loss="bias", alpha=0.3, beta=0.3,
        normalization="batch", label_smoothing=0.0, epochs=350, batch_size=512,
        learning_rate=None, lr_schedule="paper", warmup_epochs=3.0, milestones=["60", "120", "160"],
        lr_factor=0.2, optimizer="rmsprop", momentum=0.9, weight_decay=1e-5, ema_decay=0.9999,
        model_dir=None, seed=0, strategy="default", tpu=None, mixed_precision=False,
        steps_per_epoch=None, eval_steps=None, backup_steps=None, run_eagerly=False,
    )
    unknown = set(defaults) - set(d)
    if unknown:
        raise ValueError(f"unknown recipe defaults {sorted(unknown)}")
    d.update(defaults)
    flags.DEFINE_bool("verbose", False, "Also show TensorFlow's and absl's INFO logs.")
    try:
        FLAGS(sys.argv, known_only=True)  # --verbose is needed before TensorFlow is imported
        if FLAGS.verbose:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    except flags.Error:
        pass  # app.run reports it
    from keras_skipblock.data import DATASETS
    from keras_skipblock.training import LOSSES, STRATEGIES
    from keras_skipblock.training.driver import SCHEDULES

    flags.DEFINE_enum("dataset", d["dataset"], list(DATASETS), "Data set.")
    flags.DEFINE_string("data_dir", d["data_dir"], "Where the data is: Fashion-MNIST IDX folder, "
                        "TFDS data dir, or a folder of class sub-folders (--dataset=folder).")
    flags.DEFINE_string("manual_dir", d["manual_dir"], "TFDS manual_dir (ImageNet's tar files).")
    flags.DEFINE_integer("image_size", d["image_size"], "Side of the square input images.")
    flags.DEFINE_integer("channels", d["channels"], "Grey data sets: feed 1 or 3 channels.")
    flags.DEFINE_integer("validation_size", d["validation_size"],
                         "Training images held out to choose the best checkpoint (array data sets).")
    flags.DEFINE_string("model", d["model"], "skipblocknet_xs|s|m|l or a keras.applications "
                        "baseline: mobilenet_v3_large, mobilenet_v3_small, mobilenet_v2, ...")
    flags.DEFINE_float("width", d["width"], "Width multiplier (SkipblockNet width, MobileNet alpha).")
    flags.DEFINE_float("dropout", d["dropout"], "Dropout before the classifier.")
    flags.DEFINE_float("bn_momentum", d["bn_momentum"], "BatchNorm momentum (paper: 0.99).")
    flags.DEFINE_bool("skip_blocks", d["skip_blocks"], "SkipblockNet: use the skip blocks.")
    flags.DEFINE_string("init_checkpoint", d["init_checkpoint"],
                        "A .keras model, or the authors' skipblocknet-m.pth, to fine-tune from "
                        "(layers with matching shapes are copied).")
    flags.DEFINE_enum("loss", d["loss"], list(LOSSES), "bias: Bias Loss; ce: cross-entropy; focal.")
    flags.DEFINE_float("alpha", d["alpha"], "Bias Loss alpha.")
    flags.DEFINE_float("beta", d["beta"], "Bias Loss beta.")
    flags.DEFINE_enum("normalization", d["normalization"], ["batch", "global"],
                      "Bias Loss variance scaling.")
    flags.DEFINE_float("label_smoothing", d["label_smoothing"], "Bias Loss label smoothing.")
    flags.DEFINE_integer("epochs", d["epochs"], "Epochs.")
    flags.DEFINE_integer("batch_size", d["batch_size"], "Global batch size (all replicas).")
    flags.DEFINE_float("learning_rate", d["learning_rate"], "Peak learning rate; for the paper "
                       "schedule the default is 0.032 * batch_size / 512.")
    flags.DEFINE_enum("lr_schedule", d["lr_schedule"], list(SCHEDULES), "Learning-rate schedule.")
    flags.DEFINE_float("warmup_epochs", d["warmup_epochs"], "Warm-up epochs (paper, cosine).")
    flags.DEFINE_list("milestones", d["milestones"], "Multistep: epochs where the rate is cut.")
    flags.DEFINE_float("lr_factor", d["lr_factor"], "Multistep: factor at each milestone.")
    flags.DEFINE_enum("optimizer", d["optimizer"], ["rmsprop", "sgd"], "Optimizer.")
    flags.DEFINE_float("momentum", d["momentum"], "Optimizer momentum.")
    flags.DEFINE_float("weight_decay", d["weight_decay"], "L2 on conv/dense kernels, in the loss.")
    flags.DEFINE_float("ema_decay", d["ema_decay"], "Weight EMA decay; 0 turns EMA off.")
    flags.DEFINE_string("model_dir", d["model_dir"], "Output folder; rerun with the same one to resume.")
    flags.DEFINE_integer("seed", d["seed"], "Random seed.")
    flags.DEFINE_enum("strategy", d["strategy"], list(STRATEGIES), "tf.distribute strategy.")
    flags.DEFINE_string("tpu", d["tpu"], "--strategy=tpu: TPU name or address.")
    flags.DEFINE_bool("mixed_precision", d["mixed_precision"],
                      "mixed_float16 on GPU, mixed_bfloat16 on TPU/CPU.")
    flags.DEFINE_integer("steps_per_epoch", d["steps_per_epoch"], "Cap each epoch at this many steps.")
    flags.DEFINE_integer("eval_steps", d["eval_steps"], "Cap evaluation at this many batches.")
    flags.DEFINE_integer("backup_steps", d["backup_steps"], "Also back up every N steps.")
    flags.DEFINE_bool("run_eagerly", d["run_eagerly"], "Debugging and tests: run eagerly, no tracing.")


def config_from_flags(recipe_name):
    from keras_skipblock.training import TrainConfig
    from keras_skipblock.validation import InputError

    names = {field for field in TrainConfig.__dataclass_fields__} - {"verbose"}  # logs, not progress
    values = {name: FLAGS[name].value for name in FLAGS if name in names}
    try:
        values["milestones"] = [float(m) for m in values["milestones"]]
    except ValueError:
        raise InputError(f"--milestones must be epochs separated by commas, e.g. 60,120,160; got "
                         f"{','.join(values['milestones'])}.") from None
    if not values.get("model_dir"):
        values["model_dir"] = os.path.join("runs", f"{recipe_name}_{values['model']}_{values['loss']}")
    return TrainConfig(**values)


def run(recipe_name, check=None, argv=None):
    """Parse flags, check them, build the config, train. `check(config)` may validate recipe
    specifics. Every bad flag, file or data set ends in one line and exit status 2."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        from keras_skipblock.logging_utils import configure_logging
        from keras_skipblock.training import train
        from keras_skipblock.training.driver import check_config

        configure_logging(FLAGS.verbose)
        config = check_config(config_from_flags(recipe_name))
        if check is not None:
            check(config)
        train(config)

    from keras_skipblock.validation import run_cli

    run_cli(main, argv)
