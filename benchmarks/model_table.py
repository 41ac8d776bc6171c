"""Parameters and multiply-accumulates of SkipblockNet XS/S/M/L and the
MobileNetV3 baselines, next to the paper's Table 1 figures.

    TF_CPP_MIN_LOG_LEVEL=3 python benchmarks/model_table.py [--size 224] [--classes 1000]

Prints a Markdown table (the one in docs/models.md). Builds each model once
(no forward pass); about a minute on two CPU cores.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras_skipblock as ks  # noqa: E402
from keras_skipblock.models import get_model  # noqa: E402

# (label, registry name, kwargs, Table 1 MACs, Table 1 params); None: not in Table 1.
ROWS = [
    ("SkipblockNet-XS", "skipblocknet_xs", {}, 81e6, 2.3e6),
    ("SkipblockNet-S", "skipblocknet_s", {}, 152e6, 3.6e6),
    ("SkipblockNet-M", "skipblocknet_m", {}, 246e6, 5.5e6),
    ("SkipblockNet-M, no skip blocks", "skipblocknet_m", {"skip_blocks": False}, None, None),
    ("SkipblockNet-L", "skipblocknet_l", {}, 364e6, 7.1e6),
    ("MobileNetV3-Small 1.0", "mobilenet_v3_small", {}, 66e6, 2.9e6),
    ("MobileNetV3-Large 0.75", "mobilenet_v3_large", {"alpha": 0.75}, 155e6, 4.0e6),
    ("MobileNetV3-Large 1.0", "mobilenet_v3_large", {}, 219e6, 5.4e6),
    ("MobileNetV3-Large 1.25", "mobilenet_v3_large", {"alpha": 1.25}, 356e6, 7.5e6),
]


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def measure(name, kwargs, size, classes):
    model = get_model(name, input_shape=(size, size, 3), num_classes=classes, **kwargs)
    trainable = ks.count_params(model)
    # All weights, BN moving statistics included, but not BiasLossModel's
    # running-minimum scalar (a training state, not a model parameter).
    total = count(w for w in model.weights if "bias_loss_variance_min" not in w.path)
    return trainable, total, ks.count_flops(model)


def deviation(value, target):
    return "" if target is None else f" ({value / target - 1:+.1%})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    compare = args.size == 224 and args.classes == 1000

    print(f"Input {args.size}x{args.size}x3, {args.classes} classes. MACs: `keras_skipblock.count_flops`.")
    print()
    header = "| model | trainable params | all params | MACs (M) |"
    rule = "|---|---:|---:|---:|"
    if compare:
        header += " Table 1 params / FLOPs |"
        rule += "---:|"
    print(header)
    print(rule)
    for label, name, kwargs, target_macs, target_params in ROWS:
        trainable, total, macs = measure(name, kwargs, args.size, args.classes)
        row = (
            f"| {label} | {trainable:,}{deviation(trainable, target_params) if compare else ''} "
            f"| {total:,} | {macs / 1e6:.1f}{deviation(macs, target_macs) if compare else ''} |"
        )
        if compare:
            row += "" if target_params is None else f" {target_params / 1e6:.1f} M / {target_macs / 1e6:.0f} M |"
            if target_params is None:
                row += " – |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
