"""Fashion-MNIST with SkipblockNet and Bias Loss: the offline default run.

    bash recipes/get_fashion_mnist.sh && python recipes/fashion_mnist.py

Defaults are chosen for a 2-core CPU (about 15 minutes): SkipblockNet at
32x32 grey input, BN momentum 0.9 (short runs need moving statistics that
keep up), SGD with momentum 0.9 at 0.05, a 1-epoch warm-up and a cosine
decay, weight EMA with the reference's warm-up. (The paper's RMSprop at its
batch-scaled rate, 0.008 at batch 128, diverged in the second epoch with so
short a warm-up; `--optimizer=rmsprop --lr_schedule=paper` runs it.) 5,000 training
images are held out to pick the best (EMA) checkpoint; the test set is only
used for the final summary.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

DEFAULTS = dict(
    dataset="fashion_mnist",
    model="skipblocknet_m",
    width=0.5,
    image_size=32,
    channels=1,
    bn_momentum=0.9,
    dropout=0.1,
    loss="bias",
    epochs=12,
    batch_size=128,
    learning_rate=0.05,
    lr_schedule="cosine",
    warmup_epochs=1.0,
    optimizer="sgd",
    momentum=0.9,
    weight_decay=4e-5,
    ema_decay=0.999,
)

def main(argv=None):
    common.define_flags(**DEFAULTS)
    common.run("fashion_mnist", argv=argv)


if __name__ == "__main__":
    main()
