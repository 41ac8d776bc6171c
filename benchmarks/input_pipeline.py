"""Input pipeline vs train step, images/s on the same cores.

    python benchmarks/input_pipeline.py [--num_images=256 --batch_size=32 --steps=6]

1. Writes JPEGs of ImageNet-like sizes (shorter side 300-500, aspect 3:4 to
   4:3, smooth content plus noise, quality 90: ~50-150 KB like ImageNet's).
2. Times the ImageNet *training* pipeline on them (read, fused
   decode-and-crop, resize to 224, flip, scale, batch) over repeated epochs.
3. Times SkipblockNet-M's training step at 224 (Bias Loss, RMSprop with
   EMA, L2), the step's graph traced beforehand, on in-memory batches.
4. Prints both and their ratio: the pipeline must deliver >= 2x what the
   step consumes, or it is the bottleneck.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def write_jpegs(directory, count, seed=0):
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(count):
        short = rng.randint(300, 501)
        aspect = rng.uniform(3 / 4, 4 / 3)
        height, width = (short, int(short * aspect)) if aspect >= 1 else (int(short / aspect), short)
        y = np.linspace(0, 1, height)[:, None, None]
        x = np.linspace(0, 1, width)[None, :, None]
        phase = rng.uniform(0, 6, 3)[None, None, :]
        image = 127 + 80 * np.sin(6 * x + phase) * np.cos(4 * y + phase)
        image = image + rng.normal(0, 12, (height, width, 3))
        image = np.clip(image, 0, 255).astype("uint8")
        path = os.path.join(directory, f"c{i % 10}", f"{i}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(tf.io.encode_jpeg(image, quality=90).numpy())
        paths.append(path)
    return paths


def pipeline_images_per_second(paths, batch_size, image_size, seconds):
    from keras_skipblock.data import encoded_image_dataset

    labels = [i % 10 for i in range(len(paths))]
    dataset = encoded_image_dataset(paths, labels, image_size, batch_size, training=True, repeat=True)
    iterator = iter(dataset)
    for _ in range(3):  # warm up: thread pools, autotuning
        next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        images, _ = next(iterator)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def train_step_images_per_second(batch_size, image_size, steps, model_name):
    import keras

    from keras_skipblock.training import TrainConfig, build_model, build_optimizer, make_loss
    from keras_skipblock.training.schedules import paper_schedule

    config = TrainConfig(model=model_name)
    model = build_model(config, (image_size, image_size, 3), 1000)
    model.compile(optimizer=build_optimizer("rmsprop", paper_schedule(batch_size, 1000)),
                  loss=make_loss("bias"), metrics=["accuracy"], jit_compile=False)
    x = tf.random.uniform((batch_size, image_size, image_size, 3), -1, 1)
    y = tf.random.uniform((batch_size,), 0, 1000, tf.int32)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace + warm up
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=20.0, help="pipeline timing window")
    parser.add_argument("--steps", type=int, default=6, help="timed train steps")
    parser.add_argument("--model", default="skipblocknet_m")
    parser.add_argument("--skip_train_step", action="store_true")
    args = parser.parse_args(argv)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as directory:
        paths = write_jpegs(directory, args.num_images)
        mean_kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
        print(f"{len(paths)} generated JPEGs, mean {mean_kb:.0f} KB; {cores} CPU cores; "
              f"batch {args.batch_size}, {args.image_size}x{args.image_size}", flush=True)
        pipeline = pipeline_images_per_second(paths, args.batch_size, args.image_size, args.seconds)
    print(f"input pipeline (ImageNet training preprocessing): {pipeline:8.1f} images/s", flush=True)
    if args.skip_train_step:
        return 0
    step = train_step_images_per_second(args.batch_size, args.image_size, args.steps, args.model)
    ratio = pipeline / step
    print(f"train step ({args.model}, Bias Loss, RMSprop+EMA):    {step:8.1f} images/s", flush=True)
    verdict = "OK: not the bottleneck" if ratio >= 2 else "BOTTLENECK: below 2x"
    print(f"pipeline / step = {ratio:.1f}x  ({verdict})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
