"""ImageNet, CIFAR-100 and Food-101 through TensorFlow Datasets.

Images are read still encoded (`tfds.decode.SkipDecoding`) so that the
training crop is decoded straight out of the JPEG.
"""

import os
import shutil
import socket
import threading

import tensorflow as tf

from keras_skipblock.data import preprocessing
from keras_skipblock.data.errors import DatasetNotFoundError
from keras_skipblock.data.folder import batch_and_prefetch

HOW_TO_GET = {
    "imagenet2012": (
        "ImageNet cannot be downloaded automatically. Download ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar from https://image-net.org (an account is needed), put them in "
        "a folder and pass --manual_dir=<that folder> (TFDS then prepares the data set once, "
        "~150 GB, under --data_dir). Or give a folder of class sub-folders with "
        "--dataset=folder --data_dir=<folder>."
    ),
    "cifar100": (
        "CIFAR-100 is downloaded by TFDS on first use; this needs network access once. Run "
        "`python -c \"import tensorflow_datasets as tfds; tfds.builder('cifar100', "
        "data_dir='<dir>').download_and_prepare()\"` on a machine with network and copy <dir> "
        "here, then pass --data_dir=<dir>."
    ),
    "food101": (
        "Food-101 is downloaded by TFDS on first use (~5 GB); this needs network access once. "
        "Prepare it with tfds.builder('food101', data_dir='<dir>').download_and_prepare() on a "
        "machine with network, copy <dir> here and pass --data_dir=<dir>."
    ),
}
EVAL_SPLIT = {"imagenet2012": "validation", "cifar100": "test", "food101": "validation"}
NUM_CLASSES = {"imagenet2012": 1000, "cifar100": 100, "food101": 101}


# Where TFDS downloads each data set from: probed first, so that an offline machine fails
# at once instead of retrying the download for minutes.
DOWNLOAD_HOSTS = {"cifar100": "www.cs.toronto.edu", "food101": "data.vision.ee.ethz.ch"}


def reachable(host, port=443, timeout=5.0):
    """Whether a TCP connection to host:port opens within `timeout` seconds (the name
    lookup included, which `socket` cannot time out by itself: it runs in a thread)."""
    opened = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(opened)


def tfds_builder(name, data_dir=None, manual_dir=None, prepare=True):
    """A prepared TFDS builder, or DatasetNotFoundError saying where we looked and what to do.

    A data set that is not on disk is prepared only when that can work now: ImageNet
    from its tar files in `manual_dir`, the others when their download host answers.
    A failed preparation removes what it wrote.
    """
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    # TFDS warns that the variant folder of a data set not on disk has no dataset_info.json;
    # our error below says where it looked and what to do, so that line is only noise.
    verbosity = absl_logging.get_verbosity()
    if verbosity < absl_logging.INFO:  # absl: higher is more verbose; --verbose keeps it
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    finally:
        absl_logging.set_verbosity(verbosity)
    if prepared:
        return builder
    where = f"TFDS data dir {builder.data_dir}"
    if manual_dir:
        where += f", manual_dir {os.path.abspath(manual_dir)}"
    if not prepare:
        raise DatasetNotFoundError(f"{name} is not prepared (looked in {where}). " + HOW_TO_GET.get(name, ""))
    if name == "imagenet2012" and not (manual_dir and os.path.isdir(manual_dir) and any(
            f.startswith("ILSVRC2012_img_") for f in os.listdir(manual_dir))):
        raise DatasetNotFoundError(f"{name} is not prepared (looked in {where}) and no "
                                   "ILSVRC2012_img_*.tar is in --manual_dir. " + HOW_TO_GET[name])
    host = DOWNLOAD_HOSTS.get(name)
    if host and not reachable(host):
        raise DatasetNotFoundError(f"{name} is not prepared (looked in {where}) and cannot be "
                                   f"downloaded: {host} does not answer (offline?). " + HOW_TO_GET[name])
    root = os.path.abspath(data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))
    before = set(os.listdir(root)) if os.path.isdir(root) else None
    try:
        config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        builder.download_and_prepare(download_config=config)
    except Exception as error:  # TFDS raises many types (network, missing tar, ...)
        _remove_new_entries(root, before)
        raise DatasetNotFoundError(
            f"{name} is not available (looked in {where}; preparing it failed with "
            f"{type(error).__name__}: {str(error)[:300]}). " + HOW_TO_GET.get(name, "")
        ) from error
    return builder


def _remove_new_entries(root, before):
    """Undo a failed preparation: what TFDS created under `root` (all of it if `root`
    itself is new), nothing that was there before."""
    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for entry in set(os.listdir(root)) - before if os.path.isdir(root) else ():
        path = os.path.join(root, entry)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def tfds_dataset(name, split, image_size, batch_size, training, data_dir=None, manual_dir=None,
                 seed=None, shuffle_buffer=10_000, drop_remainder=None, repeat=False,
                 augment=None):
    """(dataset of (float32 [-1, 1], int32) batches, number of examples, number of classes).

    augment: "inception" (random-crop training, ImageNet and Food-101),
    "flip_rotate" (CIFAR-100) or None (evaluation preprocessing).
    """
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir, manual_dir)
    if augment is None and training:
        augment = "flip_rotate" if name == "cifar100" else "inception"
    encoded = name != "cifar100"
    dataset = builder.as_dataset(
        split=split,
        shuffle_files=training,
        decoders={"image": tfds.decode.SkipDecoding()} if encoded else None,
        read_config=tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=16),
    )
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def prepare(example):
        image, label = example["image"], tf.cast(example["label"], tf.int32)
        if not encoded:
            image = decoded_image_preprocess(image, image_size, training and augment == "flip_rotate")
        elif training and augment == "inception":
            image = preprocessing.preprocess_for_train(image, image_size)
        else:
            image = preprocessing.preprocess_for_eval(image, image_size)
        return image, label

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    dataset = batch_and_prefetch(dataset, batch_size, training if drop_remainder is None else drop_remainder)
    return dataset, builder.info.splits[split].num_examples, builder.info.features["label"].num_classes


def decoded_image_preprocess(image, image_size, augment):
    """A decoded uint8 image (CIFAR) -> optional flip+rotation, resize, float32 [-1, 1]."""
    image = tf.cast(image, tf.float32)
    if augment:
        image = preprocessing.augment_flip_rotate(image)
    return preprocessing.resize_batch(image[None], image_size)[0]
