"""Fashion-MNIST from its IDX files, and scikit-learn's digits, as numpy arrays."""

import os

import numpy as np

from keras_skipblock.data.errors import DatasetNotFoundError
from keras_skipblock.data.idx import read_idx

NUM_CLASSES = 10
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"


def default_dirs():
    """Where Fashion-MNIST is looked for when no folder is given, in order."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return [DEBIAN_DIR, os.path.join(keras_home, "datasets", "fashion-mnist")]


def _find_file(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def find_fashion_mnist(data_dir=None):
    """The folder holding the four IDX files (gzipped or not), or raise with help."""
    candidates = [data_dir] if data_dir else default_dirs()
    for directory in candidates:
        if all(_find_file(directory, stem) for stem in FILES.values()):
            return directory
    names = ", ".join(stem + ".gz" for stem in FILES.values())
    raise DatasetNotFoundError(
        "Fashion-MNIST not found. Looked for " + names + " in: "
        + "; ".join(os.path.abspath(d) for d in candidates) + ". "
        "Get it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs to "
        f"{DEBIAN_DIR}), or `bash recipes/get_fashion_mnist.sh` (the same, or instructions), or "
        "download the four files from https://github.com/zalandoresearch/fashion-mnist "
        "(data/fashion) into a folder and pass --data_dir=<that folder>."
    )


def load_fashion_mnist(data_dir=None):
    """((x_train, y_train), (x_test, y_test)): uint8 (n, 28, 28) images, uint8 labels."""
    directory = find_fashion_mnist(data_dir)
    arrays = {key: read_idx(_find_file(directory, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise ValueError(
                f"Fashion-MNIST in {directory}: {split} images and labels differ in length "
                f"({len(arrays[f'{split}_images'])} vs {len(arrays[f'{split}_labels'])})."
            )
    return (arrays["train_images"], arrays["train_labels"]), (
        arrays["test_images"], arrays["test_labels"]
    )


def load_digits(test_fraction=0.2, seed=0):
    """scikit-learn's 1,797 bundled 8x8 digits as uint8 (0-255) arrays, split deterministically."""
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype("uint8")
    labels = data.target.astype("int32")
    order = np.random.RandomState(seed).permutation(len(images))
    n_test = int(round(len(images) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])
