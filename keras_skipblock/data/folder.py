"""Any folder of class sub-folders of images (JPEG, PNG, GIF, BMP) as a tf.data pipeline.

Layout: `root/<class>/<image>`, or `root/train/<class>/...` with
`root/{validation,val,test}/<class>/...` beside it. Classes are the sorted
sub-folder names of the training folder.
"""

import contextlib
import os
import re

import tensorflow as tf

from keras_skipblock.data import preprocessing
from keras_skipblock.data.errors import CorruptImageError, DatasetNotFoundError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
EVAL_FOLDERS = ("validation", "val", "test")


def list_image_folder(directory, class_names=None):
    """(paths, labels, class_names) of the images under directory/<class>/."""
    if not os.path.isdir(directory):
        raise DatasetNotFoundError(
            f"Image folder {os.path.abspath(directory)!r} does not exist. Expected "
            "<dir>/<class name>/<image files> (or <dir>/train/<class>/... with "
            "<dir>/val/<class>/...)."
        )
    found = sorted(
        entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith(".")
    )
    class_names = list(class_names) if class_names is not None else found
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(directory, name)
        if not os.path.isdir(class_dir):
            continue
        for root, _, files in sorted(os.walk(class_dir, followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(root, file))
                    labels.append(label)
    if not paths:
        raise DatasetNotFoundError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in class sub-folders of "
            f"{os.path.abspath(directory)!r} (sub-folders seen: {found[:10]}). Expected "
            "<dir>/<class name>/<image files>."
        )
    return paths, labels, class_names


def folder_splits(directory, holdout_every=10):
    """{'train': (paths, labels), 'test': (paths, labels)}, class_names.

    With a train/ sub-folder, the evaluation split is the first of
    validation/, val/, test/ found. Otherwise the last 1/`holdout_every` of
    each class's images (sorted by name; at least one) is held out for evaluation.
    """
    train_dir = os.path.join(directory, "train")
    if os.path.isdir(train_dir):
        paths, labels, classes = list_image_folder(train_dir)
        for name in EVAL_FOLDERS:
            eval_dir = os.path.join(directory, name)
            if os.path.isdir(eval_dir):
                test_paths, test_labels, _ = list_image_folder(eval_dir, classes)
                return {"train": (paths, labels), "test": (test_paths, test_labels)}, classes
        raise DatasetNotFoundError(
            f"{os.path.abspath(directory)!r} has train/ but none of {EVAL_FOLDERS} for evaluation."
        )
    paths, labels, classes = list_image_folder(directory)
    by_class = {}
    for path, label in zip(paths, labels):
        by_class.setdefault(label, []).append(path)
    split = {"train": ([], []), "test": ([], [])}
    for label, files in sorted(by_class.items()):
        n_test = max(1, len(files) // holdout_every) if len(files) > 1 else 0
        for i, path in enumerate(files):
            key = "test" if i >= len(files) - n_test else "train"
            split[key][0].append(path)
            split[key][1].append(label)
    return split, classes


def _tail_has(data, marker, window):
    """Whether `marker` (bytes) occurs in the last `window` bytes of the string tensor `data`."""
    length = tf.strings.length(data)
    start = tf.maximum(length - window, 0)
    tail = tf.io.decode_raw(tf.strings.substr(data, start, length - start), tf.uint8)
    size = tf.shape(tail)[0] - len(marker) + 1
    if_found = tf.ones([tf.maximum(size, 0)], tf.bool)
    for i, byte in enumerate(marker):
        if_found = tf.logical_and(if_found, tf.equal(tail[i:i + tf.maximum(size, 0)], byte))
    return tf.reduce_any(if_found)


def looks_like_image(data):
    """Cheap structural check of an encoded image: a known signature and, for JPEG and
    PNG, an end marker (truncated files, the common corruption, fail it)."""
    head = tf.strings.substr(data, 0, 8)
    is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff")
    is_png = tf.equal(head, b"\x89PNG\r\n\x1a\n")
    is_other = tf.logical_or(
        tf.equal(tf.strings.substr(head, 0, 3), b"GIF"), tf.equal(tf.strings.substr(head, 0, 2), b"BM")
    )
    return tf.logical_or(
        tf.logical_or(
            tf.logical_and(is_jpeg, _tail_has(data, b"\xff\xd9", 32)),
            tf.logical_and(is_png, _tail_has(data, b"IEND", 16)),
        ),
        is_other,
    )


CORRUPT_MARK = "Corrupt or unsupported image file (truncated, or not JPEG/PNG/GIF/BMP):"
# TF's decoders' messages, none of which names the file
DECODE_ERROR = re.compile(r"Unknown image file format|jpeg::Uncompress|Invalid JPEG|Invalid PNG|"
                          r"Corrupt JPEG|Could not decode|Decode(Image|Jpeg|Png|Gif|Bmp)")


def read_checked(path):
    """File contents; fails with the file's name if it is not a readable image."""
    data = tf.io.read_file(path)
    check = tf.debugging.Assert(
        looks_like_image(data),
        [CORRUPT_MARK, path],
        name="check_image",
    )
    with tf.control_dependencies([check]):
        return tf.identity(data)


def check_images(paths, stop_after=None):
    """Decode every file eagerly; return [(path, error message)] of those that fail
    (the first `stop_after` of them, if given).

    Slow (a full decode pass); use it to find a bad file when a decode error
    in training does not name one.
    """
    bad = []
    for path in paths:
        if stop_after is not None and len(bad) >= stop_after:
            break
        try:
            data = tf.io.read_file(path)
            if not bool(looks_like_image(data)):
                raise CorruptImageError("bad signature or missing end marker")
            tf.io.decode_image(data, channels=3, expand_animations=False)
        except (tf.errors.OpError, CorruptImageError) as error:
            bad.append((path, str(getattr(error, "message", error)).strip()))
    return bad


def encoded_image_dataset(paths, labels, image_size, batch_size, training, seed=None,
                          shuffle_buffer=10_000, drop_remainder=None, repeat=False,
                          read_fn=read_checked, augment="inception"):
    """Encoded images on disk -> batches of (float32 [-1, 1], int32 labels)."""
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int32))
    )
    if training:
        dataset = dataset.shuffle(min(len(paths), shuffle_buffer), seed=seed,
                                  reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def load(path, label):
        data = read_fn(path)
        if training and augment == "inception":
            image = preprocessing.preprocess_for_train(data, image_size)
        else:
            image = preprocessing.preprocess_for_eval(data, image_size)
        return image, label

    return batch_and_prefetch(
        dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training),
        batch_size, training if drop_remainder is None else drop_remainder,
    )


