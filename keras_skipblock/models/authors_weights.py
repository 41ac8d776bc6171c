"""The authors' PyTorch checkpoint (`skipblocknet-m.pth`) in our SkipblockNet-M.

Every Keras layer of SkipblockNet-M has one PyTorch module in the authors'
state_dict (SPEC §8). The map is derived from our layer names, so it covers
`skip_blocks=False` too, and each tensor is transposed to Keras' layout:

    conv (out, in, kh, kw)       -> Conv2D kernel (kh, kw, in, out)
    depthwise (C, 1, kh, kw)     -> DepthwiseConv2D kernel (kh, kw, C, 1)
    SE Linear (out, in) + bias   -> 1x1 Conv2D kernel (1, 1, in, out) + bias
    Linear (out, in) + bias      -> Dense kernel (in, out) + bias
    BN weight, bias, running_mean, running_var -> gamma, beta, moving mean, variance
"""

import re

import numpy as np

from keras_skipblock.models.torch_state_dict import CheckpointError, read_state_dict

# The authors' input normalisation (torchvision's ImageNet statistics).
AUTHORS_MEAN = (0.485, 0.456, 0.406)
AUTHORS_STD = (0.229, 0.224, 0.225)

# Position of each layer inside the authors' nn.Sequential blocks.
_BLOCK_INDEX = {
    "expand": "0", "expand_bn": "1", "depthwise": "3", "depthwise_bn": "4",
    "se_reduce": "6.fc.0", "se_expand": "6.fc.2", "project": "7", "project_bn": "8",
}
_SKIP_INDEX = {
    "expand": "0", "expand_bn": "1", "depthwise": "3", "depthwise_bn": "4", "project": "6", "project_bn": "7",
}
_FIXED = {"stem": "first_layer.0", "stem_bn": "first_layer.1", "head_conv": "conv.0",
          "head_conv_bn": "conv.1", "head_dense": "classifier.0", "logits": "classifier.3"}
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_CLASSIFIER = "classifier."


def is_authors_checkpoint(path):
    """True for a PyTorch file (what `weights=` and `--init_checkpoint` read as the authors')."""
    return isinstance(path, str) and path.endswith((".pth", ".pt"))


def torch_module_name(layer_name):
    """The authors' module path of one of our layers ("stage2_block3_expand"
    -> "blocks.1.2.conv.0"), or None for layers without weights there."""
    if layer_name in _FIXED:
        return _FIXED[layer_name]
    match = re.fullmatch(r"base_block_(\w+)", layer_name)
    if match and match.group(1) in _BLOCK_INDEX:
        return f"base_block.conv.{_BLOCK_INDEX[match.group(1)]}"
    match = re.fullmatch(r"stage(\d+)_block(\d+)_(\w+)", layer_name)
    if match and match.group(3) in _BLOCK_INDEX:
        stage, block, part = int(match.group(1)) - 1, int(match.group(2)) - 1, match.group(3)
        return f"blocks.{stage}.{block}.conv.{_BLOCK_INDEX[part]}"
    match = re.fullmatch(r"skip(\d+)_(\w+)", layer_name)
    if match and match.group(2) in _SKIP_INDEX:
        return f"skip{match.group(1)}.core_block.{_SKIP_INDEX[match.group(2)]}"
    return None


def _torch_tensors(layer):
    """(torch tensor names, to_keras) for a layer's weights, in `layer.weights` order."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return _BN_TENSORS, lambda t: t
    if kind == "DepthwiseConv2D":
        return ("weight",), lambda t: np.transpose(t, (2, 3, 0, 1))
    if kind == "Conv2D":
        if layer.use_bias:  # SE: a Linear in PyTorch, a 1x1 conv here
            return ("weight", "bias"), lambda t: t.T[None, None] if t.ndim == 2 else t
        return ("weight",), lambda t: np.transpose(t, (2, 3, 1, 0))
    if kind == "Dense":
        return ("weight", "bias"), lambda t: t.T if t.ndim == 2 else t
    raise CheckpointError(f"no PyTorch counterpart known for layer {layer.name!r} ({kind}).")


def authors_tensor_map(model):
    """{torch key: (layer, weight index, to_keras)} for every weight of `model`
    that the authors' state_dict holds."""
    mapping = {}
    for layer in model.layers:
        module = torch_module_name(layer.name)
        if module is None or not layer.weights:
            continue
        names, to_keras = _torch_tensors(layer)
        for index, name in enumerate(names):
            mapping[f"{module}.{name}"] = (layer, index, to_keras)
    unmapped = [layer.name for layer in model.layers
                if layer.weights and torch_module_name(layer.name) is None]
    if unmapped:
        raise CheckpointError(f"layers with no place in the authors' checkpoint: {unmapped}.")
    return mapping


def load_authors_weights(model, path, strict=True):
    """Load the authors' state_dict (a `.pth` file or an already-read dict) into `model`.

    strict=True: every tensor of the file must have a place in the model with
    the same shape and vice versa, or nothing is loaded and one
    `CheckpointError` lists what disagrees (key, both shapes).
    strict=False (fine-tuning): tensors whose shapes differ (a classifier
    for other classes, a one-channel stem) are left at their initial values.
    A model without its classifier (`include_top=False`) loads the rest.
    Returns the names of the layers left untouched.
    """
    state = read_state_dict(path) if isinstance(path, str) else dict(path)
    mapping = authors_tensor_map(model)
    headless = not any(key.startswith(_CLASSIFIER) for key in mapping)
    state = {k: v for k, v in state.items()
             if not k.endswith(_IGNORED_SUFFIXES) and not (headless and k.startswith(_CLASSIFIER))}
    values, problems, kept = {}, [], set()
    for key, (layer, index, to_keras) in mapping.items():
        target = tuple(layer.weights[index].shape)
        if key not in state:
            problems.append(f"missing in the checkpoint: {key} (model {layer.name} expects {target})")
            kept.add(layer.name)
            continue
        value = to_keras(np.asarray(state[key], np.float32))
        if value.shape != target:
            problems.append(f"shape mismatch: {key} is {tuple(state[key].shape)} in the checkpoint "
                            f"({value.shape} in Keras layout), model {layer.name} expects {target}")
            kept.add(layer.name)
            continue
        values.setdefault(layer.name, (layer, {}))[1][index] = value
    unexpected = sorted(set(state) - set(mapping))
    problems += [f"unexpected in the checkpoint: {key} {tuple(state[key].shape)}" for key in unexpected]
    if strict and problems:
        raise CheckpointError(
            "the checkpoint does not fit this model; nothing was loaded:\n  " + "\n  ".join(problems))
    for name, (layer, by_index) in values.items():
        if name in kept:  # a layer is loaded whole or not at all
            continue
        weights = layer.get_weights()
        if len(by_index) != len(weights):
            kept.add(name)
            continue
        layer.set_weights([by_index[i] for i in range(len(weights))])
    return sorted(kept)
