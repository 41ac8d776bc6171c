"""CPU-scale analogue of the paper's Table 3 / Table 4 / Table 5 on Fashion-MNIST.

{SkipblockNet without skip blocks, SkipblockNet} x {CE, focal, bias loss}
x seeds, every run with the same model size, schedule, epochs and steps,
trained by the project's driver (`keras_skipblock.training.train`, the
recipes' defaults for Fashion-MNIST), then the Table 5 variance statistics
of the best (EMA) checkpoint on test images (`keras_skipblock.analysis`).

    nohup nice -n 5 python experiments/ablation.py --out docs/ablation.json \
        > /tmp/ablation.log 2>&1 &
    python experiments/report.py docs/ablation.json

Runs go seed-major (all six cells of seed 0, then seed 1, ...), so an
interrupted study leaves complete seed groups. Each finished run is written
to --out at once (atomic replace); started again with the same --out, the
script skips finished runs. --deadline stops it from starting a run that
would not end in time.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ARCHS = {"noskip": False, "skip": True}
LOSSES = ("ce", "focal", "bias")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/ablation.json", help="results JSON (resumable)")
    p.add_argument("--run-root", default="/tmp/keras_skipblock_ablation",
                   help="model_dir of each run (checkpoints, history) goes under here")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--model", default="skipblocknet_m")
    p.add_argument("--width", type=float, default=0.35)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=200,
                   help="steps per epoch over the shuffled, repeated 55,000 training images; "
                        "0: full passes")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", choices=["rmsprop", "sgd"])
    p.add_argument("--learning-rate", type=float, default=0.1,
                   help="peak rate of the warm-up + cosine schedule")
    p.add_argument("--warmup-epochs", type=float, default=0.3)
    p.add_argument("--validation-size", type=int, default=2000,
                   help="training images held out to pick the best (EMA) epoch")
    p.add_argument("--bn-momentum", type=float, default=0.9)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--variance-images", type=int, default=2000,
                   help="test images for the variance table (0: skip it)")
    p.add_argument("--deadline", default=None,
                   help="UTC HH:MM; no run starts unless the median run time fits before it")
    return p.parse_args(argv)


def _write(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _machine():
    import keras
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
    }


def _deadline_passed(deadline, durations):
    if not deadline:
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    hour, minute = (int(x) for x in deadline.split(":"))
    end = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    expected = sorted(durations)[len(durations) // 2] if durations else 0.0
    return now + datetime.timedelta(seconds=expected) > end


def variance_table(best_model, args):
    import keras

    from keras_skipblock.analysis import feature_variances
    from keras_skipblock.data import get_datasets

    model = keras.saving.load_model(best_model, compile=False)
    batch = 250
    data = get_datasets("fashion_mnist", args.image_size, batch, channels=1, validation_size=0)
    steps = max(args.variance_images // batch, 1)
    return feature_variances(model, data.test, max_batches=steps).to_dict()


def main(argv=None):
    args = parse_args(argv)
    from keras_skipblock.training import TrainConfig, train

    results = {"runs": []}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    results["command"] = "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:]))
    results["settings"] = vars(args)
    results["machine"] = _machine()
    results.setdefault("started_utc", datetime.datetime.now(datetime.timezone.utc).isoformat())
    done = {(r["arch"], r["loss"], r["seed"]) for r in results["runs"]}
    durations = [r["wall_time_s"] for r in results["runs"]]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    _write(args.out, results)

    plan = [(a, l, s) for s in args.seeds for a in args.archs for l in args.losses]
    for arch, loss, seed in plan:
        if (arch, loss, seed) in done:
            continue
        if _deadline_passed(args.deadline, durations):
            print(f"deadline {args.deadline} UTC: not starting {arch}/{loss}/seed {seed}", flush=True)
            results["stopped_by_deadline"] = True
            break
        model_dir = os.path.join(args.run_root, f"{arch}_{loss}_seed{seed}")
        shutil.rmtree(model_dir, ignore_errors=True)  # a fresh run, not a resume
        config = TrainConfig(
            dataset="fashion_mnist", image_size=args.image_size, channels=1,
            validation_size=args.validation_size,
            model=args.model, width=args.width, dropout=args.dropout,
            bn_momentum=args.bn_momentum, skip_blocks=ARCHS[arch], loss=loss,
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            lr_schedule="cosine", warmup_epochs=args.warmup_epochs, optimizer=args.optimizer,
            weight_decay=args.weight_decay, ema_decay=args.ema_decay, model_dir=model_dir,
            seed=seed, steps_per_epoch=args.steps_per_epoch or None, verbose=2,
        )
        print(f"=== {arch} {loss} seed {seed} ({datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} UTC)",
              flush=True)
        start = time.time()
        summary = train(config)
        train_time = time.time() - start
        record = {
            "arch": arch, "loss": loss, "seed": seed,
            "test_top1": summary["test_top1"], "test_top5": summary["test_top5"],
            "test_loss": summary["test_loss"], "epochs": summary["epochs"],
            "optimizer_steps": summary["optimizer_steps"], "train_wall_time_s": round(train_time, 1),
        }
        history = os.path.join(model_dir, "history.csv")
        if os.path.exists(history):
            with open(history) as f:
                record["history_csv"] = f.read()
        if args.variance_images:
            record["variance"] = variance_table(summary["best_model"], args)
        record["wall_time_s"] = round(time.time() - start, 1)
        record["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        durations.append(record["wall_time_s"])
        results["runs"].append(record)
        results["total_run_time_s"] = round(sum(r["wall_time_s"] for r in results["runs"]), 1)
        _write(args.out, results)
        print(f"=== done {arch} {loss} seed {seed}: top-1 {record['test_top1']:.4f}, "
              f"{record['wall_time_s']:.0f} s", flush=True)
        import keras

        keras.backend.clear_session()
    results["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    _write(args.out, results)


if __name__ == "__main__":
    main()
