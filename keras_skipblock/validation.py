"""Checks of user input made before any work starts, and the scripts' one-line errors.

Every check raises `InputError` (a `ValueError`) whose message names the bad
value and how to fix it. The training drivers, the model constructors and the
scripts call these functions at their edge, so a bad number, a missing or
wrong file, or a model that does not fit the data fails in one line before a
data set is read or a file is written. `run_cli` runs a script's `main` and
turns these errors (and the package's other user-facing errors) into one line
on stderr and exit status 2; `--verbose` adds the traceback.

This module imports only the standard library at load time.
"""

import math
import numbers
import os
import sys
import zipfile


class InputError(ValueError):
    """A bad flag, argument or file, found before any work started."""


# -- numbers -------------------------------------------------------------------------------


def check_number(name, value, low=None, high=None, low_open=False, high_open=False, integer=False,
                 allow_none=False, fix=""):
    """`value` if it is a finite number (an integer when `integer`) within the bounds, else
    InputError naming `name`, the allowed range and `fix`. None passes when `allow_none`."""
    if value is None and allow_none:
        return value
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = isinstance(value, numbers.Integral) or float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return value
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low if integer else format(low, 'g')}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high if integer else format(high, 'g')}")
    kind = "an integer" if integer else "a finite number"
    wanted = kind + (" " + " and ".join(parts) if parts else "")
    raise InputError(f"{name} must be {wanted}; got {value!r}." + (f" {fix}" if fix else ""))


# -- files and folders ----------------------------------------------------------------------


def check_file(name, path, suffixes=None, what="file"):
    """An existing, non-empty regular file whose name ends in one of `suffixes`."""
    if not path:
        raise InputError(f"{name} is required: pass the {what}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{name}: {what} not found: {os.path.abspath(path)}.")
    if os.path.isdir(path):
        raise InputError(f"{name}: {os.path.abspath(path)} is a folder; pass the {what} itself.")
    if suffixes and not path.lower().endswith(tuple(suffixes)):
        raise InputError(f"{name}: {path} is not a {' or '.join(suffixes)} file; pass the {what}.")
    if os.path.getsize(path) == 0:
        raise InputError(f"{name}: {path} is empty (0 bytes); pass a complete {what}.")
    return path


def check_dir(name, path, what="folder", fix=""):
    """An existing folder."""
    fix = f" {fix}" if fix else ""
    if not path:
        raise InputError(f"{name} is required: pass the {what}.{fix}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{name}: {what} {os.path.abspath(path)} does not exist.{fix}")
    if not os.path.isdir(path):
        raise InputError(f"{name}: {os.path.abspath(path)} is a file, not a folder; pass the {what}.{fix}")
    return path


def check_output_dir(name, path):
    """A folder to write into: it may not exist yet, but must not be a file."""
    if not path:
        raise InputError(f"{name} is required: pass the output folder.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{name}: {os.path.abspath(path)} is a file; pass a folder (it is created "
                         "if missing).")
    return path


def check_output_file(name, path, suffix=None):
    """A file to write: not a folder, in a folder that exists, ending in `suffix`."""
    if not path:
        raise InputError(f"{name} is required: pass the file to write" + (f" (*{suffix})." if suffix else "."))
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"{name}: {os.path.abspath(path)} is a folder; pass a file name.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"{name}: folder {parent} does not exist; create it first.")
    if suffix and not path.lower().endswith(suffix):
        raise InputError(f"{name}: {path} should end in {suffix}.")
    return path


def check_keras_archive(name, path):
    """A `.keras` file Keras can open: a zip holding config.json (Keras says "File not found"
    for an empty, text or truncated file)."""
    check_file(name, path, (".keras",), ".keras model file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{name}: {path} is not a valid .keras archive ({error}); a .keras file is "
                         "the zip that model.save('name.keras') writes.") from None
    if "config.json" not in names or bad is not None:
        reason = f"damaged member {bad}" if bad else "no config.json inside"
        raise InputError(f"{name}: {path} is not a valid .keras archive ({reason}); a .keras file is "
                         "the zip that model.save('name.keras') writes.")
    return path


TFLITE_IDENTIFIER = b"TFL3"  # bytes 4-8 of every TFLite flatbuffer


