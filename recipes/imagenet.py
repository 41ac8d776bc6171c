"""ImageNet (ILSVRC 2012) with the paper's set-up (SPEC §4, after EfficientNet).

    python recipes/imagenet.py --model=skipblocknet_m --loss=bias \
        --data_dir=~/tensorflow_datasets --manual_dir=~/imagenet_tars --model_dir=runs/sbm_bias

RMSprop (rho 0.9, momentum 0.9, epsilon 1e-3), peak learning rate 0.032 at a
global batch of 512 scaled linearly with --batch_size, warm-up 3 epochs from
1e-6, x0.97 every 2.4 epochs, weight decay 1e-5 (L2 in the loss), EMA 0.9999,
BN momentum 0.99, Inception crops at 224, centre-crop evaluation.
--dataset=folder --data_dir=<folder of class sub-folders> trains on your own images.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

DEFAULTS = dict(
    dataset="imagenet2012",
    model="skipblocknet_m",
    image_size=224,
    loss="bias",
    epochs=350,
    batch_size=512,
    lr_schedule="paper",
    warmup_epochs=3.0,
    optimizer="rmsprop",
    momentum=0.9,
    weight_decay=1e-5,
    ema_decay=0.9999,
    bn_momentum=0.99,
)

def main(argv=None):
    common.define_flags(**DEFAULTS)
    common.run("imagenet", argv=argv)


if __name__ == "__main__":
    main()
