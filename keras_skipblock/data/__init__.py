"""Data pipelines: batches of (float32 images in [-1, 1], int32 sparse labels).

`get_datasets(name, ...)` returns a `DataBundle` for "fashion_mnist",
"digits", "imagenet2012", "cifar100", "food101" or "folder".
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_skipblock.data.arrays import array_dataset
from keras_skipblock.data.errors import CorruptImageError, DatasetNotFoundError
from keras_skipblock.data.fashion_mnist import find_fashion_mnist, load_digits, load_fashion_mnist
from keras_skipblock.data.folder import (
    check_images,
    encoded_image_dataset,
    folder_splits,
    list_image_folder,
)
from keras_skipblock.data.idx import read_idx, write_idx
from keras_skipblock.data.preprocessing import (
    augment_flip_rotate,
    preprocess_for_eval,
    preprocess_for_train,
    scale_to_unit_range,
)
from keras_skipblock.data.tfds_sources import tfds_dataset

DATASETS = ("fashion_mnist", "digits", "imagenet2012", "cifar100", "food101", "folder")


@dataclasses.dataclass
class DataBundle:
    """Train/validation/test pipelines of one data set.

    validation is what the best checkpoint is chosen on: a held-out part of
    the training data where the data set has no separate split (Fashion-MNIST,
    digits, a folder without val/), else the data set's evaluation split.
    """

    name: str
    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]
    test: tf.data.Dataset
    num_classes: int
    train_size: int
    test_size: int
    image_shape: tuple
    files: Optional[list] = None  # image files (folder data sets): to name a corrupt one


def _holdout(n, size, seed):
    order = np.random.RandomState(seed).permutation(n)
    return order[size:], order[:size]


def get_datasets(name, image_size, batch_size, data_dir=None, manual_dir=None, seed=0,
                 validation_size=None, channels=None, repeat=False, augment=True,
                 drop_remainder=None, eval_batch_size=None):
    """Build the pipelines of data set `name` at `image_size` with global `batch_size`.

    Args:
        name: one of DATASETS.
        image_size: side of the square images fed to the model.
        batch_size: global batch size (all replicas together).
        data_dir: where the data is (IDX folder, TFDS data dir, image folder).
        manual_dir: TFDS manual_dir (ImageNet's tar files).
        validation_size: images held out of training for model selection
            (array data sets and folders without a val/ folder); 0 uses the
            test split for validation.
        channels: for grey data sets (Fashion-MNIST, digits), 1 or 3.
        repeat: repeat the training set forever (when steps_per_epoch caps epochs).
        augment: training augmentation on (flip for grey sets, Inception crop,
            CIFAR flip+rotation).
    """
    eval_batch_size = eval_batch_size or batch_size
    if name in ("fashion_mnist", "digits"):
        if name == "fashion_mnist":
            (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir)
            default_val = 5000
        else:
            (x_train, y_train), (x_test, y_test) = load_digits(seed=0)
            default_val = 0
        channels = channels or 1
        if channels == 3:
            x_train, x_test = (np.repeat(x[..., None], 3, axis=-1) for x in (x_train, x_test))
        val_n = default_val if validation_size is None else validation_size
        val_n = min(val_n, len(x_train) // 5)  # tiny data sets keep most images for training
        validation = None
        if val_n:
            train_idx, val_idx = _holdout(len(x_train), val_n, seed)
            validation = array_dataset(x_train[val_idx], y_train[val_idx], image_size,
                                       eval_batch_size, training=False)
            x_train, y_train = x_train[train_idx], y_train[train_idx]
        common = dict(image_size=image_size)
        train = array_dataset(x_train, y_train, batch_size=batch_size, training=True,
                              flip=augment and name == "fashion_mnist", seed=seed,
                              repeat=repeat, drop_remainder=drop_remainder, **common)
        test = array_dataset(x_test, y_test, batch_size=eval_batch_size, training=False, **common)
        return DataBundle(name, train, validation, test, 10, len(x_train), len(x_test),
                          (image_size, image_size, channels))
    if name == "folder":
        if not data_dir:
            raise DatasetNotFoundError("--dataset=folder needs --data_dir=<folder of class sub-folders>.")
        splits, classes = folder_splits(data_dir)
        kwargs = dict(image_size=image_size, seed=seed)
        train = encoded_image_dataset(*splits["train"], batch_size=batch_size, training=True,
                                      repeat=repeat, drop_remainder=drop_remainder,
                                      augment="inception" if augment else None, **kwargs)
        test = encoded_image_dataset(*splits["test"], batch_size=eval_batch_size,
                                     training=False, **kwargs)
        return DataBundle(name, train, test, test, len(classes), len(splits["train"][0]),
                          len(splits["test"][0]), (image_size, image_size, 3),
                          files=splits["train"][0] + splits["test"][0])
    if name in ("imagenet2012", "cifar100", "food101"):
        from keras_skipblock.data.tfds_sources import EVAL_SPLIT

        kwargs = dict(image_size=image_size, data_dir=data_dir, manual_dir=manual_dir, seed=seed)
        train, train_size, num_classes = tfds_dataset(
            name, "train", batch_size=batch_size, training=True, repeat=repeat,
            drop_remainder=drop_remainder,
            augment=("flip_rotate" if name == "cifar100" else "inception") if augment else "none",
            **kwargs,
        )
        test, test_size, _ = tfds_dataset(name, EVAL_SPLIT[name], batch_size=eval_batch_size,
                                          training=False, **kwargs)
        return DataBundle(name, train, test, test, num_classes, train_size, test_size,
                          (image_size, image_size, 3))
    raise ValueError(f"Unknown data set {name!r}; use one of {DATASETS}.")


__all__ = [
    "DATASETS", "DataBundle", "get_datasets", "DatasetNotFoundError", "CorruptImageError",
    "read_idx", "write_idx", "find_fashion_mnist", "load_fashion_mnist", "load_digits",
    "array_dataset", "encoded_image_dataset", "folder_splits", "list_image_folder",
    "check_images", "tfds_dataset", "preprocess_for_train", "preprocess_for_eval",
    "augment_flip_rotate", "scale_to_unit_range",
]
