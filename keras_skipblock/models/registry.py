"""Models by name: `get_model("skipblocknet_m", input_shape, num_classes)`.

Every model returned is a `keras_skipblock.BiasLossModel` with outputs
`{"logits", "features"}`, randomly initialised, with **no input
preprocessing inside**: data pipelines feed float32 images scaled to
[-1, 1] (project convention). The keras.applications baselines are built
with `weights=None`, `include_preprocessing=False` where that argument
exists, and a linear classifier; EfficientNet-B0, which always rescales its
input by 1/255 inside, has those layers replaced by identities.
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
