"""Per-sample variance of a model's conv feature maps over a data set (Table 5).

The paper (§5.5, Table 5) reports, for the 5th conv layer, the 20th and the
last, the average / maximum / minimum over a data set of each sample's
feature-map variance. This module computes the same statistics for any Keras
functional model: the project's models (`get_model`, `BiasLossModel`) and
`keras.applications` models.

Which layers are "conv layers"
    `Conv2D` and `DepthwiseConv2D` layers (and their subclasses), counted
    1-based in the order of `model.layers` (the functional graph's
    topological order). Every such layer counts, wherever it sits: the stem,
    the inverted residuals' expand / depthwise / project convs, the 1x1 convs
    of a squeeze-and-excitation block when it is built from `Conv2D` (as in
    `keras.applications` MobileNetV3; their maps are 1x1xC), the skip
    blocks' convs and the head conv. "last" is the last conv before the
    model's last global pooling layer (the map Bias Loss reads; the 1x1 convs
    that keras.applications MobileNetV3 applies after pooling are its
    classifier), or the last conv when there is no global pooling layer.
    `conv_layers(model)` lists them. Other
    layer types can be counted with `layer_types=`. Layers inside a nested
    sub-model are not looked into: pass the sub-model itself.

Where the map is read (`point=`)
    "activation" (default): after the conv's BatchNormalization and
    activation, when they follow it directly (conv -> [BN] -> [activation],
    each the single consumer of the previous tensor). This is the tensor that
    Bias Loss reads for the last conv (SPEC §1: "after its BN and
    activation"), so the "last" row measures exactly the loss's feature.
    A conv with no activation after its BN (a linear-bottleneck projection)
    is read after its BN. Activation layers are `Activation`, `ReLU`,
    `LeakyReLU`, `PReLU`, `ELU`, `Softmax` and layers whose class name names
    an activation (".*(relu|swish|sigmoid|gelu|silu|elu|mish|tanh).*").
    "conv": the raw conv output, before BN.
    Layer names passed in `layers=` are read at that layer's output as is
    (whatever the layer), under either point.

Per-sample variance
    `keras_skipblock.losses.sample_variance`: the unbiased variance (n - 1)
    of the sample's flattened map, float32. These are raw variances, not the
    [0, 1]-scaled values that the loss weights by.

The data set is streamed batch by batch; only the per-tensor running sums,
extremes and counts are kept, never the maps.
"""

import dataclasses
import math
import re

import keras
import numpy as np

from keras_skipblock import _compat
from keras_skipblock.losses import sample_variance

DEFAULT_LAYERS = (5, 20, "last")
POINTS = ("activation", "conv")
CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)

_ACTIVATION_TYPES = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
)
_ACTIVATION_NAME = re.compile(r"relu|swish|sigmoid|gelu|silu|elu|mish|tanh", re.IGNORECASE)


@dataclasses.dataclass
class LayerVariance:
    """Statistics of per-sample variances at one tapped tensor.

    label: "5th", "20th", "last" or the layer name asked for.
    layer: the conv layer (or named layer) this row measures.
    read_at: the layer whose output was read (the conv, its BN or its
        activation, see `point`).
    conv_index: 1-based position among the model's conv layers (None for a
        named layer that is not one).
    shape: the map's shape without the batch axis.
    count: number of samples.
    mean, std, max, min: over the samples' variances (std is the population
        std of the variances; Table 5 reports mean, max and min).
    """

    label: str
    layer: str
    read_at: str
    conv_index: int | None
    shape: tuple
    count: int
    mean: float
    std: float
    max: float
    min: float


