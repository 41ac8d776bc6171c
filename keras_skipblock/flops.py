"""Model cost as mobile-network papers report it: multiply-accumulates
("FLOPs", `count_flops`) and trainable parameters (`count_params`)."""

import math

import keras

from keras_skipblock import _compat


def _size(shape):
    return math.prod(int(d) for d in shape if d is not None)


def count_params(model):
    """Trainable parameters of `model`: the count papers' tables give (SkipblockNet-M
    5,532,352; keras' MobileNetV3-Large 5,483,032). `model.count_params()` also counts
    BatchNorm's moving statistics and other state, which no optimizer updates."""
    return int(sum(_size(w.shape) for w in model.trainable_weights))


def _layer_macs(layer, input_shape, output_shape):
    """Multiply-accumulates of one call of `layer` on one sample, or 0."""
    from keras_skipblock.quantization.layers import QuantConv

    if isinstance(layer, QuantConv):  # a quantization-aware model's conv: what the conv it stands for costs
        kernel = math.prod(layer.kernel_size) if layer.kind != "dense" else 1
        return _size(output_shape[1:]) * kernel * (1 if layer.kind == "depthwise" else input_shape[-1])
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _size(output_shape[1:]) * kh * kw
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        in_channels = input_shape[-1]
        depthwise = _size(output_shape[1:-1]) * in_channels * layer.depth_multiplier * kh * kw
        pointwise = _size(output_shape[1:]) * in_channels * layer.depth_multiplier
        return depthwise + pointwise
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) and not isinstance(
        layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    ):
        in_per_group = input_shape[-1] // layer.groups
        return _size(output_shape[1:]) * math.prod(layer.kernel_size) * in_per_group
    if isinstance(layer, keras.layers.Dense):
        return _size(output_shape[1:]) * input_shape[-1]
    return 0


def layer_macs(model):
    """{layer name: multiply-accumulates per sample} for every layer that
    `count_flops` counts (nested models are expanded as "outer/inner")."""
    counts = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            for name, macs in layer_macs(layer).items():
                counts[f"{layer.name}/{name}"] = counts.get(f"{layer.name}/{name}", 0) + macs
            continue
        total = 0
        for node in _compat.inbound_nodes(layer):
            inputs, outputs = node.input_tensors, node.output_tensors
            if not inputs or not outputs:
                continue
            total += _layer_macs(layer, tuple(inputs[0].shape), tuple(outputs[0].shape))
        if total:
            counts[layer.name] = total
    return counts


def count_flops(model):
    """Multiply-accumulates (MACs) of one forward pass of one sample.

    Counts, at the model's own (static) input size: convolutions (Conv1D/2D/3D,
    grouped included), depthwise and separable convolutions, and dense layers,
    one MAC per weight use; squeeze-and-excite convolutions are counted (they
    are ordinary layers), on their 1x1 pooled inputs. Not counted: biases,
    batch normalisation, activations, pooling, additions, multiplications
    and the skip blocks' pooling products. This is the convention of the
    MobileNet papers' "MAdds"/"FLOPs": keras.applications.MobileNetV3Large
    at 224x224 gives 217 M against the 219 M of the MobileNetV3 paper.

    Args:
        model: a built Keras model with static spatial input size (build it
            with `input_shape=(h, w, c)`, not None).

    Returns:
        int: multiply-accumulates per sample.
    """
    for tensor in model.inputs:
        if any(d is None for d in tensor.shape[1:]):
            raise ValueError(
                f"count_flops needs a static input size; {model.name} has input shape {tensor.shape}."
            )
    return int(sum(layer_macs(model).values()))