def batch_and_prefetch(dataset, batch_size, drop_remainder):
    options = tf.data.Options()
    options.experimental_optimization.map_parallelization = True
    options.deterministic = False
    return (
        dataset.batch(batch_size, drop_remainder=drop_remainder)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(options)
    )


def corrupt_image_error(error, paths=None):
    """A one-line CorruptImageError naming the file behind `error`, a TensorFlow error
    from a pipeline of image files, or None when `error` is not about an image.

    `read_checked`'s check names the file in its message. A file that passes that
    cheap check but still fails to decode is found by decoding `paths` in order
    until one fails (pass them in pipeline order, starting near the failure).
    """
    message = getattr(error, "message", str(error))
    if CORRUPT_MARK in message:
        match = re.search(re.escape(CORRUPT_MARK) + r"\]?\s*\[?\s*(?:b')?([^'\]\n]+)", message)
        path = match.group(1).strip() if match else "(unknown file)"
        return CorruptImageError(f"{path}: corrupt or unsupported image (truncated, or not "
                                 "JPEG/PNG/GIF/BMP). Remove or replace the file.")
    if not DECODE_ERROR.search(message):
        return None
    reason = tf_reason(message)
    bad = check_images(paths, stop_after=1) if paths else []
    if bad:
        path, why = bad[0]
        return CorruptImageError(f"{path}: cannot decode the image ({tf_reason(why)}). "
                                 "Remove or replace the file.")
    return CorruptImageError(f"an image could not be decoded ({reason}); "
                             "keras_skipblock.data.check_images(paths) finds the file.")


def tf_reason(message):
    """The human part of a TensorFlow op error: without {{function_node ...}}, [[{{node ...}}]],
    [Op:...] and "name:", on one line."""
    text = re.sub(r"\{\{function_node [^}]*\}\}|\[\[\{\{node [^]]*\]\]|\[Op:[^]]*\]|name:\s*$", "",
                  message.strip())
    text = re.sub(r"^Error in user-defined function passed to .*? transformation with iterator: "
                  r"[\w:]+: ", "", " ".join(text.split()))
    return text.strip()[:200]


@contextlib.contextmanager
def corrupt_images_named(paths=None):
    """Within the block, a decode error from a pipeline over `paths` becomes a
    CorruptImageError naming the file (see `corrupt_image_error`)."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        named = corrupt_image_error(error, paths)
        if named is None:
            raise
        raise named from error
