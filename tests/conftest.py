"""Shared test set-up: quiet TF, deterministic seeds, small real data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def load_digits():
    """scikit-learn's bundled digits (1,797 real 8x8 images), as
    (x float32 in [0, 1] of shape (n, 8, 8, 1), y int32). A plain function too:
    tools/measure_thresholds.py trains on exactly what the tests train on."""
    from sklearn import datasets

    data = datasets.load_digits()
    x = (data.images[..., None] / 16.0).astype("float32")
    return x, data.target.astype("int32")


@pytest.fixture(scope="session")
def digits():
    return load_digits()