def check_tflite_file(name, path):
    check_file(name, path, (".tflite",), ".tflite model file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != TFLITE_IDENTIFIER:
        raise InputError(f"{name}: {path} is not a TFLite flatbuffer (no 'TFL3' identifier); "
                         "write one with tflite/convert.py.")
    return path


MODEL_FILE_KINDS = (".keras", ".pth", ".pt", ".tflite")


def check_model_file(name, path, kinds=MODEL_FILE_KINDS):
    """A model file of one of `kinds`, checked as far as it can be without loading it."""
    check_file(name, path, kinds, "model file (" + ", ".join(kinds) + ")")
    if path.lower().endswith(".keras"):
        check_keras_archive(name, path)
    elif path.lower().endswith(".tflite"):
        check_tflite_file(name, path)
    return path


def check_weights_argument(weights, name="weights"):
    """A model constructor's `weights`: None, the authors' `.pth`/`.pt` or a Keras
    `.weights.h5` file; checked before the model is built."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise InputError(f"{name} must be None or a file path; got {weights!r}.")
    weights = os.fspath(weights)
    if weights.lower() == "imagenet" and not os.path.exists(weights):
        raise InputError(f"{name}='imagenet': there is no automatic ImageNet download for "
                         "SkipblockNet; download the authors' skipblocknet-m.pth (README, "
                         "'Pretrained weights') and pass its path, or weights=None.")
    if weights.lower().endswith(".keras"):
        raise InputError(f"{name}={weights!r} is a whole saved model, not a weights file: load it "
                         "with keras.saving.load_model(path), or pass a .weights.h5 or the "
                         "authors' .pth.")
    return check_file(name, weights, (".weights.h5", ".h5", ".pth", ".pt"),
                      "weights file (.weights.h5, or the authors' .pth)")


def check_choices(name, values, choices):
    """Each of `values` (a list flag) one of `choices`, and at least one given."""
    values = list(values or [])
    if not values:
        raise InputError(f"{name} is empty; give one or more of {', '.join(choices)}.")
    for value in values:
        if value not in choices:
            raise InputError(f"{name}: unknown value {value!r}; use one or more of {', '.join(choices)}.")
    return values


IMAGE_SOURCES = ("fashion_mnist", "digits")


def check_image_source(name, source):
    """Where LiteRT's real images come from: fashion_mnist, digits or an existing folder."""
    if source in IMAGE_SOURCES:
        return source
    return check_dir(name, source, "folder", "Pass fashion_mnist, digits or a folder of class "
                     "sub-folders of images.")


# -- models against data ------------------------------------------------------------------


def shape_text(shape):
    """(224, 224, 3) -> "224x224x3"."""
    return "x".join(str(s) for s in shape)


def is_detector(model):
    """An SSD from `keras_skipblock.detection.build_detector` (boxes and per-level features)."""
    names = {layer.name for layer in model.layers}
    return {"boxes", "logits", "features_0"} <= names


def check_classifier_fits(model, name, image_shape=None, num_classes=None, what="the data"):
    """`model` is a classifier (one image input; logits out) that takes `image_shape`
    (H, W, C; None entries are not checked) and has `num_classes` logits."""
    if is_detector(model):
        raise InputError(f"{name} is an SSD detector, not a classifier; evaluate it with "
                         "recipes/voc.py, or pass a classifier.")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise InputError(f"{name} takes {[tuple(i.shape) for i in model.inputs]}, not one batch of "
                         "images (batch, H, W, C).")
    takes = tuple(model.inputs[0].shape[1:])
    if image_shape is not None:
        for axis, (have, want) in enumerate(zip(takes, image_shape)):
            if have is not None and want is not None and have != want:
                raise InputError(f"{name} takes {shape_text(takes)} images; {what} is "
                                 f"{shape_text(image_shape)}. Use a model made for it "
                                 "(input size and channels).")
    outputs = model.outputs
    if isinstance(model.output, dict):
        outputs = [model.output["logits"]] if "logits" in model.output else []
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise InputError(f"{name} does not output one logits vector per image; pass a classifier.")
    classes = outputs[0].shape[-1]
    if num_classes is not None and classes is not None and classes != num_classes:
        raise InputError(f"{name} has {classes} classes; {what} has {num_classes}. Use a model "
                         "trained on these classes.")
    return model


# -- Bias Loss ------------------------------------------------------------------------------


def check_bias_loss_numbers(alpha, beta, prefix="BiasLoss: "):
    """alpha and beta finite, alpha >= 0 (a NaN would make every loss NaN)."""
    check_number(f"{prefix}alpha", alpha, fix="Paper: 0.3.")
    check_number(f"{prefix}alpha", alpha, low=0, fix="A negative alpha gives low-variance samples "
                 "the larger weight, the opposite of Bias Loss (paper: 0.3).")
    check_number(f"{prefix}beta", beta, fix="Paper: 0.3.")


def bias_loss_clamp_problem(alpha, beta, clamp):
    """Why every sample's Bias Loss weight is clamped to the same value, or None.

    For scaled variances v in [0, 1] the weight z = exp(alpha * v) - beta spans
    [1 - beta, exp(alpha) - beta]. When that whole span lies outside the clamp,
    every sample gets the same clamped weight: Bias Loss is then cross-entropy
    times a constant (beta >= 1 with the paper's clamp does this).
    """
    if clamp is None:
        return None
    low, high = clamp
    z_min, z_max = 1.0 - beta, math.exp(min(alpha, 700.0)) - beta
    if z_max > low and z_min < high:
        return None
    bound = low if z_max <= low else high
    return (f"with alpha={alpha:g}, beta={beta:g} every weight z = exp(alpha*v) - beta "
            f"(v in [0, 1]) lies in [{z_min:g}, {z_max:g}], outside clamp ({low:g}, {high:g}): "
            f"every sample is clamped to {bound:g} and the loss is cross-entropy x {bound:g}. "
            "Use beta < 1 (paper: 0.3) or a wider clamp.")


# -- training configurations ----------------------------------------------------------------


def check_training_config(config, model_names=None):
    """The fields a classification (`TrainConfig`) or detection (`DetectionConfig`) run
    shares, by their flag names. Raises InputError on the first bad one."""
    fields = vars(config)

    def check(field, **kwargs):
        if field in fields:
            check_number(f"--{field}", fields[field], **kwargs)

    check("epochs", low=1, integer=True, fix="A run of fewer than 1 epoch trains nothing.")
    check("batch_size", low=1, integer=True)
    check("steps_per_epoch", low=1, integer=True, allow_none=True,
          fix="Leave it unset for whole epochs.")
    check("eval_steps", low=1, integer=True, allow_none=True, fix="Leave it unset to evaluate all.")
    check("backup_steps", low=1, integer=True, allow_none=True)
    check("image_size", low=32, integer=True, fix="The models need inputs of at least 32x32.")
    check("learning_rate", low=0, low_open=True, allow_none=True)
    check("warmup_epochs", low=0)
    check("lr_factor", low=0, low_open=True)
    check("momentum", low=0, high=1, high_open=True)
    check("weight_decay", low=0)
    check("ema_decay", low=0, high=1, high_open=True, allow_none=True, fix="0 turns EMA off.")
    check("width", low=0, low_open=True, allow_none=True)
    check("dropout", low=0, high=1, high_open=True, allow_none=True)
    check("bn_momentum", low=0, high=1, high_open=True, allow_none=True)
    check("label_smoothing", low=0, high=1, high_open=True)
    check("seed", low=0, high=2**32 - 1, integer=True)
    check("validation_size", low=0, integer=True, allow_none=True)
    check("train_images", low=1, integer=True, allow_none=True)
    check("test_images", low=1, integer=True, allow_none=True)
    check("canvas_size", low=32, integer=True, allow_none=True)
    if fields.get("channels") is not None and fields["channels"] not in (1, 3):
        raise InputError(f"--channels must be 1 or 3; got {fields['channels']!r}.")
    milestones = list(fields.get("milestones") or ())
    for m in milestones:
        check_number("--milestones", m, low=0, low_open=True, fix="Give epochs, e.g. 60,120,160.")
    if milestones != sorted(milestones):
        raise InputError(f"--milestones must increase; got {','.join(f'{m:g}' for m in milestones)}.")
    if fields.get("loss", "bias") == "bias":
        alpha, beta = fields.get("alpha", 0.3), fields.get("beta", 0.3)
        check_bias_loss_numbers(alpha, beta, prefix="--")
        clamp = fields.get("clamp", (0.5, 1.5))
        problem = bias_loss_clamp_problem(alpha, beta, tuple(clamp) if clamp else None)
        if problem:  # the API warns; a run that would train plain cross-entropy is refused
            raise InputError(f"--alpha/--beta: {problem}")
    if model_names is not None and str(fields.get("model", "")).lower() not in model_names:
        raise InputError(f"--model: unknown model {fields.get('model')!r}; valid names: "
                         f"{', '.join(model_names)}.")
    if "model_dir" in fields:
        check_output_dir("--model_dir", fields["model_dir"])
    if fields.get("init_checkpoint"):
        check_model_file("--init_checkpoint", fields["init_checkpoint"], (".keras", ".pth", ".pt"))
    if fields.get("manual_dir"):
        check_dir("--manual_dir", fields["manual_dir"], "folder of ImageNet's tar files")
    return config


# -- scripts --------------------------------------------------------------------------------


def user_errors():
    """The exception types whose message is the whole story for a user of a script."""
    from keras_skipblock.data.errors import CorruptImageError, DatasetNotFoundError
    from keras_skipblock.litert.errors import LiteRTError
    from keras_skipblock.models.torch_state_dict import CheckpointError

    errors = [InputError, DatasetNotFoundError, CorruptImageError, CheckpointError, LiteRTError]
    try:
        from keras_skipblock.detection.data import AnnotationError

        errors.append(AnnotationError)
    except ImportError:  # detection needs keras-cv
        pass
    return tuple(errors)


def one_line(message):
    """The message as one line: its lines joined, whitespace collapsed."""
    return " ".join(str(message).split())


def report(error, verbose=False):
    """Print `error` as one `error: ...` line on stderr (with its traceback first when
    verbose); return the exit status 2."""
    if verbose:
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
    return 2


def _verbose():
    from absl import flags

    return "verbose" in flags.FLAGS and bool(flags.FLAGS["verbose"].value)


def parse_flags(argv):
    """absl's flag parsing, but a bad flag value is one line and exit status 2 (absl: 1)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {one_line(error)} (--helpshort lists the flags)", file=sys.stderr, flush=True)
        sys.exit(2)


def run_cli(main, argv=None):
    """`absl.app.run(main)`, with bad flags and the package's user errors reported in one
    line and exit status 2 (`--verbose`: with the traceback). Exits."""
    from absl import app

    def guarded(args):
        try:
            return main(args)
        except (app.UsageError, *user_errors()) as error:  # absl would exit 1 on UsageError
            return report(error, _verbose())

    app.run(guarded, argv=argv, flags_parser=parse_flags)
