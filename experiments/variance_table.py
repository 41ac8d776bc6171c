"""Table 5 for saved models: average / max / min per-sample variance of the
5th, 20th and last conv layers over Fashion-MNIST test images.

    python experiments/variance_table.py runs/a/best.keras runs/b/best.keras \
        --image-size 32 --images 2000
    python experiments/variance_table.py --build mobilenet_v3_small --image-size 32

Models are `.keras` files (any functional model, e.g. a driver's best.keras)
or, with --build, freshly initialised models from `get_model` (a quick check
of the layer choice, not a trained measurement). Conv layers are Conv2D and
DepthwiseConv2D in model order; maps are read after the conv's BN and
activation (--point conv: the raw conv output); see
`keras_skipblock.analysis.variance`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _layer_spec(text):
    try:
        return int(text)
    except ValueError:
        return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=".keras model files")
    parser.add_argument("--build", nargs="*", default=[], help="get_model names to build untrained")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--images", type=int, default=2000, help="test images to stream")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--layers", nargs="+", type=_layer_spec, default=None,
                        help="conv indices (1-based, negative from the end), 'last', or layer "
                             "names; default 5 20 last")
    parser.add_argument("--point", default="activation", choices=["activation", "conv"])
    parser.add_argument("--per-layer", action="store_true", help="also print each model's rows")
    args = parser.parse_args(argv)
    if not args.models and not args.build:
        parser.error("give .keras files and/or --build names")

    import keras

    from keras_skipblock.analysis import feature_variances, table5_markdown
    from keras_skipblock.data import get_datasets
    from keras_skipblock.models import get_model

    data = get_datasets("fashion_mnist", args.image_size, args.batch_size,
                        channels=args.channels, validation_size=0)
    steps = max(args.images // args.batch_size, 1)
    shape = (args.image_size, args.image_size, args.channels)
    models = [(path, lambda p=path: keras.saving.load_model(p, compile=False)) for path in args.models]
    models += [(f"{name} (untrained)", lambda n=name: get_model(n, shape, 10)) for name in args.build]
    tables = {}
    for label, load in models:
        table = feature_variances(load(), data.test, layers=args.layers, point=args.point,
                                  max_batches=steps)
        tables[label] = table
        if args.per_layer:
            print(f"\n{label}\n\n{table.to_markdown()}\n")
    print(table5_markdown(tables))


if __name__ == "__main__":
    main()
