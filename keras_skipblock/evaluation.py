"""ImageNet top-1 / top-5 of a classifier (`.pth`, `.keras` or `.tflite`) with
the authors' evaluation protocol (SPEC §8, their `validate.py`):

    Resize(256) (shorter side, bilinear) -> CenterCrop(224) -> RGB

then the model's own input scaling. Data: a folder of class sub-folders, as
torchvision's `ImageFolder` reads it (classes in sorted order), or TFDS's
`imagenet2012` validation split.
"""

import dataclasses
import itertools
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_skipblock.data.preprocessing import scale_to_unit_range
from keras_skipblock.validation import (InputError, check_classifier_fits, check_model_file,
                                        check_number, shape_text)

RESIZE_SHORTER_SIDE = 256  # ceil(224 / 0.875)
CROP_SIZE = 224


def preprocess_authors_eval(image_bytes, crop_size=CROP_SIZE, resize_to=RESIZE_SHORTER_SIDE):
    """Encoded image -> float32 [-1, 1] (crop_size, crop_size, 3), as torchvision's
    Resize(resize_to) + CenterCrop(crop_size) on a PIL image."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    # torchvision: the shorter side becomes resize_to, the longer int(resize_to * long / short)
    new_long = tf.cast(resize_to * long // short, tf.int32)
    size = tf.cond(height <= width, lambda: tf.stack([resize_to, new_long]),
                   lambda: tf.stack([new_long, resize_to]))
    # PIL's bilinear filter widens when it shrinks: antialias=True; PIL returns uint8
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
    # torchvision: top = int(round((h - crop) / 2)), Python's round (half to even) = tf.round
    top = tf.cast(tf.round((size[0] - crop_size) / 2), tf.int32)
    left = tf.cast(tf.round((size[1] - crop_size) / 2), tf.int32)
    image = tf.image.crop_to_bounding_box(image, top, left, crop_size, crop_size)
    return scale_to_unit_range(image)


def imagenet_eval_dataset(source, batch_size=50, data_dir=None, split="validation", limit=None,
                          crop_size=CROP_SIZE, with_info=False):
    """((images float32 [-1, 1], labels int32) batches, number of images[, EvalSource]).

    source: a folder of class sub-folders, or "imagenet2012" (TFDS, in data_dir).
    with_info: also return an `EvalSource` (the files in order, the number of classes),
    which `evaluate_top_k` uses to name a corrupt file and the scripts to check the model.
    """
    check_number("batch_size", batch_size, low=1, integer=True)
    check_number("limit", limit, low=1, integer=True, allow_none=True,
                 fix="Leave it unset to evaluate every image.")
    if source == "imagenet2012":
        import tensorflow_datasets as tfds

        from keras_skipblock.data.tfds_sources import NUM_CLASSES, tfds_builder

        builder = tfds_builder("imagenet2012", data_dir, prepare=False)
        dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        dataset = dataset.map(lambda e: (e["image"], tf.cast(e["label"], tf.int32)))
        count = builder.info.splits[split].num_examples
        info = EvalSource(None, NUM_CLASSES["imagenet2012"])
    else:
        from keras_skipblock.data.folder import list_image_folder, read_checked

        paths, labels, classes = list_image_folder(source)
        dataset = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, "int32")))
        # read_checked names a truncated or non-image file in its error
        dataset = dataset.map(lambda path, label: (read_checked(path), label))
        count = len(paths)
        info = EvalSource(paths, len(classes))
    if limit:
        dataset, count = dataset.take(limit), min(limit, count)
    dataset = dataset.map(lambda data, label: (preprocess_authors_eval(data, crop_size), label),
                          num_parallel_calls=tf.data.AUTOTUNE)  # deterministic: files stay in order
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return (dataset, count, info) if with_info else (dataset, count)


@dataclasses.dataclass
class EvalSource:
    files: Optional[list]  # the image files in pipeline order (folders), else None
    num_classes: int


@dataclasses.dataclass
class TopK:
    images: int
    top1: float
    top5: float
    seconds: float

    def describe(self, name):
        return (f"{name}: top-1 {100 * self.top1:.2f}%, top-5 {100 * self.top5:.2f}% "
                f"on {self.images} images ({self.seconds:.0f} s)")


def load_classifier(path, input_range=None, num_threads=1, num_classes=None, crop_size=CROP_SIZE):
    """(predict(images in [-1, 1]) -> logits, description) for a .pth, .keras or .tflite.

    A .tflite does not record the input range it was converted for: pass
    `input_range` ((0, 255) for one converted from the authors' .pth,
    (-1, 1) for one converted from this project's .keras).
    The model must take crop_size x crop_size RGB images and, given
    `num_classes`, have that many logits (InputError otherwise).
    """
    from keras_skipblock.litert.data import to_input_range

    check_classifier_file(path, input_range)
    check_number("num_threads", num_threads, low=1, integer=True)
    image_shape = (crop_size, crop_size, 3)
    what = "the evaluation data"
    if path.endswith(".tflite"):
        from keras_skipblock.litert.runtime import LiteRTModel

        lite = LiteRTModel(path, num_threads=num_threads)
        if lite.input_shape != image_shape:
            raise InputError(f"{path} takes {shape_text(lite.input_shape)} images; {what} is "
                             f"{shape_text(image_shape)}. Use a model made for it (input size and channels).")
        classes = int(lite.output["shape"][-1])
        if num_classes and classes != num_classes:
            raise InputError(f"{path} has {classes} classes; {what} has {num_classes}. Use a model "
                             "trained on these classes.")
        return (lambda images: lite.predict(to_input_range(images, input_range))), f"LiteRT {path}"

    from keras_skipblock.litert.conversion import keras_logits, load_keras_model
    from keras_skipblock.models import raw_input_range

    model = load_keras_model(checkpoint=path)
    check_classifier_fits(model, path, image_shape, num_classes, what)
    model_range = raw_input_range(model) if input_range is None else input_range
    return (lambda images: keras_logits(model, to_input_range(images, model_range), len(images))), \
        f"Keras {path}"


def check_classifier_file(path, input_range=None):
    """What `load_classifier` needs before it reads `path`: a .pth, .keras or .tflite
    that looks whole, and, for a .tflite, the input range it does not record."""
    if path and str(path).endswith(".tflite") and input_range is None:
        from keras_skipblock.litert import LiteRTError

        raise LiteRTError(
            f"{path}: a .tflite does not record its input range; pass --input_range=0,255 for one "
            "converted from the authors' .pth, or --input_range=-1,1 for one converted from a .keras.")
    if input_range is not None:
        check_input_range(input_range)
    return check_model_file("--model", path)


def check_input_range(input_range):
    """(low, high): two finite numbers, low < high."""
    if len(input_range) != 2:
        raise InputError(f"--input_range must be low,high (e.g. 0,255); got {input_range!r}.")
    def number(value):
        try:
            value = float(value)  # the flag gives strings
        except (TypeError, ValueError):
            pass
        return check_number("--input_range", value, fix="Give low,high, e.g. 0,255 or -1,1.")

    low, high = (number(v) for v in input_range)
    if not low < high:
        raise InputError(f"--input_range must be low,high with low < high; got {low:g},{high:g}.")
    return low, high


def evaluate_top_k(predict, dataset, count=None, log=print, log_every=20, files=None):
    """Top-1 and top-5 accuracy of `predict` over (images, labels) batches, with progress.

    files: the image files in the dataset's order; a file that cannot be decoded
    is then named (CorruptImageError) instead of a bare decode error.
    """
    from keras_skipblock.data.folder import corrupt_images_named

    start, seen, top1, top5 = time.time(), 0, 0, 0
    batches = iter(dataset)
    for step in itertools.count(1):
        # the failing file is in the batch being read: search from the first file not yet seen
        with corrupt_images_named(files[seen:] if files else None):
            batch = next(batches, None)
        if batch is None:
            break
        images, labels = batch
        logits = np.asarray(predict(images.numpy()))
        labels = labels.numpy()
        best5 = np.argsort(-logits, axis=-1)[:, :5]
        top1 += int(np.sum(best5[:, 0] == labels))
        top5 += int(np.sum(np.any(best5 == labels[:, None], axis=-1)))
        seen += len(labels)
        if log and step % log_every == 0:
            total = f"/{count}" if count else ""
            log(f"  {seen}{total} images: top-1 {100 * top1 / seen:.2f}%, top-5 {100 * top5 / seen:.2f}% "
                f"({time.time() - start:.0f} s)")
    if not seen:
        raise ValueError("no images to evaluate.")
    return TopK(seen, top1 / seen, top5 / seen, time.time() - start)