@dataclasses.dataclass
class VarianceTable:
    """The rows of one model's variance analysis, in the order asked for."""

    model: str
    point: str
    rows: list

    def __getitem__(self, label):
        for row in self.rows:
            if row.label == label or row.layer == label:
                return row
        raise KeyError(label)

    def to_dict(self):
        return {
            "model": self.model,
            "point": self.point,
            "rows": [dataclasses.asdict(r) | {"shape": list(r.shape)} for r in self.rows],
        }

    @classmethod
    def from_dict(cls, data):
        rows = [LayerVariance(**dict(r, shape=tuple(r["shape"]))) for r in data["rows"]]
        return cls(model=data["model"], point=data["point"], rows=rows)

    def to_markdown(self, digits=3):
        """One row per tapped layer: layer, map shape, samples, avg/max/min."""
        lines = [
            "| layer | read at | map | samples | avg | max | min |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            shape = "x".join(str(s) for s in r.shape)
            lines.append(
                f"| {r.label} ({r.layer}) | {r.read_at} | {shape} | {r.count} | "
                f"{_fmt(r.mean, digits)} | {_fmt(r.max, digits)} | {_fmt(r.min, digits)} |"
            )
        return "\n".join(lines)


def _fmt(x, digits):
    if x is None or not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 10 ** -(digits - 1) else f"{x:.{digits}f}"


def table5_markdown(tables, digits=3):
    """Several models' tables as one Table 5-style markdown table.

    Args:
        tables: {row name: VarianceTable}; every table must have the same
            row labels (e.g. all computed with the default layers).
    """
    tables = dict(tables)
    if not tables:
        raise ValueError("table5_markdown: no tables given.")
    labels = [r.label for r in next(iter(tables.values())).rows]
    head = "| model | " + " | ".join(f"{l} avg | {l} max | {l} min" for l in labels) + " |"
    rule = "|---|" + "---|" * (3 * len(labels))
    lines = [head, rule]
    for name, table in tables.items():
        cells = []
        for label in labels:
            r = table[label]
            cells += [_fmt(r.mean, digits), _fmt(r.max, digits), _fmt(r.min, digits)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- choosing the layers ------------------------------------------------------


def conv_layers(model, layer_types=CONV_TYPES):
    """The model's conv layers in model order (the 1-based indices used here)."""
    return [layer for layer in model.layers if isinstance(layer, tuple(layer_types))]


_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def _last_conv_index(model, convs):
    """1-based index of the last conv before the model's last global pooling.

    That conv's map is what Bias Loss reads (`with_features`' default). Convs
    after the pooling (keras.applications MobileNetV3's 1x1 "dense" convs
    and its logits conv) are classifier layers, not feature maps. With no
    global pooling layer, the last conv.
    """
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    pools = [order[id(l)] for l in model.layers if isinstance(l, _POOLING)]
    if pools:
        before = [i for i, c in enumerate(convs, 1) if order[id(c)] < pools[-1]]
        if before:
            return before[-1]
    return len(convs)


def _ordinal(n):
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _consumers(model):
    """{id(tensor): [node, ...]} for the nodes of `model`'s own graph."""
    consumers = {}
    for nodes in _compat.nodes_by_depth(model).values():
        for node in nodes:
            for tensor in node.input_tensors:
                consumers.setdefault(id(tensor), []).append(node)
    return consumers


def _is_activation(layer):
    return isinstance(layer, _ACTIVATION_TYPES) or bool(
        _ACTIVATION_NAME.search(type(layer).__name__)
    )


def _own_output(model, layer):
    """The output tensor of `layer`'s call inside `model`'s graph."""
    own = {id(node) for nodes in _compat.nodes_by_depth(model).values() for node in nodes}
    for node in _compat.inbound_nodes(layer):
        if id(node) in own:
            if len(node.output_tensors) != 1:
                raise ValueError(f"layer {layer.name!r} has {len(node.output_tensors)} outputs.")
            return node.output_tensors[0]
    raise ValueError(f"layer {layer.name!r} is not called in {model.name}'s graph.")


def _after_bn_activation(model, conv, consumers):
    """(tensor, layer) after the conv's BN and activation (see module doc)."""
    tensor, layer = _own_output(model, conv), conv
    steps = [
        lambda l: isinstance(l, keras.layers.BatchNormalization),
        _is_activation,
    ]
    for accept in steps:
        nodes = consumers.get(id(tensor), [])
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            break
        if not accept(nodes[0].operation):
            continue  # no BN: the activation may follow the conv directly
        layer = nodes[0].operation
        tensor = nodes[0].output_tensors[0]
    return tensor, layer


def resolve_layers(model, layers=None, point="activation", layer_types=CONV_TYPES):
    """The tensors to measure: [(label, layer, read_at_layer, conv_index, tensor)].

    Args:
        layers: None for (5th conv, 20th conv, last conv), dropping the
            indices the model does not reach; or a list of 1-based conv
            indices (negative counts from the end), "last", and layer names.
        point: "activation" or "conv" (see the module doc).
    """
    if point not in POINTS:
        raise ValueError(f"point must be one of {POINTS}; got {point!r}.")
    convs = conv_layers(model, layer_types)
    names = [type(t).__name__ for t in layer_types]
    if not convs and (layers is None or any(not isinstance(s, str) or s == "last" for s in layers)):
        raise ValueError(f"{model.name} has no {'/'.join(names)} layers to count.")
    if layers is None:
        layers = [s for s in DEFAULT_LAYERS if s == "last" or s <= len(convs)]
    consumers = _consumers(model)
    picked = []
    for spec in layers:
        if isinstance(spec, str) and spec != "last":
            try:
                layer = model.get_layer(spec)
            except ValueError:
                raise ValueError(
                    f"no layer named {spec!r} in {model.name}; see model.summary()."
                ) from None
            index = convs.index(layer) + 1 if layer in convs else None
            picked.append((spec, layer, layer, index, _own_output(model, layer)))
            continue
        if spec == "last":
            index, label = _last_conv_index(model, convs), "last"
        else:
            if isinstance(spec, bool) or not isinstance(spec, (int, np.integer)) or spec == 0:
                raise ValueError(f"layer spec must be a 1-based int, 'last' or a name; got {spec!r}.")
            index = int(spec) if spec > 0 else len(convs) + int(spec) + 1
            if not 1 <= index <= len(convs):
                raise ValueError(
                    f"{model.name} has {len(convs)} conv layers ({'/'.join(names)}); "
                    f"conv #{spec} does not exist."
                )
            label = _ordinal(index)
        conv = convs[index - 1]
        if point == "conv":
            tensor, read_at = _own_output(model, conv), conv
        else:
            tensor, read_at = _after_bn_activation(model, conv, consumers)
        picked.append((label, conv, read_at, index, tensor))
    return picked


# -- streaming statistics ------------------------------------------------------


class _Running:
    def __init__(self):
        self.count, self.total, self.squares = 0, 0.0, 0.0
        self.max, self.min = -math.inf, math.inf

    def update(self, values):
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return
        self.count += values.size
        self.total += float(values.sum())
        self.squares += float(np.square(values).sum())
        self.max = max(self.max, float(values.max()))
        self.min = min(self.min, float(values.min()))

    def stats(self):
        if not self.count:
            return math.nan, math.nan, math.nan, math.nan
        mean = self.total / self.count
        var = max(self.squares / self.count - mean * mean, 0.0)
        return mean, math.sqrt(var), self.max, self.min


def _batches(data, batch_size):
    """Input batches from a tf.data.Dataset / iterable of batches / arrays."""
    if isinstance(data, np.ndarray):
        for start in range(0, len(data), batch_size):
            yield data[start : start + batch_size]
        return
    if isinstance(data, tuple) and data and isinstance(data[0], np.ndarray):
        yield from _batches(data[0], batch_size)
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def feature_variances(model, data, layers=None, point="activation", batch_size=128,
                      max_batches=None, layer_types=CONV_TYPES):
    """Average / max / min per-sample variance of conv feature maps over `data`.

    Args:
        model: a built Keras functional model (a `BiasLossModel`, a model from
            `keras_skipblock.models.get_model`, a `keras.applications` model).
        data: a `tf.data.Dataset` (or any iterable) of input batches or of
            `(x, y[, w])` batches, or a numpy array of inputs (or an `(x, y)`
            tuple), batched by `batch_size`. Inputs must already be what the
            model expects (for this project: float32 in [-1, 1]).
        layers: see `resolve_layers`; default (5th, 20th, last conv).
        point: "activation" (after BN + activation, the tensor Bias Loss
            reads) or "conv" (raw conv output).
        max_batches: stop after this many batches (None: the whole data set).

    Returns:
        A `VarianceTable`; `.to_markdown()` formats it.
    """
    picked = resolve_layers(model, layers, point, layer_types)
    tensors = [p[4] for p in picked]
    extractor = keras.Model(model.inputs, tensors, name=f"{model.name}_variance_taps")

    def variances(x):
        outputs = extractor(x, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [sample_variance(t) for t in outputs]

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        variances = tf.function(variances, reduce_retracing=True)

    running = [_Running() for _ in picked]
    for i, x in enumerate(_batches(data, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        for acc, v in zip(running, variances(x)):
            acc.update(keras.ops.convert_to_numpy(v))

    rows = []
    for (label, layer, read_at, index, tensor), acc in zip(picked, running):
        mean, std, vmax, vmin = acc.stats()
        rows.append(LayerVariance(
            label=label, layer=layer.name, read_at=read_at.name, conv_index=index,
            shape=tuple(tensor.shape[1:]), count=acc.count,
            mean=mean, std=std, max=vmax, min=vmin,
        ))
    return VarianceTable(model=model.name, point=point, rows=rows)
