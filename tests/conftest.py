"""Shared test set-up: quiet TF, deterministic seeds, small real data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()  # Keras' global state (layer-name counters, the default graph)
    # clear_session's gc.collect() walked every object alive, TF's and Keras' modules included:
    # 0.25-0.5 s per test, 113 s of the suite's 589 s of test time. What survives it now moves to
    # the collector's permanent generation, so the next collection walks only the next test's objects.
    gc.freeze()


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


# The suite runs on 2 xdist workers (pytest.ini). Expensive fixtures (trained models, converted
# files) are session-scoped even where one module uses them: work stealing interleaves modules on a
# worker, and pytest rebuilt a module-scoped fixture each time a worker came back to its module
# (test_tflite.py's trained model: three times in one run, 9 s each). Each seeds itself.
# The longest tests go first, so that they do not start last and leave one worker idle at the end.
# Seconds on a clean clone (2026-12-05): 47 (multi_worker: two processes, started twice, and a 12 s
# stall), 16 (mirrored on two logical CPUs), 20 (a killed run resuming), 17 (imagenet -> food101),
# 13 (food101 from the .pth).
LONGEST_FIRST = (
    "tests/test_multi_worker.py",
    "tests/test_distributed_training.py",
    "tests/test_resume.py",
    "tests/test_recipes.py",
    "tests/test_authors_weights.py::test_food101_recipe_fine_tunes_from_the_pth",
)


# Then the modules with expensive session fixtures (trained models, conversions), in the first
# worker's share of the queue; many short tests with no such fixture go last. A worker that runs out
# of tests takes half of the other's remaining queue from its end, and a module split between the
# workers builds its fixtures on both.
FIXTURES_EARLY = (
    "tests/test_quantization.py", "tests/test_detection.py", "tests/test_tflite.py",
    "tests/test_quantization_detection.py", "tests/test_authors_weights.py",
)
SHORT_LAST = (
    "tests/test_bias_loss.py", "tests/test_compat.py", "tests/test_data.py", "tests/test_schedules.py",
    "tests/test_analysis.py", "tests/test_flops.py", "tests/test_logging_utils.py",
    "tests/test_packaging.py",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        for index, prefix in enumerate(LONGEST_FIRST):
            if item.nodeid.startswith(prefix):
                return index
        if item.nodeid.startswith(FIXTURES_EARLY):
            return len(LONGEST_FIRST)
        return len(LONGEST_FIRST) + 1 + item.nodeid.startswith(SHORT_LAST)

    items.sort(key=rank)  # stable: the rest keep their order
