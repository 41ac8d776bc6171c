"""Running a `.tflite` with the LiteRT interpreter (ai-edge-litert), and
listing which of its ops run outside XNNPACK, LiteRT's fast CPU engine.

One runner per task (`tasks.spec_for` picks it): `LiteRTModel` for a
classifier's logits, `LiteRTDetector` for a detector's post-processed boxes.
"""

import collections
import os

import numpy as np

from keras_skipblock import _compat
from keras_skipblock.litert.errors import LiteRTError

DETECTOR_OUTPUTS = ("boxes", "classes", "scores", "count")


def open_interpreter(model, num_threads=1):
    """A LiteRT Interpreter, tensors allocated, for a `.tflite` path or flatbuffer bytes.
    Raises LiteRTError for a missing file or one LiteRT cannot load."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        kwargs = {"model_content": bytes(model)}
    else:
        if not os.path.isfile(model):
            raise LiteRTError(f".tflite file not found: {os.path.abspath(model)}")
        kwargs = {"model_path": str(model)}
    try:
        interpreter = Interpreter(num_threads=num_threads, **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise LiteRTError(f"LiteRT cannot load the model: {error}") from None
    return interpreter


def _path_of(model):
    return None if isinstance(model, (bytes, bytearray)) else str(model)


class LiteRTModel:
    """A classifier `.tflite` file or flatbuffer bytes with one image input, run one
    image at a time (the signature is batch 1). Quantized inputs/outputs are
    (de)quantized here, so callers always pass float images and get float
    logits."""

    def __init__(self, model, num_threads=1):
        self.interpreter = open_interpreter(model, num_threads)
        self.path = _path_of(model)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise LiteRTError(
                f"Expected one input and one output (logits); got {len(inputs)} and {len(outputs)}. "
                "A detector .tflite runs with LiteRTDetector (litert.spec_for(model).runtime)."
            )
        self.input, self.output = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self.input["shape"][1:])

    def _quantize(self, x):
        if self.input["dtype"] == np.float32:
            return x.astype("float32")
        scale, zero = self.input["quantization"]
        info = np.iinfo(self.input["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input["dtype"])

    def _dequantize(self, y):
        if self.output["dtype"] == np.float32:
            return y.astype("float32")
        scale, zero = self.output["quantization"]
        return ((y.astype("float32") - zero) * scale).astype("float32")

    def predict(self, images):
        """Logits (n, classes) for float32 images (n, H, W, C) in [-1, 1]."""
        images = np.asarray(images, dtype="float32")
        if images.shape[1:] != self.input_shape:
            raise LiteRTError(f"Images have shape {images.shape[1:]}; the model takes {self.input_shape}.")
        out = []
        for image in images:
            self.interpreter.set_tensor(self.input["index"], self._quantize(image[None]))
            self.interpreter.invoke()
            out.append(self._dequantize(self.interpreter.get_tensor(self.output["index"]))[0])
        return np.stack(out)


class LiteRTDetector:
    """A detector `.tflite` (path or bytes), run one image at a time."""

    def __init__(self, model, num_threads=1):
        self.interpreter = open_interpreter(model, num_threads)
        self.path = _path_of(model)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        missing = set(DETECTOR_OUTPUTS) - set(self.runner.get_output_details())
        if missing:
            raise LiteRTError(f"Not a detector .tflite: outputs {sorted(missing)} are missing.")
        self.input_name = next(iter(self.runner.get_input_details()))
        self.input_shape = tuple(int(d) for d in self.runner.get_input_details()[self.input_name]["shape"][1:])

    def detect(self, images):
        """Per image (boxes (K, 4), scores (K,), classes (K,) int32), like `detection.detect`."""
        out = []
        for image in np.asarray(images, "float32"):
            if image.shape != self.input_shape:
                raise LiteRTError(f"Image shape {image.shape}; the detector takes {self.input_shape}.")
            result = self.runner(**{self.input_name: image[None]})
            count = int(round(float(result["count"][0])))
            out.append((result["boxes"][0][:count], result["scores"][0][:count],
                        result["classes"][0][:count].astype("int32")))
        return out


def op_summary(model):
    """What runs where in a `.tflite` (path or bytes), with the default XNNPACK
    delegate applied as LiteRT applies it on CPU.

    Returns a dict: "ops" (Counter of op names in the model), "partitions"
    (number of XNNPACK partitions; 1 means the whole graph runs in XNNPACK),
    "outside_xnnpack" (Counter of ops LiteRT runs with its own kernels).
    """
    interpreter = open_interpreter(model)
    details = _compat.interpreter_ops_details(interpreter)
    delegates = [op for op in details if op["op_name"] == "DELEGATE"]
    originals = [op for op in details if op["op_name"] != "DELEGATE"]
    if not delegates:  # nothing delegated: everything runs on LiteRT kernels
        outside = collections.Counter(op["op_name"] for op in originals)
    else:
        produced = {t for op in delegates for t in op["outputs"]}
        consumed = {t for op in delegates for t in op["inputs"]}
        model_outputs = {d["index"] for d in interpreter.get_output_details()}
        # An op runs outside XNNPACK when what it writes is read by a partition,
        # by an op outside XNNPACK, or is a model output, and no partition writes it.
        visible = consumed | model_outputs
        outside_ops = {}
        changed = True
        while changed:
            changed = False
            for op in originals:
                if op["index"] in outside_ops:
                    continue
                if any(t in visible and t not in produced for t in op["outputs"]):
                    outside_ops[op["index"]] = op
                    visible |= set(op["inputs"])
                    changed = True
        outside = collections.Counter(op["op_name"] for op in outside_ops.values())
    return {
        "ops": collections.Counter(op["op_name"] for op in originals),
        "partitions": len(delegates),
        "outside_xnnpack": outside,
    }


def write_tflite(path, flatbuffer):
    """Write a `.tflite` and describe it: returns (op_summary dict, one-line
    description with size, XNNPACK partitions and ops outside XNNPACK)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    summary = op_summary(flatbuffer)  # before writing: a failure here leaves no file
    partial = f"{path}.partial"  # written whole, then renamed: never a half-written .tflite
    try:
        with open(partial, "wb") as f:
            f.write(flatbuffer)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    outside = dict(summary["outside_xnnpack"])
    line = (f"{path}: {len(flatbuffer) / 1e6:.2f} MB, XNNPACK partitions {summary['partitions']}, "
            f"ops outside XNNPACK: {outside or 'none'}")
    return summary, line
