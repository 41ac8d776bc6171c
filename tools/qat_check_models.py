"""Check quantize_model on the real networks: SkipblockNet XS/S/M/L and keras.applications
MobileNetV2 / MobileNetV3-Small / -Large (via with_features), plus optionally detectors.

For each: quantize, set the ranges on real Fashion-MNIST images (calibrate_ranges), run it,
and with --convert convert it to int8 with no calibration set and report the ops, the
XNNPACK partitions, any float tensor, and how far the .tflite logits are from the Keras
QAT model's (in output quantization steps; untrained networks, so only a sanity check).

    python tools/qat_check_models.py --convert skipblocknet_xs mobilenet_v3_small
"""

import argparse
import time

import numpy as np


def build(name, size):
    import keras

    import keras_skipblock as ks

    if name.startswith("skipblocknet_"):
        return ks.models.get_model(name, input_shape=(size, size, 3), num_classes=10)
    if name == "mobilenet_v2":
        return ks.with_features(keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35,
                                                               weights=None, classes=10))
    if name == "mobilenet_v3_small":
        return ks.with_features(keras.applications.MobileNetV3Small(input_shape=(size, size, 3), weights=None,
                                                                    classes=10, include_preprocessing=False))
    if name == "mobilenet_v3_large":
        return ks.with_features(keras.applications.MobileNetV3Large(input_shape=(size, size, 3), weights=None,
                                                                    classes=10, include_preprocessing=False))
    if name.startswith("ssd"):
        return ks.detection.build_detector(backbone="skipblocknet_xs", num_classes=3, input_shape=(size, size, 3),
                                           head=name.split("_")[0])
    raise SystemExit(f"unknown model {name}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=["skipblocknet_xs", "skipblocknet_s", "skipblocknet_m",
                                                      "skipblocknet_l", "mobilenet_v2", "mobilenet_v3_small",
                                                      "mobilenet_v3_large"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--convert", action="store_true")
    args = parser.parse_args()

    import tensorflow as tf

    import keras_skipblock.quantization as qat
    from keras_skipblock import litert
    from keras_skipblock.data.fashion_mnist import load_fashion_mnist

    (train, _), (test, _) = load_fashion_mnist()

    def images(x, n):
        x = tf.image.resize(x[:n, ..., None].astype("float32"), (args.size, args.size)).numpy()
        return np.repeat(x / 127.5 - 1.0, 3, axis=-1).astype("float32")

    calibration, check = images(train, 64), images(test, 50)
    for name in args.models:
        start = time.time()
        model = build(name, args.size)
        litert.recalibrate_batchnorm(model, calibration)  # untrained: activations of a trained size
        try:
            quantized = qat.quantize_model(model)
        except qat.QuantizationError as error:
            print(f"{name}: {error}")
            continue
        qat.calibrate_ranges(quantized, calibration, batch_size=32)
        line = (f"{name}: {type(quantized).__name__}, {len(qat.transform.quant_layers(quantized))} QAT layers, "
                f"built and calibrated in {time.time() - start:.0f} s")
        if args.convert:
            flatbuffer = litert.convert(quantized, quantize="int8", io_type="int8")
            summary = litert.op_summary(flatbuffer)
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_content=flatbuffer)
            interpreter.allocate_tensors()
            floats = [d["name"] for d in interpreter.get_tensor_details() if d["dtype"] == np.float32]
            runner = litert.LiteRTModel(flatbuffer)
            steps = np.abs(runner.predict(check) - litert.keras_logits(quantized, check)) / runner.output[
                "quantization"][0]
            line += (f"; int8 .tflite {len(flatbuffer) / 1e6:.2f} MB, ops {dict(summary['ops'])}, "
                     f"XNNPACK partitions {summary['partitions']}, outside {dict(summary['outside_xnnpack']) or 'none'}, "
                     f"float tensors {len(floats)}, |logit diff| max {steps.max():.1f} / median "
                     f"{np.median(steps):.1f} steps")
        print(line, flush=True)


if __name__ == "__main__":
    main()
