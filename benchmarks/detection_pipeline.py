"""Detection training step: the recipes/voc.py pipeline next to the model alone.

    python benchmarks/detection_pipeline.py [--modes=legacy_flip,ssd --steps=12 --rounds=3]

SkipblockNet-S + SSD on fashion_mnist_scenes at the recipe's settings
(128x128, batch 32, SGD, cosine, multibox loss "ce", BN momentum 0.9), timed
side by side in one process, interleaved round by round:

- pipeline/<mode>: `model.fit` on `training_dataset(..., augment=<mode>)`
  (shuffle, augmentation, anchor matching in tf.data on the same cores), with
  the per-step callback voc.py runs (TerminateOnNaN); timed from the end of
  the second step to the end of the last, so tracing and the pipeline's
  start are left out, and so is the epoch end (validation, checkpoints).
- model_only: `model.train_on_batch` on one in-memory batch (x, y), the same
  number of steps.
- pipeline/memory (a mode): `model.fit` on that batch repeated from memory
  (`Dataset.from_tensors(batch).repeat()`): the model through fit's own
  loop with no data work, since train_on_batch's per-call Python work makes
  it slower than fit's loop on these small steps.

Reported: images per second of wall time and per CPU-second (process time of
all threads / images), and the ratios pipeline / model-only per round and
their median. `legacy_flip` is the pipeline as it was before issue 17
(keras-cv RandomFlip + resize, per-image matching), for the before/after
figure.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    """Wall and process time at the end of every training step."""

    def __init__(self):
        super().__init__()
        self.marks = []

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append((time.perf_counter(), time.process_time()))


def legacy_flip_dataset(elements, anchors, image_size, batch_size, seed=0):
    """The training pipeline before issue 17: keras-cv RandomFlip on each resized image."""
    import keras_cv

    from keras_skipblock.detection.anchors import encode_targets

    flip = keras_cv.layers.RandomFlip("horizontal", bounding_box_format="rel_xyxy", seed=seed)
    anchors = tf.constant(anchors, tf.float32)

    def prepare(element):
        keep = tf.logical_not(element["difficult"])
        boxes = tf.boolean_mask(element["boxes"], keep)
        classes = tf.boolean_mask(element["classes"], keep)
        image = tf.image.resize(tf.cast(element["image"], tf.float32), (image_size, image_size)) / 127.5 - 1
        out = flip({"images": image, "bounding_boxes": {"boxes": boxes, "classes": classes}})
        deltas, labels = encode_targets(out["bounding_boxes"]["boxes"],
                                        tf.cast(out["bounding_boxes"]["classes"], tf.int32), anchors)
        return out["images"], {"boxes": deltas, "labels": labels}

    dataset = elements.shuffle(2048, seed=seed).repeat().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def build(args):
    from keras_skipblock.detection import data as data_lib
    from keras_skipblock.detection.anchors import generate_anchors
    from keras_skipblock.detection.loss import MultiboxLoss
    from keras_skipblock.detection.model import build_detector, feature_sizes, level_anchor_counts
    from keras_skipblock.training import optimizers

    keras.utils.set_random_seed(0)
    size = args.image_size
    model = build_detector(args.model, 10, (size, size, 3), "ssd", bn_momentum=0.9)
    anchors = generate_anchors((size, size), feature_sizes(model))
    optimizers.add_weight_decay(model, 4e-5)
    schedule = keras.optimizers.schedules.CosineDecay(0.04, 10000)
    model.compile(optimizer=optimizers.build_optimizer("sgd", schedule, ema_decay=None, momentum=0.9),
                  loss=MultiboxLoss(args.loss, level_anchor_counts()), jit_compile=False)
    scenes = data_lib.fashion_mnist_scenes("train", args.num_images, canvas_size=size, seed=0)
    elements = data_lib.examples_dataset(scenes)
    return model, anchors, elements


def make_dataset(mode, elements, anchors, args):
    from keras_skipblock.detection import data as data_lib

    if mode == "legacy_flip":
        return legacy_flip_dataset(elements, anchors, args.image_size, args.batch_size)
    if mode == "memory":
        return None  # built from the in-memory batch in main
    return data_lib.training_dataset(elements, anchors, args.image_size, args.batch_size, seed=0,
                                     augment=mode, repeat=True)


def time_pipeline(model, dataset, steps):
    timer = StepTimer()
    model.fit(dataset, steps_per_epoch=steps + 2, epochs=1, verbose=0, shuffle=False,
              callbacks=[keras.callbacks.TerminateOnNaN(), timer])
    (w0, c0), (w1, c1) = timer.marks[1], timer.marks[-1]
    return w1 - w0, c1 - c0


def time_model_only(model, batch, steps):
    x, y = batch
    model.train_on_batch(x, y)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="memory,legacy_flip,flip,ssd",
                        help="pipelines to time: memory, legacy_flip, none, flip, ssd")
    parser.add_argument("--model", default="skipblocknet_s")
    parser.add_argument("--loss", default="ce")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_images", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]

    model, anchors, elements = build(args)
    datasets = {mode: make_dataset(mode, elements, anchors, args) for mode in modes}
    batch = next(iter(make_dataset("ssd", elements, anchors, args)))
    batch = (tf.identity(batch[0]), {k: tf.identity(v) for k, v in batch[1].items()})
    if "memory" in datasets:
        datasets["memory"] = tf.data.Dataset.from_tensors(batch).repeat()
    # trace both paths once
    model.fit(datasets[modes[0]], steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    time_model_only(model, batch, 1)

    cores = len(os.sched_getaffinity(0))
    images = args.steps * args.batch_size
    print(f"{args.model} + SSD, {args.image_size}x{args.image_size}, batch {args.batch_size}, loss {args.loss}, "
          f"{cores} cores; {args.steps} timed steps x {args.rounds} rounds", flush=True)
    ratios = {mode: ([], []) for mode in modes}
    for r in range(args.rounds):
        wall_m, cpu_m = time_model_only(model, batch, args.steps)
        print(f"round {r}: model_only      {images / wall_m:7.1f} img/s wall  {images / cpu_m:7.1f} img/CPU-s",
              flush=True)
        for mode in modes:
            wall, cpu = time_pipeline(model, datasets[mode], args.steps)
            ratios[mode][0].append(wall / wall_m)
            ratios[mode][1].append(cpu / cpu_m)
            print(f"round {r}: pipeline/{mode:11s} {images / wall:7.1f} img/s wall  {images / cpu:7.1f} img/CPU-s"
                  f"   ratio to model-only: wall {wall / wall_m:.3f}  CPU {cpu / cpu_m:.3f}", flush=True)
    for mode in modes:
        wall, cpu = ratios[mode]
        if "memory" in ratios and mode != "memory":
            wall_f = statistics.median(w / m for w, m in zip(wall, ratios["memory"][0]))
            cpu_f = statistics.median(c / m for c, m in zip(cpu, ratios["memory"][1]))
            print(f"MEDIAN pipeline/{mode} / pipeline/memory (fit on the in-memory batch): wall {wall_f:.3f}, "
                  f"CPU time {cpu_f:.3f}", flush=True)
        print(f"MEDIAN pipeline/{mode} / model_only: wall {statistics.median(wall):.3f} "
              f"(rounds {', '.join(f'{v:.2f}' for v in wall)}), CPU time {statistics.median(cpu):.3f} "
              f"(rounds {', '.join(f'{v:.2f}' for v in cpu)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
