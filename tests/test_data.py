"""Data pipelines: IDX reader, Fashion-MNIST lookup, preprocessing, folders, missing data."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_skipblock import data
from keras_skipblock.data import preprocessing
from keras_skipblock.data.fashion_mnist import FILES
from tolerances import ELEMENTWISE_RTOL, REDUCTION_RTOL, assert_close, perturbed


def write_fake_fashion(directory, n_train=40, n_test=20, gz=True):
    rng = np.random.RandomState(0)
    suffix = ".gz" if gz else ""
    sizes = {"train": n_train, "test": n_test}
    for key, stem in FILES.items():
        split, kind = key.split("_")
        n = sizes[split]
        array = rng.randint(0, 256, (n, 28, 28)).astype("uint8") if kind == "images" else (
            np.arange(n) % 10).astype("uint8")
        data.write_idx(os.path.join(directory, stem + suffix), array)
    return directory


# -- IDX --------------------------------------------------------------------

def test_idx_round_trip(tmp_path):
    for dtype in ["uint8", "int8", "int16", "int32", "float32", "float64"]:
        for name in ["a-idx3-ubyte", "a-idx3-ubyte.gz"]:
            array = (np.arange(2 * 3 * 5).reshape(2, 3, 5) * 7 % 127).astype(dtype)
            data.write_idx(tmp_path / name, array)
            loaded = data.read_idx(tmp_path / name)
            assert loaded.dtype == array.dtype and loaded.shape == array.shape
            np.testing.assert_array_equal(loaded, array)


def test_idx_bytes_match_the_format(tmp_path):
    """Hand-written bytes: magic 0x00000801 (uint8, 1 dim), size 3, values."""
    path = tmp_path / "labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))
    np.testing.assert_array_equal(data.read_idx(path), [7, 0, 9])


def test_idx_rejects_bad_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "short")


# -- Fashion-MNIST and digits -------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_folder(tmp_path, gz):
    write_fake_fashion(str(tmp_path), gz=gz)
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(str(tmp_path))
    assert x_train.shape == (40, 28, 28) and x_test.shape == (20, 28, 28)
    assert x_train.dtype == np.uint8 and set(y_train) <= set(range(10))


def test_missing_fashion_mnist_says_where_and_how(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.find_fashion_mnist(str(tmp_path / "nowhere"))
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "train-images-idx3-ubyte.gz" in message


def test_fashion_mnist_pipeline_shapes_and_range(tmp_path):
    write_fake_fashion(str(tmp_path))
    bundle = data.get_datasets("fashion_mnist", image_size=32, batch_size=8,
                               data_dir=str(tmp_path), validation_size=8)
    assert (bundle.train_size, bundle.test_size, bundle.num_classes) == (32, 20, 10)
    assert bundle.image_shape == (32, 32, 1)
    for dataset, drop in ((bundle.train, True), (bundle.validation, False), (bundle.test, False)):
        batches = list(dataset)
        x, y = batches[0]
        assert x.dtype == tf.float32 and y.dtype == tf.int32
        assert x.shape[1:] == (32, 32, 1)
        assert -1.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
        if drop:
            assert all(b[0].shape[0] == 8 for b in batches)
    rgb = data.get_datasets("fashion_mnist", 28, 4, data_dir=str(tmp_path), channels=3)
    assert next(iter(rgb.test))[0].shape == (4, 28, 28, 3)


def test_digits_pipeline():
    bundle = data.get_datasets("digits", image_size=16, batch_size=32)
    x, y = next(iter(bundle.train))
    assert x.shape == (32, 16, 16, 1) and bundle.validation is None
    assert bundle.train_size + bundle.test_size == 1797
    assert float(tf.reduce_max(x)) <= 1.0 and float(tf.reduce_min(x)) >= -1.0


# -- preprocessing ------------------------------------------------------------

def _encoded(height, width, fmt="jpeg", seed=0):
    image = np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype("uint8")
    encode = tf.io.encode_jpeg if fmt == "jpeg" else tf.io.encode_png
    return encode(image)


def test_train_and_eval_preprocessing_shapes_and_range():
    for fmt in ("jpeg", "png"):
        for shape in ((60, 90), (90, 40), (31, 31)):
            encoded = _encoded(*shape, fmt=fmt)
            for image in (preprocessing.preprocess_for_train(encoded, 32),
                          preprocessing.preprocess_for_eval(encoded, 32)):
                assert image.shape == (32, 32, 3) and image.dtype == tf.float32
                assert float(tf.reduce_min(image)) >= -1.0 and float(tf.reduce_max(image)) <= 1.0


def test_train_crop_window_respects_area_and_aspect():
    shape = tf.constant([200, 300, 3])
    areas, ratios = [], []
    for i in range(60):
        y, x, h, w = (int(v) for v in preprocessing.distorted_crop_window(shape, seed=tf.constant([i, 7])))
        assert 0 <= y and y + h <= 200 and 0 <= x and x + w <= 300
        areas.append(h * w / (200 * 300))
        ratios.append(w / h)
    assert min(areas) >= 0.08 - 0.01 and max(areas) <= 1.0
    assert min(ratios) >= 0.75 * 0.9 and max(ratios) <= 4 / 3 * 1.1
    assert max(areas) - min(areas) > 0.2  # it does vary


def test_seeded_train_preprocessing_is_reproducible():
    encoded = _encoded(80, 100)
    a = preprocessing.preprocess_for_train(encoded, 24, seed=tf.constant([3, 4]))
    b = preprocessing.preprocess_for_train(encoded, 24, seed=tf.constant([3, 4]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_center_crop_is_0875_of_the_shorter_side():
    y, x, h, w = (int(v) for v in preprocessing.center_crop_window(tf.constant([256, 320, 3]), 224))
    assert (h, w) == (224, 224) and (y, x) == (16, 48)


def test_eval_preprocessing_of_a_constant_image_keeps_its_value():
    image = np.full((50, 70, 3), 200, np.uint8)
    out = preprocessing.preprocess_for_eval(tf.io.encode_png(image), 16)
    # an antialiased resize's normalised taps sum to 1 up to rounding (tests/tolerances.py)
    assert_close(out.numpy(), np.full(out.shape, 200 / 127.5 - 1), REDUCTION_RTOL)


def test_cifar_flip_rotate_augmentation():
    image = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype("float32")
    out = preprocessing.augment_flip_rotate(image)
    assert out.shape == (32, 32, 3)
    assert float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 255
    # a zero-angle rotation is the identity; 90 degrees moves the top row to the left column
    assert_close(preprocessing.rotate(perturbed(image)[None], [0.0])[0].numpy(), image, ELEMENTWISE_RTOL)
    square = np.zeros((1, 5, 5, 1), "float32")
    square[0, 0, 2, 0] = 1
    turned = preprocessing.rotate(square, [np.pi / 2])[0, ..., 0].numpy()
    # cos(pi / 2) in float32 is -4e-8: the sample lands 1e-7 pixel off, a 1e-7 change
    assert turned[2, 0] == pytest.approx(1.0, abs=1e-4)


# -- folders --------------------------------------------------------------------

def write_image_folder(root, classes=("cat", "dog", "fox"), per_class=4, size=(40, 48)):
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            fmt = "png" if i == 0 else "jpeg"
            path = os.path.join(root, name, f"{i}.{'png' if fmt == 'png' else 'jpg'}")
            with open(path, "wb") as f:
                f.write(_encoded(size[0] + i, size[1], fmt, seed=10 * c + i).numpy())
    return root


def test_folder_pipeline(tmp_path):
    write_image_folder(str(tmp_path), per_class=5)
    bundle = data.get_datasets("folder", image_size=32, batch_size=4, data_dir=str(tmp_path))
    assert bundle.num_classes == 3 and bundle.train_size == 12 and bundle.test_size == 3
    x, y = next(iter(bundle.train))
    assert x.shape == (4, 32, 32, 3) and y.dtype == tf.int32
    assert float(tf.reduce_min(x)) >= -1 and float(tf.reduce_max(x)) <= 1
    assert sum(int(b[0].shape[0]) for b in bundle.test) == 3


def test_folder_with_train_and_val(tmp_path):
    write_image_folder(str(tmp_path / "train"))
    write_image_folder(str(tmp_path / "val"), per_class=1)
    splits, classes = data.folder_splits(str(tmp_path))
    assert classes == ["cat", "dog", "fox"]
    assert len(splits["train"][0]) == 12 and splits["test"][1] == [0, 1, 2]


def test_corrupt_image_is_reported_by_file_name(tmp_path):
    write_image_folder(str(tmp_path))
    bad = tmp_path / "dog" / "2.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    paths, labels, _ = data.list_image_folder(str(tmp_path))
    dataset = data.encoded_image_dataset(paths, labels, 16, 4, training=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="dog/2.jpg"):
        for _ in dataset:
            pass
    assert [p for p, _ in data.check_images(paths)] == [str(bad)]


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="does not exist"):
        data.list_image_folder(str(tmp_path / "nope"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(data.DatasetNotFoundError, match="No images"):
        data.list_image_folder(str(tmp_path))


def test_missing_imagenet_says_where_and_how(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from keras_skipblock.data.tfds_sources import tfds_builder

    with pytest.raises(data.DatasetNotFoundError) as info:
        tfds_builder("imagenet2012", data_dir=str(tmp_path), manual_dir=str(tmp_path / "tars"),
                     prepare=False)
    message = str(info.value)
    assert str(tmp_path) in message and "ILSVRC2012_img_train.tar" in message
