"""Detection data: PASCAL VOC (a VOCdevkit folder or TFDS) and
`fashion_mnist_scenes`, real Fashion-MNIST items pasted on a canvas.

Every source gives `DetectionExamples`: per image an image (array or file
path), its boxes (M, 4) in rel_xyxy (fractions of width and height), classes
(M,) in [0, num_classes) and VOC's difficult flags (M,). `detection_datasets`
turns them into tf.data pipelines of (float32 image in [-1, 1],
{"boxes": encoded deltas, "labels": anchor labels}) for training and keeps
the evaluation split's ground truth on the host for VOC mAP.
"""

import dataclasses
import os
import xml.etree.ElementTree as ElementTree
from typing import List, Optional

import numpy as np
import tensorflow as tf

from keras_skipblock.data.errors import DatasetNotFoundError
from keras_skipblock.data.folder import read_checked

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
DATASETS = ("fashion_mnist_scenes", "voc", "voc_folder")


class AnnotationError(ValueError):
    """A bad box or label in detection annotations; the message names the file or image."""


@dataclasses.dataclass
class DetectionExamples:
    """Images with their boxes. `images` is an (n, H, W, 3) uint8 array or a
    list of image file paths."""

    images: object
    boxes: List[np.ndarray]
    classes: List[np.ndarray]
    difficult: List[np.ndarray]
    class_names: tuple
    name: str = ""

    def __len__(self):
        return len(self.boxes)


def check_annotations(boxes, classes, num_classes, where):
    """Raise AnnotationError for boxes outside [0, 1], with x_max < x_min or
    y_max < y_min, or classes out of range. `where` names the image."""
    boxes = np.asarray(boxes, "float32").reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if len(boxes) != len(classes):
        raise AnnotationError(f"{where}: {len(boxes)} boxes but {len(classes)} class labels.")
    for box, label in zip(boxes, classes):
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 < x0 or y1 < y0:
            raise AnnotationError(f"{where}: box {box.tolist()} has x_max < x_min or y_max < y_min; "
                                  "boxes are (x_min, y_min, x_max, y_max).")
        if min(x0, y0) < 0.0 or max(x1, y1) > 1.0:
            raise AnnotationError(f"{where}: box {box.tolist()} lies outside the image "
                                  "(relative coordinates must be within [0, 1]).")
        if not 0 <= int(label) < num_classes:
            raise AnnotationError(f"{where}: class {int(label)} is not in [0, {num_classes}).")


# -- Fashion-MNIST scenes -------------------------------------------------------------

SCENE_SPLITS = {"train": 8000, "validation": 500, "test": 1000}


