"""Train-step throughput with BiasLoss vs cross-entropy, same model and batch.

Two identical copies of the model (same weights) are compiled, one with
BiasLoss and one with sparse categorical cross-entropy; rounds of train steps
alternate between them in one process so machine noise hits both alike.
Prints images/s per loss and the ratio. Goal: BiasLoss costs <= 2%.

    python benchmarks/loss_overhead.py --model skipblocknet_m --image_size 224 --batch_size 32
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras  # noqa: E402
import keras_skipblock as ks  # noqa: E402

flags.DEFINE_string("model", "skipblocknet_m", "A keras_skipblock.models name.")
flags.DEFINE_integer("image_size", 224, "Input height and width.")
flags.DEFINE_integer("batch_size", 32, "Images per train step.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the classifier head.")
flags.DEFINE_integer("steps", 5, "Train steps per timed round.")
flags.DEFINE_integer("rounds", 6, "Timed rounds per loss (alternating).")
FLAGS = flags.FLAGS


def build(name, shape, classes, loss):
    from keras_skipblock import models

    keras.utils.set_random_seed(0)
    model = models.get_model(name, input_shape=shape, num_classes=classes)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss=loss)
    return model


def timed_round(model, dataset, steps):
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * FLAGS.batch_size / (time.perf_counter() - start)


def main(_):
    import tensorflow as tf

    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (FLAGS.batch_size,) + shape).astype("float32")
    labels = rng.integers(0, FLAGS.num_classes, FLAGS.batch_size).astype("int32")
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()

    losses = {
        "cross-entropy": "sparse_categorical_crossentropy",
        "bias loss": ks.BiasLoss(normalization="global"),
    }
    models = {name: build(FLAGS.model, shape, FLAGS.num_classes, loss) for name, loss in losses.items()}
    for model in models.values():  # trace and warm up outside the timing
        timed_round(model, dataset, 2)

    rates = {name: [] for name in models}
    for _ in range(FLAGS.rounds):
        for name, model in models.items():
            rates[name].append(timed_round(model, dataset, FLAGS.steps))

    print("round | " + " | ".join(f"{name} images/s" for name in rates))
    for i, row in enumerate(zip(*rates.values())):
        print(f"{i} | " + " | ".join(f"{r:.3f}" for r in row))
    medians = {name: float(np.median(r)) for name, r in rates.items()}
    print(f"\n{FLAGS.model} at {FLAGS.image_size}x{FLAGS.image_size}, batch {FLAGS.batch_size}, "
          f"{FLAGS.rounds} alternating rounds of {FLAGS.steps} steps, {os.cpu_count()} CPU cores")
    print("| loss | median images/s | min | max |\n|---|---|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {medians[name]:.2f} | {min(r):.2f} | {max(r):.2f} |")
    # Rounds run back to back, so each pair saw nearly the same machine load:
    # the median of the per-round ratios is steadier than the ratio of medians.
    paired = np.array(rates["bias loss"]) / np.array(rates["cross-entropy"])
    ratio = float(np.median(paired))
    print(f"\nbias loss / cross-entropy throughput, median of {len(paired)} paired rounds: "
          f"{ratio:.3f} (overhead {100 * (1 - ratio):+.1f}%; goal <= 2%); "
          f"ratio of medians {medians['bias loss'] / medians['cross-entropy']:.3f}")


if __name__ == "__main__":
    app.run(main)
