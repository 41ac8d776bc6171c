"""Where a quantization-aware Keras model and its int8 `.tflite` part ways: every int8
tensor of the `.tflite`, as XNNPACK computes it, next to the Keras QAT layer that writes
it, in units of that tensor's quantization step.

The `.tflite` is rewritten so that every op's output is also a model output: the
interpreter then runs as deployed (XNNPACK; `experimental_preserve_all_tensors` would
switch to LiteRT's builtin kernels, whose fixed-point requantization rounds differently)
and hands back each intermediate tensor. A tensor is matched to a Keras layer by the
layer name the converter writes into its name (`<model>/<layer>_1/...`; an op followed by
an `ActivationQuantizer` `<layer>_quant` is matched to that quantizer).

    rows = layer_diff(qat_model, flatbuffer, images)   # in the `.tflite`'s op order
    print(format_rows(rows))
"""

import re

import numpy as np


def with_all_outputs(flatbuffer):
    """`flatbuffer` with every op output of its main graph added to the graph's outputs."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytes(flatbuffer), 0))
    graph = model.subgraphs[0]
    produced = [int(i) for op in graph.operators for i in op.outputs]
    graph.outputs = list(dict.fromkeys([int(i) for i in graph.outputs] + produced))
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _layer_of(tensor_name):
    """The Keras layer name in a converted tensor's name (`model/layer_1/op;...` -> `layer`)."""
    parts = tensor_name.split(";")[0].split("/")
    if len(parts) < 3:
        return None
    return re.sub(r"_\d+$", "", parts[1])


def tflite_tensors(flatbuffer, images):
    """{tensor name: (int values (n, ...), scale, zero point)} of every int8 op output of
    the `.tflite` run by the default interpreter (XNNPACK) on float `images`, in op order."""
    from keras_skipblock.litert.runtime import open_interpreter

    interpreter = open_interpreter(with_all_outputs(flatbuffer))
    (image_input,) = interpreter.get_input_details()
    outputs = [d for d in interpreter.get_output_details() if d["dtype"] == np.int8]
    collected = {d["name"]: [] for d in outputs}
    scale, zero = image_input["quantization"]
    for image in np.asarray(images, "float32"):
        q = np.clip(np.round(image[None] / scale + zero), -128, 127).astype(image_input["dtype"])
        interpreter.set_tensor(image_input["index"], q)
        interpreter.invoke()
        for d in outputs:
            collected[d["name"]].append(interpreter.get_tensor(d["index"])[0].astype("int32"))
    return {d["name"]: (np.stack(collected[d["name"]]), float(d["quantization"][0]), int(d["quantization"][1]))
            for d in outputs}


def layer_diff(qat_model, flatbuffer, images, batch_size=64):
    """One row per matched int8 tensor, in the `.tflite`'s op order: {tensor, layer, size,
    differ (fraction of values one level or more apart), max_levels}."""
    import keras

    from keras_skipblock.quantization.transform import quant_layers

    layers = {layer.name: layer for layer in quant_layers(qat_model)}
    lite = tflite_tensors(flatbuffer, images)
    # The last tensor of each layer (a QuantHardActivation writes three) is the layer's output.
    chosen = {}
    for name in lite:
        layer = _layer_of(name)
        if layer in layers:
            chosen[layer] = name
        elif layer is not None and f"{layer}_quant" in layers:
            chosen[f"{layer}_quant"] = name
    names = [name for name in lite if name in chosen.values()]
    by_tensor = {tensor: layer for layer, tensor in chosen.items()}
    inputs = qat_model.inputs[0] if len(qat_model.inputs) == 1 else qat_model.inputs
    probe = keras.Model(inputs, [layers[by_tensor[t]].output for t in names])
    keras_values = [[] for _ in names]
    images = np.asarray(images, "float32")
    for start in range(0, len(images), batch_size):
        outs = probe(images[start:start + batch_size], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for store, out in zip(keras_values, outs):
            store.append(np.asarray(out))
    rows = []
    for tensor, values in zip(names, keras_values):
        q, scale, zero = lite[tensor]
        keras_levels = np.concatenate(values) / scale
        if keras_levels.shape != q.shape:
            continue
        levels = np.abs(keras_levels - (q - zero))
        rows.append({"tensor": tensor, "layer": by_tensor[tensor], "size": int(q[0].size),
                     "differ": float(np.mean(levels >= 0.5)), "max_levels": float(np.round(levels.max()))})
    return rows


def format_rows(rows):
    lines = [f"{'layer':<44} {'values':>7} {'differ':>8} {'max':>4}"]
    for row in rows:
        lines.append(f"{row['layer']:<44} {row['size']:>7} {100 * row['differ']:7.3f}% {row['max_levels']:>4.0f}")
    return "\n".join(lines)
