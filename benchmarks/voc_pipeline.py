"""VOC-scale detection input pipeline: images per second per CPU core.

    python benchmarks/voc_pipeline.py [--num_images=256 --seconds=20 --rounds=2 --augments=ssd,flip,none]

1. Writes a VOCdevkit (VOC2007 trainval) of real-sized JPEGs: 500x375 or
   375x500 (VOC's typical sizes), smooth content plus noise at quality 90
   (~70 KB), each with 1-10 boxes in its XML.
2. Runs the full training pipeline of recipes/voc.py on it
   (`load_detection_data("voc_folder")` + `training_dataset`: read, JPEG
   decode, SSD augmentation, resize to 300, anchor matching on the 1,917
   anchors of SkipblockNet-S + SSD, batch 42) for --seconds, after warm-up,
   each augmentation in turn, --rounds times (interleaved, so that a change of
   load on a shared machine hits all of them); `--cache` adds runs with the
   decoded images cached in memory (`training_dataset(cache=True)`).
3. Prints per run images/s (wall), CPU-seconds per image (process time of all
   threads) and images per CPU-second = images/s one core delivers; then the
   median per augmentation, its ratio to `none` in the same rounds (the
   steadier figure on a shared machine), and whether 8 cores keep up with
   --demand images/s (an accelerator training S + SSD at batch 42; see
   --demand).
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

XML = """<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>
<size><width>{width}</width><height>{height}</height><depth>3</depth></size>
{objects}</annotation>
"""
OBJECT = ("<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin>"
          "<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def write_vocdevkit(root, count, seed=0):
    """A VOCdevkit/VOC2007 with `count` trainval JPEGs of 500x375 or 375x500, 1-10 boxes each."""
    from keras_skipblock.detection.data import VOC_CLASSES

    rng = np.random.RandomState(seed)
    year = os.path.join(root, "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(year, sub), exist_ok=True)
    ids = []
    for i in range(count):
        width, height = (500, 375) if rng.rand() < 0.7 else (375, 500)
        y = np.linspace(0, 1, height)[:, None, None]
        x = np.linspace(0, 1, width)[None, :, None]
        phase = rng.uniform(0, 6, 3)[None, None, :]
        image = 127 + 80 * np.sin(6 * x + phase) * np.cos(4 * y + phase) + rng.normal(0, 12, (height, width, 3))
        objects = []
        for _ in range(rng.randint(1, 11)):
            w, h = rng.randint(20, width // 2), rng.randint(20, height // 2)
            x0, y0 = rng.randint(1, width - w), rng.randint(1, height - h)
            image[y0:y0 + h, x0:x0 + w] += rng.uniform(-60, 60, 3)
            objects.append(OBJECT.format(name=VOC_CLASSES[rng.randint(20)], difficult=int(rng.rand() < 0.1),
                                         x0=x0, y0=y0, x1=x0 + w - 1, y1=y0 + h - 1))
        name = f"{i:06d}"
        with open(os.path.join(year, "JPEGImages", name + ".jpg"), "wb") as f:
            f.write(tf.io.encode_jpeg(np.clip(image, 0, 255).astype("uint8"), quality=90).numpy())
        with open(os.path.join(year, "Annotations", name + ".xml"), "w") as f:
            f.write(XML.format(name=name, width=width, height=height, objects="\n".join(objects)))
        ids.append(name)
    with open(os.path.join(year, "ImageSets", "Main", "trainval.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    with open(os.path.join(year, "ImageSets", "Main", "test.txt"), "w") as f:
        f.write("\n".join(ids[:8]) + "\n")
    return year


def measure(dataset, seconds, batch_size, warmup=3):
    iterator = iter(dataset)
    for _ in range(warmup):  # thread pools, autotuning, the shuffle buffer (and a cache's first epoch)
        next(iterator)
    count, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        next(iterator)
        count += batch_size
    return count, time.perf_counter() - wall0, time.process_time() - cpu0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch_size", type=int, default=42)
    parser.add_argument("--image_size", type=int, default=300)
    parser.add_argument("--augments", default="ssd,flip,none")
    parser.add_argument("--rounds", type=int, default=2, help="each augmentation this many times, interleaved")
    parser.add_argument("--cache", action="store_true",
                        help="also run each augmentation with the decoded images cached in memory")
    parser.add_argument("--demand", type=float, default=1500.0,
                        help="images/s one accelerator trains SkipblockNet-S + SSD at (assumption, see docs)")
    parser.add_argument("--cores_per_accelerator", type=int, default=8)
    args = parser.parse_args(argv)

    from keras_skipblock.detection import data as data_lib
    from keras_skipblock.detection.anchors import generate_anchors

    if args.image_size != 300:
        raise SystemExit("--image_size: only 300 (the paper's SSD input) is set up here.")
    # SkipblockNet-S + SSD's six maps at 300x300 (detection.model.feature_sizes): 1,917 anchors
    anchors = generate_anchors((300, 300), [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as root:
        write_vocdevkit(root, args.num_images)
        data = data_lib.load_detection_data("voc_folder", root)
        sizes_kb = [os.path.getsize(p) / 1024 for p in data.train_files]
        print(f"{data.train_size} JPEGs (500x375 / 375x500, mean {np.mean(sizes_kb):.0f} KB), "
              f"{args.image_size}x{args.image_size}, {len(anchors)} anchors, batch {args.batch_size}, "
              f"{cores} cores (shared: CPU time is the figure, wall only indicative)", flush=True)
        runs = [(a, False) for a in args.augments.split(",") if a]
        runs += [(a, True) for a, _ in runs] if args.cache else []
        per_core = {}
        for round_ in range(args.rounds):
            for augment, cache in runs:
                name = augment + (" cached" if cache else "")
                dataset = data_lib.training_dataset(data.train, anchors, args.image_size, args.batch_size,
                                                    augment=augment, repeat=True, cache=cache)
                warmup = max(3, data.train_size // args.batch_size + 2) if cache else 3
                count, wall, cpu = measure(dataset, args.seconds, args.batch_size, warmup)
                del dataset
                per_core.setdefault(name, []).append(count / cpu)
                print(f"round {round_} {name:12s}: {count / wall:7.1f} images/s wall, {1000 * cpu / count:6.2f} ms "
                      f"CPU per image = {count / cpu:6.1f} images/s per core (load {os.getloadavg()[0]:.1f})",
                      flush=True)
    need = args.demand / args.cores_per_accelerator
    none = per_core.get("none")
    for name, rates in per_core.items():
        rate = float(np.median(rates))
        ratio = (f", {float(np.median([r / n for r, n in zip(rates, none)])):.2f}x none" if none else "")
        verdict = "keeps up" if rate >= need else "CANNOT keep up"
        print(f"augment={name}: median {rate:.0f} images/s per core{ratio}; {args.cores_per_accelerator} cores "
              f"deliver {rate * args.cores_per_accelerator:.0f} images/s against the accelerator's assumed "
              f"{args.demand:.0f} ({need:.0f} per core needed): {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
