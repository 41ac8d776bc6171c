"""`--strategy mirrored` end to end on 2 logical CPU devices.

Logical devices must be configured before TensorFlow initialises its
devices, so the recipe runs in a fresh subprocess that sets them first. Its
SkipblockNet is tests/scripts/small_skipblocknet.py's design of one stage
(each variable is made, and the step traced, once per replica).
"""

import json
import os
import subprocess
import sys

from test_recipes import REPO, summary_line
from test_data import write_image_folder

LAUNCH = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import small_skipblocknet
small_skipblocknet.install()
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_mirrored_on_two_logical_cpus(tmp_path):
    images = str(tmp_path / "images")
    write_image_folder(os.path.join(images, "train"), per_class=6, size=(32, 32))
    # >= one global batch of evaluation images: Keras 3.15 builds the test step from the
    # first batch reduced over replicas, which fails when that batch splits unevenly.
    write_image_folder(os.path.join(images, "val"), per_class=4, size=(32, 32))
    out = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, os.path.join(REPO, "tests", "scripts"),
         os.path.join(REPO, "recipes", "cifar100.py"),
         "--strategy=mirrored", "--dataset=folder", f"--data_dir={images}", f"--model_dir={out}",
         "--model=skipblocknet_xs", "--image_size=32", "--batch_size=8",
         "--epochs=2", "--steps_per_epoch=2", "--loss=bias", "--normalization=global"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    # The global batch of 8 is split over the 2 replicas; the schedule counts global steps.
    assert "global batch 8 on 2 replica(s)" in result.stdout
    summary_line(result.stdout)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["optimizer_steps"] == 4 and summary["epochs"] == 2
    assert 0 < summary["bias_loss_variance_min"] < float("inf")
    assert os.path.exists(os.path.join(out, "best.keras"))
