"""Write the paper's Figures 2 and 3 as PNGs (computed with the library's BiasLoss).

    python experiments/figures.py --out docs
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs", help="folder for the PNGs")
    parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args(argv)

    from keras_skipblock.analysis import plot_bias_function, plot_loss_vs_probability

    os.makedirs(args.out, exist_ok=True)
    for path in (
        plot_bias_function(os.path.join(args.out, "figure2_bias_function.png"), dpi=args.dpi),
        plot_loss_vs_probability(os.path.join(args.out, "figure3_loss_vs_probability.png"),
                                 dpi=args.dpi),
    ):
        print(path)


if __name__ == "__main__":
    main()
