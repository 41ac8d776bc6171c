"""Real images for calibration, verification and evaluation, as float32 arrays
in [-1, 1] of the model's input shape (project convention: models contain no
preprocessing).

Classifiers: "fashion_mnist" (IDX files), "digits" (scikit-learn's bundled 8x8
digits), or a folder of class sub-folders of images. Grey images are tiled
to the model's channel count. Detectors: `fashion_mnist_scenes` (`scenes`),
with their ground truth. The loading itself is `keras_skipblock.data`'s;
this module only shapes small in-memory arrays for LiteRT, which runs one
image at a time.
"""

import os

import numpy as np

from keras_skipblock.litert.errors import LiteRTError

SOURCES = ("fashion_mnist", "digits")


def to_input_range(images, input_range):
    """Images in [-1, 1] (what `load_images` returns) mapped linearly to the
    range a model takes (`keras_skipblock.models.raw_input_range`)."""
    low, high = input_range
    if (low, high) == (-1.0, 1.0):
        return images
    return ((images + 1.0) * (0.5 * (high - low)) + low).astype("float32")


def _fit_channels(images, channels):
    if images.shape[-1] == channels:
        return images
    if images.shape[-1] == 1:
        return np.repeat(images, channels, axis=-1)
    if channels == 1:  # RGB folder images into a grey model
        return images.mean(axis=-1, keepdims=True).astype("float32")
    raise LiteRTError(f"Cannot feed {images.shape[-1]}-channel images to a {channels}-channel model.")


def _spread(n_total, limit, seed):
    """Indices of `limit` samples spread over the data set (not its first classes)."""
    order = np.random.RandomState(seed).permutation(n_total)
    return np.sort(order[: min(limit, n_total)])


def load_images(source, split, image_size, channels=3, limit=None, data_dir=None, seed=0):
    """(images float32 (n, s, s, channels) in [-1, 1], labels int32 (n,)).

    Args:
        source: "fashion_mnist", "digits" or a folder path.
        split: "train" (calibration) or "test" (verification, evaluation).
        image_size: side of the square model input.
        channels: model input channels (grey images are tiled).
        limit: at most this many samples, drawn at random (seeded) over the
            whole split so that every class is represented; None = all.
        data_dir: Fashion-MNIST IDX folder (default: the usual places).
    """
    from keras_skipblock.data import load_digits, load_fashion_mnist
    from keras_skipblock.data.errors import DatasetNotFoundError
    from keras_skipblock.data.preprocessing import resize_batch

    from keras_skipblock.validation import check_number

    if split not in ("train", "test"):
        raise LiteRTError(f"split must be 'train' or 'test', got {split!r}.")
    check_number("limit", limit, low=1, integer=True, allow_none=True,
                 fix="Leave it unset to use every image.")
    try:
        if source == "fashion_mnist":
            train, test = load_fashion_mnist(data_dir)
        elif source == "digits":
            train, test = load_digits(seed=0)
        elif os.path.isdir(source):
            return _load_folder(source, split, image_size, channels, limit, seed)
        else:
            raise LiteRTError(
                f"Unknown image source {source!r}: use 'fashion_mnist', 'digits' or an "
                "existing folder of class sub-folders of images."
            )
    except DatasetNotFoundError as error:
        raise LiteRTError(str(error)) from None
    images, labels = train if split == "train" else test
    if limit is not None:
        keep = _spread(len(images), limit, seed)
        images, labels = images[keep], labels[keep]
    if images.ndim == 3:
        images = images[..., None]
    out = []
    for start in range(0, len(images), 512):  # resize in chunks: bounded memory at 224x224
        out.append(resize_batch(images[start:start + 512], image_size).numpy())
    x = _fit_channels(np.concatenate(out).astype("float32"), channels)
    return x, np.asarray(labels, dtype="int32")


def _load_folder(directory, split, image_size, channels, limit, seed):
    import tensorflow as tf

    from keras_skipblock.data import folder_splits
    from keras_skipblock.data.errors import CorruptImageError, DatasetNotFoundError
    from keras_skipblock.data.preprocessing import preprocess_for_eval

    try:
        splits, _ = folder_splits(directory)
    except DatasetNotFoundError as error:
        raise LiteRTError(str(error)) from None
    paths, labels = splits[split]
    if not paths:
        raise LiteRTError(
            f"{directory}: its {split} split has no images (a class folder with one image holds "
            "none out for testing). Add images (at least 2 per class), use train/ and val/ "
            "sub-folders, or pass another source.")
    if limit is not None:
        keep = _spread(len(paths), limit, seed)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    images = []
    for path in paths:
        try:
            data = tf.io.read_file(path)
            images.append(preprocess_for_eval(data, image_size).numpy())
        except (tf.errors.InvalidArgumentError, CorruptImageError) as error:
            raise LiteRTError(f"Cannot decode image {path}: {error}") from None
    x = _fit_channels(np.stack(images).astype("float32"), channels)
    return x, np.asarray(labels, dtype="int32")


def scenes(num_images, image_size, split="test", seed=0, data_dir=None):
    """fashion_mnist_scenes at `image_size`: (images (n, H, W, 3) in [-1, 1], DetectionExamples)."""
    import tensorflow as tf

    from keras_skipblock.detection.data import fashion_mnist_scenes

    examples = fashion_mnist_scenes(split, num_images, canvas_size=image_size, seed=seed, data_dir=data_dir)
    images = tf.image.resize(examples.images.astype("float32"), (image_size, image_size)).numpy()
    return images / 127.5 - 1.0, examples


def scene_images(num_images, image_size, split="test", seed=0, data_dir=None):
    """Real images for a detector's calibration/verification: fashion_mnist_scenes in [-1, 1]."""
    return scenes(num_images, image_size, split, seed, data_dir)[0]
