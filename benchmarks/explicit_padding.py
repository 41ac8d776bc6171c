"""Does XNNPACK fold an explicit zero PAD into the stride-2 convolution after it?

SkipblockNet pads stride-2 layers like PyTorch (ZeroPadding2D + "valid") so the
authors' weights compute their function; Keras "same" pads inside the conv.
Two stacks of stride-2 convs and depthwise convs, identical but for the
padding, are converted to float32 LiteRT and timed interleaved with
`litert-benchmark` (1 thread, batch 1). If XNNPACK fuses PAD into the
convolution the ratio is ~1.00; an unfused PAD copies each layer's input
(~+10-20% on this memory-bound stack). Also prints each model's PAD count.

    python benchmarks/explicit_padding.py --rounds 8
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("image_size", 224, "Input side.")
flags.DEFINE_integer("rounds", 8, "Interleaved rounds.")
flags.DEFINE_integer("num_runs", 100, "Timed runs per model per round.")
FLAGS = flags.FLAGS


def stride2_stack(size, explicit_pad):
    import keras
    from keras import layers

    def pad(x, kernel):
        if explicit_pad:
            return layers.ZeroPadding2D((kernel - 1) // 2)(x), "valid"
        return x, "same"

    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters, kernel in ((32, 3), (64, 5), (128, 3), (256, 5)):
        x, padding = pad(x, 3)
        x = layers.Conv2D(filters, 3, strides=2, padding=padding, activation="relu")(x)
        x, padding = pad(x, kernel)
        x = layers.DepthwiseConv2D(kernel, strides=1 if filters < 64 else 2, padding=padding)(x)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x))


def main(argv):
    del argv
    from keras_skipblock.litert import benchmark as bench
    from keras_skipblock.litert.conversion import convert
    from keras_skipblock.litert.runtime import write_tflite

    folder = tempfile.mkdtemp(prefix="explicit_padding_")
    paths = {}
    for name, explicit in (("same_padding", False), ("explicit_pad", True)):
        model = stride2_stack(FLAGS.image_size, explicit)
        path = os.path.join(folder, f"{name}.tflite")
        summary, line = write_tflite(path, convert(model, "none", input_shape=model.input_shape[1:]))
        print(f"{line}; PAD ops in the graph: {summary['ops'].get('PAD', 0)}")
        paths[path] = path
    raw = bench.interleaved(paths, FLAGS.rounds, FLAGS.num_runs, 10, 1)
    print(bench.files_table(raw))


if __name__ == "__main__":
    app.run(main)
