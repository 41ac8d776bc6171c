"""ImageNet top-1 / top-5 of a classifier (`.pth`, `.keras` or `.tflite`) with
the authors' evaluation protocol (SPEC §8, their `validate.py`):

    Resize(256) (shorter side, bilinear) -> CenterCrop(224) -> RGB

then the model's own input scaling. Data: a folder of class sub-folders, as
torchvision's `ImageFolder` reads it (classes in sorted order), or TFDS's
`imagenet2012` validation split.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from keras_skipblock.data.preprocessing import scale_to_unit_range

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
                          crop_size=CROP_SIZE):
    """((images float32 [-1, 1], labels int32) batches, number of images).

    source: a folder of class sub-folders, or "imagenet2012" (TFDS, in data_dir).
    """
    if source == "imagenet2012":
        import tensorflow_datasets as tfds

        from keras_skipblock.data.tfds_sources import tfds_builder

        builder = tfds_builder("imagenet2012", data_dir, prepare=False)
        dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        dataset = dataset.map(lambda e: (e["image"], tf.cast(e["label"], tf.int32)))
        count = builder.info.splits[split].num_examples
    else:
        from keras_skipblock.data.folder import list_image_folder

        paths, labels, _ = list_image_folder(source)
        dataset = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, "int32")))
        dataset = dataset.map(lambda path, label: (tf.io.read_file(path), label))
        count = len(paths)
    if limit:
        dataset, count = dataset.take(limit), min(limit, count)
    dataset = dataset.map(lambda data, label: (preprocess_authors_eval(data, crop_size), label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE), count


@dataclasses.dataclass
class TopK:
    images: int
    top1: float
    top5: float
    seconds: float

    def describe(self, name):
        return (f"{name}: top-1 {100 * self.top1:.2f}%, top-5 {100 * self.top5:.2f}% "
                f"on {self.images} images ({self.seconds:.0f} s)")


def load_classifier(path, input_range=None, num_threads=1):
    """(predict(images in [-1, 1]) -> logits, description) for a .pth, .keras or .tflite.

    A .tflite does not record the input range it was converted for: pass
    `input_range` ((0, 255) for one converted from the authors' .pth,
    (-1, 1) for one converted from this project's .keras).
    """
    from keras_skipblock.litert.data import to_input_range

    if path.endswith(".tflite"):
        from keras_skipblock.litert import LiteRTError
        from keras_skipblock.litert.runtime import LiteRTModel

        if input_range is None:
            raise LiteRTError(
                f"{path}: a .tflite does not record its input range; pass --input_range=0,255 for one "
                "converted from the authors' .pth, or --input_range=-1,1 for one converted from a .keras.")
        lite = LiteRTModel(path, num_threads=num_threads)
        return (lambda images: lite.predict(to_input_range(images, input_range))), f"LiteRT {path}"

    from keras_skipblock.litert.conversion import keras_logits, load_keras_model
    from keras_skipblock.models import raw_input_range

    model = load_keras_model(checkpoint=path)
    model_range = raw_input_range(model) if input_range is None else input_range
    return (lambda images: keras_logits(model, to_input_range(images, model_range), len(images))), \
        f"Keras {path}"


def evaluate_top_k(predict, dataset, count=None, log=print, log_every=20):
    """Top-1 and top-5 accuracy of `predict` over (images, labels) batches, with progress."""
    start, seen, top1, top5 = time.time(), 0, 0, 0
    for step, (images, labels) in enumerate(dataset, start=1):
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