def fashion_mnist_scenes(split="train", num_images=None, canvas_size=160, min_items=1, max_items=6,
                         item_sizes=None, seed=0, data_dir=None):
    """Real Fashion-MNIST items pasted on a dark, lightly textured canvas.

    Deterministic for a given (split, num_images, canvas_size, seed). Items
    come from the IDX files: "train" from training images 0-54,999,
    "validation" from 55,000-59,999, "test" from the test images, so no item
    is shared between splits. Each canvas holds min_items-max_items items,
    each resized (bilinear) to a random side in item_sizes (default 15%-45%
    of the canvas: 24-72 pixels on 160) and placed where
    it overlaps no other; its box is the exact extent of the item's non-zero
    pixels on the canvas. Returns `DetectionExamples` (10 classes).
    """
    from PIL import Image

    from keras_skipblock.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

    if split not in SCENE_SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {tuple(SCENE_SPLITS)}.")
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir)
    items, labels = {"train": (x_train[:55000], y_train[:55000]),
                     "validation": (x_train[55000:], y_train[55000:]),
                     "test": (x_test, y_test)}[split]
    num_images = SCENE_SPLITS[split] if num_images is None else int(num_images)
    low, high = item_sizes or (round(0.15 * canvas_size), round(0.45 * canvas_size))
    if not 4 <= low <= high <= canvas_size:
        raise ValueError(f"item_sizes ({low}, {high}) must lie within [4, canvas_size={canvas_size}].")
    if num_images <= 0:
        raise ValueError(f"fashion_mnist_scenes needs num_images > 0; got {num_images}.")
    rng = np.random.RandomState([seed, list(SCENE_SPLITS).index(split)])
    images = np.zeros((num_images, canvas_size, canvas_size, 3), "uint8")
    all_boxes, all_classes = [], []
    for i in range(num_images):
        canvas = rng.randint(0, 40, (canvas_size, canvas_size)).astype("uint8")
        boxes, classes, occupied = [], [], []
        for _ in range(rng.randint(min_items, max_items + 1)):
            index = rng.randint(len(items))
            side = int(rng.randint(low, high + 1))
            item = np.asarray(Image.fromarray(items[index]).resize((side, side), Image.BILINEAR))
            ys, xs = np.nonzero(item)
            if len(ys) == 0:
                continue
            for _attempt in range(20):
                top, left = rng.randint(0, canvas_size - side + 1, size=2)
                box = (left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1)
                if all(box[2] <= o[0] or o[2] <= box[0] or box[3] <= o[1] or o[3] <= box[1]
                       for o in occupied):
                    break
            else:
                continue  # no free place: leave this item out
            region = canvas[top:top + side, left:left + side]
            np.maximum(region, item, out=region)
            occupied.append(box)
            boxes.append(np.asarray(box, "float32") / canvas_size)
            classes.append(int(labels[index]))
        images[i] = canvas[..., None]
        all_boxes.append(np.asarray(boxes, "float32").reshape(-1, 4))
        all_classes.append(np.asarray(classes, "int32"))
    difficult = [np.zeros(len(c), bool) for c in all_classes]
    return DetectionExamples(images, all_boxes, all_classes, difficult, tuple(CLASS_NAMES),
                             f"fashion_mnist_scenes/{split}")


# -- VOCdevkit folders --------------------------------------------------------------------


