"""fp32 / PTQ int8 / QAT int8 top-1 on the Fashion-MNIST test split (10,000 images).

Takes a recipe run's best.keras (recipes/fashion_mnist.py), then:
  fp32      the Keras model;
  PTQ int8  litert.convert(quantize="int8") calibrated on 300 training images;
  QAT int8  quantization.fine_tune for --qat_epochs at --qat_lr on the training split
            (the last 5,000 images held out to pick the best epoch, as the recipe does),
            converted with no calibration set; plus the Keras QAT model itself and the
            agreement / logit distance between the two.

    python benchmarks/qat_fashion_mnist.py --checkpoint runs/fashion_mnist/best.keras --out_dir runs/qat
"""

import argparse
import json
import os
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out_dir", default="runs/qat")
    parser.add_argument("--qat_epochs", type=int, default=1)
    parser.add_argument("--qat_lr", type=float, default=1e-4)
    parser.add_argument("--steps_per_epoch", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()

    import keras

    import keras_skipblock as ks
    from keras_skipblock import litert, quantization
    from keras_skipblock.litert.data import load_images

    model = litert.load_keras_model(checkpoint=args.checkpoint)
    h, w, c = litert.input_shape_of(model)
    x_train, y_train = load_images("fashion_mnist", "train", h, channels=c)
    x_test, y_test = load_images("fashion_mnist", "test", h, channels=c)
    rows, start = {}, time.time()

    def top1(logits):
        return float(np.mean(np.argmax(logits, 1) == y_test))

    fp32 = litert.keras_logits(model, x_test)
    rows["fp32 (Keras)"] = top1(fp32)
    rng = np.random.default_rng(0)
    calibration = x_train[rng.choice(len(x_train), 300, replace=False)]
    ptq = litert.LiteRTModel(litert.convert(model, quantize="int8", representative_images=calibration))
    rows["PTQ int8 (.tflite)"] = top1(ptq.predict(x_test))
    print(rows, flush=True)

    os.makedirs(args.out_dir, exist_ok=True)
    summary = quantization.fine_tune(
        model, (x_train[:-5000], y_train[:-5000]), (x_train[-5000:], y_train[-5000:]), epochs=args.qat_epochs,
        learning_rate=args.qat_lr, model_dir=args.out_dir, batch_size=args.batch_size,
        loss=ks.BiasLoss(), steps_per_epoch=args.steps_per_epoch, verbose=2)
    qat = keras.saving.load_model(summary["path"], compile=False)
    qat_keras = litert.keras_logits(qat, x_test)
    flatbuffer = litert.convert(qat, quantize="int8", io_type="int8")
    ops = litert.op_summary(flatbuffer)
    runner = litert.LiteRTModel(flatbuffer)
    qat_tflite = runner.predict(x_test)
    steps = np.abs(qat_tflite - qat_keras) / runner.output["quantization"][0]
    rows["QAT (Keras, simulated int8)"] = top1(qat_keras)
    rows["QAT int8 (.tflite)"] = top1(qat_tflite)
    result = {
        "top1": rows,
        "qat_vs_keras": {"agreement": float(np.mean(qat_tflite.argmax(1) == qat_keras.argmax(1))),
                         "max_steps": float(steps.max()), "p99_steps": float(np.percentile(steps, 99)),
                         "fraction_over_2_steps": float(np.mean(steps > 2.001))},
        "ops": dict(ops["ops"]), "xnnpack_partitions": ops["partitions"],
        "outside_xnnpack": dict(ops["outside_xnnpack"]),
        "fine_tune": {k: v for k, v in summary.items() if k != "history"},
        "seconds": round(time.time() - start),
    }
    with open(os.path.join(args.out_dir, "qat_results.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
