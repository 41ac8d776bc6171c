"""How far a quantization-aware model's int8 `.tflite` is from the Keras QAT model, on
Fashion-MNIST test images: top-1 agreement and |Δlogit| in output steps (docs/quantization.md,
"Exact conversion"); with --layers, the same per int8 tensor (`litert.layer_diff`).

    python tools/qat_deploy_gap.py --checkpoint runs/fm/best_qat.keras --num_images 10000
    python tools/qat_deploy_gap.py --checkpoint runs/fm/best_qat.keras --num_images 100 --layers
"""

import argparse
import json
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True, help="a QAT .keras (best_qat.keras)")
    parser.add_argument("--num_images", type=int, default=1000, help="test images (0: all 10,000)")
    parser.add_argument("--layers", action="store_true", help="also compare every int8 tensor")
    args = parser.parse_args()

    import keras_skipblock.quantization  # noqa: F401  registers the QAT layers
    from keras_skipblock import litert
    from keras_skipblock.litert.data import load_images
    from keras_skipblock.litert.layer_diff import format_rows, layer_diff

    start = time.time()
    qat = litert.load_keras_model(checkpoint=args.checkpoint)
    h, _, c = litert.input_shape_of(qat)
    images, labels = load_images("fashion_mnist", "test", h, channels=c, limit=args.num_images or None)
    flatbuffer = litert.convert(qat, quantize="int8", io_type="int8")
    if args.layers:
        print(format_rows(layer_diff(qat, flatbuffer, images)))
    runner = litert.LiteRTModel(flatbuffer)
    keras_logits, lite_logits = litert.keras_logits(qat, images), runner.predict(images)
    steps = np.abs(lite_logits - keras_logits) / runner.output["quantization"][0]
    check = litert.compare(keras_logits, lite_logits, "int8", output_step=runner.output["quantization"][0])
    print(json.dumps({
        "images": len(images), "agreement": check.top1_agreement, "p99_steps": check.p99_steps,
        "max_steps": check.max_steps, "beyond_2_steps": float(np.mean(steps > 2.001)),
        "equal_logits": float(np.mean(steps < 0.5)), "passes_qat_bound": check.passed,
        "top1_keras": float(np.mean(keras_logits.argmax(1) == labels)),
        "top1_tflite": float(np.mean(lite_logits.argmax(1) == labels)), "seconds": round(time.time() - start)}))


if __name__ == "__main__":
    main()