def parse_voc_xml(path, class_names=VOC_CLASSES):
    """(boxes rel_xyxy (M, 4), classes (M,), difficult (M,), (height, width)) of one VOC XML.

    VOC's pixel coordinates are 1-based and inclusive: a box covers pixels
    x_min..x_max, i.e. [x_min - 1, x_max] in continuous coordinates.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise AnnotationError(f"{path}: cannot read the XML ({error}).") from None
    size = root.find("size")
    try:
        width, height = int(size.find("width").text), int(size.find("height").text)
    except (AttributeError, TypeError, ValueError):
        raise AnnotationError(f"{path}: no valid <size><width>/<height>.") from None
    boxes, classes, difficult = [], [], []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_names:
            raise AnnotationError(f"{path}: unknown class name {name!r}; valid names: {', '.join(class_names)}.")
        box = obj.find("bndbox")
        try:
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise AnnotationError(f"{path}: object {name!r} has no valid <bndbox>.") from None
        if x1 < x0 or y1 < y0:
            raise AnnotationError(f"{path}: object {name!r} has x_max < x_min or y_max < y_min "
                                  f"({x0:g}, {y0:g}, {x1:g}, {y1:g}).")
        if x0 < 1 or y0 < 1 or x1 > width or y1 > height:
            raise AnnotationError(f"{path}: object {name!r} box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies "
                                  f"outside the {width}x{height} image.")
        boxes.append(((x0 - 1) / width, (y0 - 1) / height, x1 / width, y1 / height))
        classes.append(class_names.index(name))
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return (np.asarray(boxes, "float32").reshape(-1, 4), np.asarray(classes, "int32"),
            np.asarray(difficult, bool), (height, width))


def _year_dirs(data_dir):
    """The VOC20xx folders under data_dir (a VOCdevkit folder, or one VOC20xx folder)."""
    if os.path.isdir(os.path.join(data_dir, "Annotations")):
        return {os.path.basename(os.path.normpath(data_dir)): data_dir}
    return {name: os.path.join(data_dir, name) for name in sorted(os.listdir(data_dir))
            if name.startswith("VOC") and os.path.isdir(os.path.join(data_dir, name, "Annotations"))}


def read_voc_folder(data_dir, image_set, years=None, class_names=VOC_CLASSES):
    """DetectionExamples of `image_set` ("trainval", "test", ...) of every VOC20xx
    folder under data_dir (or of `years`, e.g. ("VOC2007",))."""
    if not data_dir or not os.path.isdir(data_dir):
        raise DatasetNotFoundError(
            f"VOCdevkit folder not found: {data_dir!r}. Pass --data_dir=<VOCdevkit> holding "
            "VOC2007/ and VOC2012/ (each with Annotations/, JPEGImages/, ImageSets/Main/).")
    year_dirs = _year_dirs(data_dir)
    if years:
        year_dirs = {y: d for y, d in year_dirs.items() if y in years}
    paths, boxes, classes, difficult = [], [], [], []
    for year, year_dir in year_dirs.items():
        list_file = os.path.join(year_dir, "ImageSets", "Main", f"{image_set}.txt")
        if not os.path.isfile(list_file):
            continue
        with open(list_file) as f:
            ids = [line.split()[0] for line in f if line.strip()]
        for image_id in ids:
            b, c, d, _ = parse_voc_xml(os.path.join(year_dir, "Annotations", f"{image_id}.xml"), class_names)
            image = os.path.join(year_dir, "JPEGImages", f"{image_id}.jpg")
            if not os.path.isfile(image):
                raise DatasetNotFoundError(f"{year}: image {image} listed in {list_file} does not exist.")
            paths.append(image)
            boxes.append(b)
            classes.append(c)
            difficult.append(d)
    if not paths:
        wanted = ", ".join(years) if years else "any VOC20xx folder"
        raise DatasetNotFoundError(
            f"No images for image set {image_set!r} in {os.path.abspath(data_dir)} ({wanted}): the "
            f"image list ImageSets/Main/{image_set}.txt is missing or empty.")
    return DetectionExamples(paths, boxes, classes, difficult, tuple(class_names), f"voc_folder/{image_set}")


# -- TFDS voc -------------------------------------------------------------------------------


def tfds_voc_element(example):
    """A TFDS `voc` example -> this package's element (rel_xyxy boxes)."""
    objects = example["objects"]
    ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(tf.cast(objects["bbox"], tf.float32), (-1, 4)), axis=1)
    return {"image": example["image"], "boxes": tf.stack([xmin, ymin, xmax, ymax], axis=1),
            "classes": tf.cast(objects["label"], tf.int32),
            "difficult": tf.cast(objects["is_difficult"], tf.bool)}


def tfds_voc(splits, data_dir=None):
    """(tf.data of elements, size) from TFDS, e.g. splits [("voc/2007", "train+validation"),
    ("voc/2012", "train+validation")] (VOC trainval) or [("voc/2007", "test")]."""
    from keras_skipblock.data.tfds_sources import tfds_builder

    datasets, size = [], 0
    for name, split in splits:
        builder = tfds_builder(name, data_dir)
        datasets.append(builder.as_dataset(split=split).map(tfds_voc_element))
        size += sum(builder.info.splits[s].num_examples for s in split.split("+"))
    dataset = datasets[0]
    for other in datasets[1:]:
        dataset = dataset.concatenate(other)
    return dataset, size


def annotations_of(dataset, class_names=VOC_CLASSES, name="voc"):
    """The ground truth of a tf.data of elements, on the host (images=None):
    what VOC mAP compares predictions with."""
    boxes, classes, difficult = [], [], []
    for element in dataset.map(lambda e: {k: v for k, v in e.items() if k != "image"}).as_numpy_iterator():
        boxes.append(element["boxes"])
        classes.append(element["classes"])
        difficult.append(element["difficult"])
    return DetectionExamples(None, boxes, classes, difficult, tuple(class_names), name)


# -- pipelines ------------------------------------------------------------------------------


