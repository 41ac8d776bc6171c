"""Models by name: `get_model("skipblocknet_m", input_shape, num_classes)`.

Every model returned is a `keras_skipblock.BiasLossModel` with outputs
`{"logits", "features"}`, randomly initialised, with **no input
preprocessing inside**: data pipelines feed float32 images scaled to
[-1, 1] (project convention). The keras.applications baselines are built
with `weights=None`, `include_preprocessing=False` where that argument
exists, and a linear classifier; EfficientNet-B0, which always rescales its
input by 1/255 inside, has those layers replaced by identities.

This module is the one place that knows the model families: how the
recipes' `--width/--dropout/--bn_momentum/--skip_blocks` translate to each
constructor (`model_kwargs`), which model the authors' checkpoint fits
(`check_authors_checkpoint`), and, for detection, each family's
classifier-less backbone and its stride-16/32 feature taps
(`get_backbone`, `feature_taps`).
"""

import keras

from keras_skipblock.bias_loss_model import with_features


def _skipblocknet(variant):
    def build(input_shape, num_classes, **kwargs):
        from keras_skipblock.models import skipblocknet

        constructor = getattr(skipblocknet, f"SkipblockNet{variant}")
        return constructor(input_shape=input_shape, num_classes=num_classes, **kwargs)

    return build


def _application(constructor, name, fixed=None, defaults=None, rename=None):
    """A keras.applications baseline: weights=None, linear classifier, wrapped
    with `with_features`. `rename` maps our kwarg names to the constructor's."""

    def build(input_shape, num_classes, **kwargs):
        options = dict(defaults or {}, **kwargs)
        options = {(rename or {}).get(key, key): value for key, value in options.items()}
        options["name"] = options.get("name") or name
        model = getattr(keras.applications, constructor)(
            input_shape=input_shape, weights=None, classes=num_classes,
            classifier_activation=None, **dict(fixed or {}), **options)
        return with_features(model)

    return build


