"""Food-101 transfer: fine-tune an ImageNet-trained model (SPEC §4, after Kornblith et al. 2019).

    python recipes/food101.py --init_checkpoint=runs/sbm_bias/best.keras --loss=bias
    python recipes/food101.py --init_checkpoint=skipblocknet-m.pth   # the authors' ImageNet weights

Every layer whose name and shapes match is copied from --init_checkpoint (a
.keras model saved by recipes/imagenet.py, or the authors' .pth: then the
model takes the pipeline's [-1, 1] images and rescales them inside to the
authors' ImageNet normalisation); the 101-way classifier starts fresh. SGD with momentum 0.9, cosine decay after a 1-epoch warm-up, Inception
crops at 224. Kornblith et al. grid-searched the rate and weight decay; the
defaults here are a reasonable starting point, not their tuned values.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

DEFAULTS = dict(
    dataset="food101",
    model="skipblocknet_m",
    image_size=224,
    loss="bias",
    epochs=60,
    batch_size=256,
    learning_rate=0.01,
    lr_schedule="cosine",
    warmup_epochs=1.0,
    optimizer="sgd",
    momentum=0.9,
    weight_decay=1e-5,
    ema_decay=0.0,
    bn_momentum=0.99,
)


def check(config):
    if not config.init_checkpoint:
        print("WARNING: no --init_checkpoint: training Food-101 from scratch, not fine-tuning.")


def main(argv=None):
    common.define_flags(**DEFAULTS)
    common.run("food101", check, argv)


if __name__ == "__main__":
    main()