def examples_dataset(examples):
    """tf.data of elements {"image" uint8 (H, W, 3), "boxes", "classes", "difficult"}."""
    if len(examples) == 0:
        raise DatasetNotFoundError(f"{examples.name or 'detection data'}: the image list is empty.")
    for i, (b, c) in enumerate(zip(examples.boxes, examples.classes)):
        where = examples.images[i] if isinstance(examples.images, (list, tuple)) and isinstance(
            examples.images[i], str) else f"{examples.name} image {i}"
        check_annotations(b, c, len(examples.class_names), where)
    ragged = {
        "boxes": tf.ragged.constant([b.reshape(-1, 4).tolist() for b in examples.boxes], dtype=tf.float32,
                                    ragged_rank=1, inner_shape=(4,)),
        "classes": tf.ragged.constant([c.tolist() for c in examples.classes], dtype=tf.int32),
        "difficult": tf.ragged.constant([d.tolist() for d in examples.difficult], dtype=tf.bool),
    }
    images = examples.images
    if isinstance(images, np.ndarray):
        dataset = tf.data.Dataset.from_tensor_slices({"image": images, **ragged})
    elif images and isinstance(images[0], str):
        dataset = tf.data.Dataset.from_tensor_slices({"image": list(images), **ragged})

        def decode(element):
            # read_checked names a truncated or non-image file in its error
            image = tf.io.decode_image(read_checked(element["image"]), channels=3, expand_animations=False)
            return dict(element, image=image)

        dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    else:  # a list of arrays of different sizes
        shapes = {tuple(np.shape(i)) for i in images}
        if len(shapes) == 1:
            dataset = tf.data.Dataset.from_tensor_slices({"image": np.stack(images), **ragged})
        else:
            def generate():
                for i in range(len(images)):
                    yield images[i]
            image_ds = tf.data.Dataset.from_generator(
                generate, output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
            dataset = tf.data.Dataset.zip((image_ds, tf.data.Dataset.from_tensor_slices(ragged))).map(
                lambda image, rest: {"image": image, **rest})
    return dataset.map(_dense_element)


def _dense_element(element):
    out = dict(element)
    for key in ("boxes", "classes", "difficult"):
        value = element[key]
        out[key] = value.to_tensor() if isinstance(value, tf.RaggedTensor) else value
    out["boxes"] = tf.reshape(out["boxes"], (-1, 4))
    return out


def _resize(image, image_size):
    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
    return image / 127.5 - 1.0  # [-1, 1], the project's input convention


def training_dataset(elements, anchors, image_size, batch_size, seed=0, augment="ssd", repeat=False,
                     shuffle_buffer=2048, cache=False):
    """(image, {"boxes", "labels"}) batches for `fit`. Difficult objects are
    left out of the targets (as SSD's reference trainers do).

    augment: "ssd" (SSD's photometric distortion, zoom-out, min-IoU crop, flip;
    `detection/augment.py`), "flip" (horizontal flip only) or "none". Every
    random draw is stateless, keyed by (seed, a per-example number from
    `tf.data.Dataset.random(seed)`, new each epoch): the same seed gives the
    same batches, whatever tf.data's parallelism.

    cache: keep the decoded source images in memory after the first epoch, so
    that JPEG decoding (a quarter of the `ssd` pipeline's CPU time on VOC)
    runs once; only where they fit (VOC07+12 trainval at ~500x375: ~9 GB)."""
    from keras_skipblock.detection.anchors import encode_targets_batch
    from keras_skipblock.detection.augment import augment_example, check_augment

    augment = check_augment(augment)
    anchors = tf.constant(anchors, tf.float32)

    def prepare(element, number):
        keep = tf.logical_not(element["difficult"])
        boxes = tf.boolean_mask(element["boxes"], keep)
        classes = tf.boolean_mask(element["classes"], keep)
        image, boxes, classes = augment_example(element["image"], boxes, classes,
                                                tf.stack([tf.constant(seed, tf.int64), number]),
                                                image_size, augment)
        return image / 127.5 - 1.0, boxes, tf.cast(classes, tf.int32)

    def encode(images, boxes, classes):
        # matching once per batch (boxes padded with class -1): a fraction of per-image matching's cost
        deltas, labels = encode_targets_batch(boxes, classes, anchors)
        return images, {"boxes": deltas, "labels": labels}

    dataset = elements.cache() if cache else elements
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    numbers = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(dataset, numbers).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.padded_batch(batch_size, padded_shapes=([image_size, image_size, 3], [None, 4], [None]),
                                   padding_values=(0.0, 0.0, -1), drop_remainder=True)
    return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(elements, anchors, image_size, batch_size):
    """(image, {"boxes", "labels"}) batches in order, no augmentation (validation loss)."""
    from keras_skipblock.detection.anchors import encode_targets

    anchors = tf.constant(anchors, tf.float32)

    def prepare(element):
        keep = tf.logical_not(element["difficult"])
        deltas, labels = encode_targets(tf.boolean_mask(element["boxes"], keep),
                                        tf.boolean_mask(element["classes"], keep), anchors)
        return _resize(element["image"], image_size), {"boxes": deltas, "labels": labels}

    return elements.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(
        tf.data.AUTOTUNE)


def images_dataset(elements, image_size, batch_size):
    """Preprocessed images only, in order (for predictions)."""
    return elements.map(lambda e: _resize(e["image"], image_size),
                        num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class DetectionData:
    """The splits of one detection data set."""

    name: str
    train: tf.data.Dataset  # elements
    validation: tf.data.Dataset
    test: tf.data.Dataset
    validation_truth: DetectionExamples
    test_truth: DetectionExamples
    class_names: tuple
    train_size: int
    image_channels: int = 3
    note: Optional[str] = None
    train_files: Optional[list] = None  # image files read from disk (voc_folder): to name a corrupt one


def load_detection_data(name, data_dir=None, seed=0, train_images=None, validation_size=None,
                        test_images=None, canvas_size=160):
    """DetectionData for "fashion_mnist_scenes", "voc_folder" (a VOCdevkit
    folder: train on every VOC20xx trainval, test on VOC2007 test) or "voc"
    (TFDS voc/2007 + voc/2012 trainval, voc/2007 test, under data_dir)."""
    if name == "fashion_mnist_scenes":
        splits = {split: fashion_mnist_scenes(split, n, canvas_size=canvas_size, seed=seed)
                  for split, n in (("train", train_images), ("validation", validation_size),
                                   ("test", test_images))}
        return DetectionData(name, examples_dataset(splits["train"]), examples_dataset(splits["validation"]),
                             examples_dataset(splits["test"]), splits["validation"], splits["test"],
                             splits["train"].class_names, len(splits["train"]))
    if name == "voc_folder":
        train = read_voc_folder(data_dir, "trainval")
        test = read_voc_folder(data_dir, "test", years=("VOC2007",))
        train, test = _limit(train, train_images), _limit(test, test_images)
        test_ds = examples_dataset(test)
        return DetectionData(name, examples_dataset(train), test_ds, test_ds, test, test, VOC_CLASSES,
                             len(train), note="validation = VOC2007 test", train_files=list(train.images))
    if name == "voc":
        train, size = tfds_voc([("voc/2007", "train+validation"), ("voc/2012", "train+validation")], data_dir)
        test_elements, _ = tfds_voc([("voc/2007", "test")], data_dir)
        if test_images:
            test_elements = test_elements.take(test_images)
        if train_images:
            train, size = train.take(train_images), min(size, train_images)
        truth = annotations_of(test_elements, VOC_CLASSES, "voc/2007 test")
        return DetectionData(name, train, test_elements, test_elements, truth, truth, VOC_CLASSES, size,
                             note="validation = VOC2007 test")
    raise ValueError(f"Unknown detection data set {name!r}; use one of {DATASETS}.")


def image_files(data):
    """The image files of a DetectionData read from disk (voc_folder), else None: to name
    a file that fails to decode."""
    if not data.train_files:
        return None
    return list(data.train_files) + list(data.test_truth.images)


def _limit(examples, n):
    if not n:
        return examples
    return DetectionExamples(examples.images[:n], examples.boxes[:n], examples.classes[:n],
                             examples.difficult[:n], examples.class_names, examples.name)