def _efficientnet_b0(input_shape, num_classes, dropout=0.2, name=None):
    model = keras.applications.EfficientNetB0(
        input_shape=input_shape,
        weights=None,
        classes=num_classes,
        classifier_activation=None,
        name=name or "efficientnet_b0",
    )
    # keras' EfficientNet always rescales by 1/255 and normalises inside; the
    # project feeds [-1, 1] images, so those preprocessing layers become no-ops.
    preprocessing = (keras.layers.Rescaling, keras.layers.Normalization)

    def clone(layer):
        if isinstance(layer, preprocessing):
            return keras.layers.Identity(name=layer.name)
        if isinstance(layer, keras.layers.Dropout) and layer.name == "top_dropout":
            return keras.layers.Dropout(dropout, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    model = keras.models.clone_model(model, clone_function=clone)
    return with_features(model)


_MOBILENET_V3 = dict(fixed=dict(include_preprocessing=False), rename=dict(dropout="dropout_rate"),
                     defaults=dict(dropout=0.2))

_BUILDERS = {
    "skipblocknet_xs": _skipblocknet("XS"),
    "skipblocknet_s": _skipblocknet("S"),
    "skipblocknet_m": _skipblocknet("M"),
    "skipblocknet_l": _skipblocknet("L"),
    "mobilenet_v3_large": _application("MobileNetV3Large", "mobilenet_v3_large", **_MOBILENET_V3),
    "mobilenet_v3_small": _application("MobileNetV3Small", "mobilenet_v3_small", **_MOBILENET_V3),
    # alpha 0.75: the paper's CIFAR-100 baseline.
    "mobilenet_v2": _application("MobileNetV2", "mobilenet_v2", defaults=dict(alpha=0.75)),
    "densenet121": _application("DenseNet121", "densenet121"),
    "efficientnet_b0": _efficientnet_b0,
    "nasnet_mobile": _application("NASNetMobile", "nasnet_mobile"),
}

MODEL_NAMES = tuple(_BUILDERS)


def get_model(name, input_shape=(224, 224, 3), num_classes=1000, **kwargs):
    """Build the model called `name` as a `BiasLossModel`.

    Args:
        name: one of `MODEL_NAMES`.
        input_shape: (height, width, channels) of the float32 input, which
            the data pipeline scales to [-1, 1].
        num_classes: size of the `logits` output.
        **kwargs: passed to the constructor. SkipblockNet: `width`,
            `dropout`, `bn_momentum`, `skip_blocks`, ... (see
            `keras_skipblock.models.skipblocknet`). MobileNetV3: `alpha`,
            `dropout`, `minimalistic`. MobileNetV2: `alpha` (default 0.75,
            the paper's CIFAR-100 baseline). EfficientNet-B0: `dropout`.
            All: `name`.

    Returns:
        A `keras_skipblock.BiasLossModel` with outputs {"logits", "features"}.
    """
    from keras_skipblock.validation import InputError, check_number

    key = str(name).lower()
    if key not in _BUILDERS:
        raise InputError(f"Unknown model {name!r}. Valid names: {', '.join(MODEL_NAMES)}.")
    check_number("num_classes", num_classes, low=1, integer=True)
    if len(tuple(input_shape)) != 3 or any(s is not None and s < 32 for s in tuple(input_shape)[:2]):
        raise InputError(f"input_shape must be (height, width, channels) with sides >= 32; "
                         f"got {tuple(input_shape)}.")
    return _BUILDERS[key](tuple(input_shape), num_classes, **kwargs)


# -- recipe flags to constructor arguments ------------------------------------------


def model_kwargs(name, width=None, dropout=None, bn_momentum=None, skip_blocks=True):
    """The `get_model` keyword arguments of the recipes' model flags for the family of
    `name` (None: the constructor's default). SkipblockNet takes them all;
    MobileNets call width `alpha`; MobileNetV3 and EfficientNet-B0 take dropout.
    Families without a BN-momentum argument get it from `set_bn_momentum`."""
    key = str(name).lower()
    kwargs = {}
    if key.startswith("skipblocknet"):
        kwargs = {k: v for k, v in (("width", width), ("dropout", dropout), ("bn_momentum", bn_momentum))
                  if v is not None}
        kwargs["skip_blocks"] = skip_blocks
    elif key.startswith("mobilenet"):
        if width is not None:
            kwargs["alpha"] = width
        if dropout is not None and key.startswith("mobilenet_v3"):
            kwargs["dropout"] = dropout
    elif key == "efficientnet_b0" and dropout is not None:
        kwargs["dropout"] = dropout
    return kwargs


def set_bn_momentum(model, momentum):
    """Set every BatchNormalization layer's momentum (short runs need a faster one)."""
    from keras_skipblock import _compat

    for layer in _compat.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


# -- the authors' checkpoint ----------------------------------------------------------

# What fine-tuning from the authors' .pth adds to SkipblockNet-M: the data pipelines feed
# [-1, 1], the authors' weights expect ImageNet-normalised input, so the model takes
# [-1, 1] and rescales it inside (InputScaling).
AUTHORS_INPUT = dict(include_preprocessing=True, input_range=(-1, 1), normalization="authors")


def check_authors_checkpoint(name, width, checkpoint):
    """CheckpointError unless `name`/`width` is the model the authors' file holds
    (SkipblockNet-M at width 1.0). Nothing to check for any other checkpoint."""
    from keras_skipblock.models.authors_weights import is_authors_checkpoint
    from keras_skipblock.models.torch_state_dict import CheckpointError

    if not is_authors_checkpoint(checkpoint):
        return
    if str(name).lower() != "skipblocknet_m" or (width if width is not None else 1.0) != 1.0:
        raise CheckpointError(f"--init_checkpoint {checkpoint} holds the authors' SkipblockNet-M "
                              f"at width 1.0; use --model skipblocknet_m without --width (got {name}).")


def build_classifier(name, input_shape, num_classes, width=None, dropout=None, bn_momentum=None,
                     skip_blocks=True, init_checkpoint=None):
    """`get_model` from the recipes' model flags: arguments translated per family, BN
    momentum set on every layer, and, for the authors' checkpoint, checked to fit and
    built with its input scaling. The checkpoint's weights are not loaded here."""
    from keras_skipblock.models.authors_weights import is_authors_checkpoint

    kwargs = model_kwargs(name, width, dropout, bn_momentum, skip_blocks)
    if is_authors_checkpoint(init_checkpoint):
        check_authors_checkpoint(name, width, init_checkpoint)
        kwargs.update(AUTHORS_INPUT)
    model = get_model(name, input_shape=input_shape, num_classes=num_classes, **kwargs)
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    return model


# -- detection backbones ------------------------------------------------------------------

# Each family's stride-16 tap, the MobileNetV2 paper's SSD layout: the expansion layer of
# the first stride-32 block. Named layers, looked up with get_layer: SkipblockNet names
# its layers by stage (as `stage_outputs` does); keras' MobileNetV3 leaves its activations
# unnamed (numbered per process), so its tap is the input of the block's named padding.
_STRIDE16_TAPS = {
    "skipblocknet": ("stage4_block1_expand_act", "output"),
    "mobilenet_v2": ("block_13_expand_relu", "output"),
    "mobilenet_v3_large": ("expanded_conv_12_depthwise_pad", "input"),
}
DETECTION_BACKBONES = ("skipblocknet_xs", "skipblocknet_s", "skipblocknet_m", "skipblocknet_l",
                       "mobilenet_v2", "mobilenet_v3_large")


def _family(name):
    key = str(name).lower()
    return "skipblocknet" if key.startswith("skipblocknet_") else key


def get_backbone(name, input_shape, width=None, bn_momentum=None):
    """The classifier-less backbone `name` (one of DETECTION_BACKBONES) as a keras.Model
    on `input_shape`, randomly initialised; MobileNets at alpha 1.0 unless `width`."""
    from keras_skipblock.validation import InputError

    key = str(name).lower()
    if key not in DETECTION_BACKBONES:
        raise InputError(f"Unknown detection backbone {name!r}; use one of {', '.join(DETECTION_BACKBONES)}.")
    if key.startswith("skipblocknet_"):
        from keras_skipblock.models import skipblocknet

        kwargs = {} if bn_momentum is None else {"bn_momentum": bn_momentum}
        return skipblocknet.SkipblockNet(key.split("_", 1)[1].upper(), input_shape=input_shape,
                                         width=width, include_top=False, **kwargs)
    alpha = 1.0 if width is None else width
    if key == "mobilenet_v2":
        model = keras.applications.MobileNetV2(input_shape=input_shape, include_top=False,
                                               weights=None, alpha=alpha)
    else:
        model = keras.applications.MobileNetV3Large(input_shape=input_shape, include_top=False,
                                                    weights=None, alpha=alpha, include_preprocessing=False)
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    return model


def feature_taps(name, backbone):
    """(stride-16 map, stride-32 map) of `get_backbone(name, ...)`: the family's named
    stride-16 layer (see _STRIDE16_TAPS) and the backbone's output."""
    layer, end = _STRIDE16_TAPS[_family(name)]
    return getattr(backbone.get_layer(layer), end), backbone.output
