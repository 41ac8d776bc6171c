"""Image preprocessing as tf.data-friendly TensorFlow functions.

Every function returns float32 images scaled to [-1, 1] (the project's
convention: models contain no preprocessing).

- `preprocess_for_train`: Inception-style training crop (SPEC §4): a random
  box covering 8%-100% of the image with aspect ratio 3/4-4/3, decoded
  straight out of the JPEG (`tf.image.decode_and_crop_jpeg` decodes only
  the crop), resized, randomly flipped.
- `preprocess_for_eval`: centre crop of 0.875 of the shorter side, resized.
- `augment_flip_rotate`: CIFAR-100's flip + rotation in [-15, 15] degrees.
"""

import math

import tensorflow as tf

CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
CENTER_CROP_FRACTION = 0.875  # 224 / 256
RESIZE_METHOD = "bicubic"  # as EfficientNet's reference


def scale_to_unit_range(image):
    """uint8 [0, 255] (or float in that range) -> float32 [-1, 1]."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def _resize(image, image_size, method=RESIZE_METHOD):
    size = _pair(image_size)
    image = tf.image.resize(image, size, method=method, antialias=False)
    # Bicubic overshoots; keep the [0, 255] range before scaling.
    return tf.clip_by_value(image, 0.0, 255.0)


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def _image_shape(image_bytes):
    """(height, width, channels) of an encoded JPEG/PNG/GIF/BMP, no full decode for JPEG."""
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.image.extract_jpeg_shape(image_bytes),
        lambda: tf.shape(tf.io.decode_image(image_bytes, channels=3, expand_animations=False)),
    )


def _decode_crop(image_bytes, offset_y, offset_x, height, width):
    """Decode only the crop window of a JPEG; other formats: decode, then crop."""
    window = tf.stack([offset_y, offset_x, height, width])

    def jpeg():
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return tf.image.crop_to_bounding_box(image, offset_y, offset_x, height, width)

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    return tf.ensure_shape(image, [None, None, 3])


def distorted_crop_window(image_shape, area_range=CROP_AREA, aspect_ratio_range=CROP_ASPECT,
                          min_object_covered=0.1, max_attempts=10, seed=None):
    """A random crop box (offset_y, offset_x, height, width) as in Inception/EfficientNet.

    When no box satisfying the constraints is found in `max_attempts`,
    TensorFlow returns the whole image (EfficientNet then centre-crops; the
    whole image is the simpler, equally common choice).
    """
    whole = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
    kwargs = dict(
        bounding_boxes=whole, min_object_covered=min_object_covered,
        aspect_ratio_range=aspect_ratio_range, area_range=area_range,
        max_attempts=max_attempts, use_image_if_no_bounding_boxes=True,
    )
    if seed is None:
        begin, size, _ = tf.image.sample_distorted_bounding_box(image_shape, **kwargs)
    else:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            image_shape, seed=seed, **kwargs
        )
    return begin[0], begin[1], size[0], size[1]


def preprocess_for_train(image_bytes, image_size=224, seed=None):
    """Encoded image (JPEG fast path) -> random-crop, resized, flipped float32 [-1, 1].

    seed: optional stateless seed (shape [2] int) for reproducible crops in tests.
    """
    shape = _image_shape(image_bytes)
    offset_y, offset_x, height, width = distorted_crop_window(shape, seed=seed)
    image = _decode_crop(image_bytes, offset_y, offset_x, height, width)
    image = _resize(image, image_size)
    image = tf.image.random_flip_left_right(image) if seed is None else (
        tf.image.stateless_random_flip_left_right(image, seed)
    )
    return scale_to_unit_range(image)


def center_crop_window(image_shape, image_size=224, crop_fraction=CENTER_CROP_FRACTION):
    """Centre square of side crop_fraction * shorter side, as (y, x, h, w)."""
    height, width = image_shape[0], image_shape[1]
    side = tf.cast(crop_fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    side = tf.maximum(side, 1)
    return (height - side + 1) // 2, (width - side + 1) // 2, side, side


def preprocess_for_eval(image_bytes, image_size=224, crop_fraction=CENTER_CROP_FRACTION):
    """Encoded image -> centre crop (0.875), resized, float32 [-1, 1]."""
    shape = _image_shape(image_bytes)
    image = _decode_crop(image_bytes, *center_crop_window(shape, image_size, crop_fraction))
    return scale_to_unit_range(_resize(image, image_size))


def _rotation_matrix(angles, height, width):
    """Projective transforms (batch, 8) rotating about the image centre."""
    cos, sin = tf.cos(angles), tf.sin(angles)
    cx, cy = (tf.cast(width, tf.float32) - 1) / 2, (tf.cast(height, tf.float32) - 1) / 2
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2).
    a2 = cx - cos * cx + sin * cy
    b2 = cy - sin * cx - cos * cy
    zeros = tf.zeros_like(angles)
    return tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)


def rotate(images, angles):
    """Rotate a batch (b, h, w, c) by `angles` radians, bilinear, zero fill."""
    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=_rotation_matrix(tf.cast(angles, tf.float32), shape[1], shape[2]),
        output_shape=shape[1:3], fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )


def augment_flip_rotate(image, max_degrees=15.0):
    """One decoded image (h, w, c), values 0-255 -> random flip and rotation, same range."""
    image = tf.image.random_flip_left_right(tf.cast(image, tf.float32))
    limit = max_degrees * math.pi / 180.0
    angle = tf.random.uniform([1], -limit, limit)
    return rotate(image[None], angle)[0]


def resize_batch(images, image_size, method="bilinear"):
    """A batch of uint8 images -> float32 [-1, 1] at image_size (no-op resize when equal)."""
    images = tf.cast(images, tf.float32)
    size = _pair(image_size)
    if tuple(images.shape[1:3]) != size:
        images = tf.clip_by_value(tf.image.resize(images, size, method=method), 0.0, 255.0)
    return scale_to_unit_range(images)
