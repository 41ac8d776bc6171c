"""SSD's training augmentation (Liu et al. 2016, §2.2 and Table 2), box-aware, in tf.data.

`augment_example(image, boxes, classes, seed, image_size, mode)` with mode

- "none": resize only;
- "flip": random horizontal flip (p 0.5), resize;
- "ssd": SSD's steps
  1. photometric distortion, each with probability 0.5: brightness (delta in
     [-32, 32]), contrast (factor in [0.5, 1.5]), saturation (factor in
     [0.5, 1.5]), hue (delta in [-18, 18] degrees);
  2. zoom-out (p 0.5): the image placed at a random spot of a canvas up to
     4x its width and height, filled with the image's mean colour;
  3. min-IoU random crop: one of {whole image, IoU >= 0.1, 0.3, 0.5, 0.7,
     0.9, any patch}, uniformly among the modes where one of 50 candidate
     patches qualifies (`sample_crop`); candidates have sides 0.3-1 of the
     canvas and aspect (h/w in pixels) 0.5-2, and qualify when at least one
     object's IoU with them reaches the threshold (the SSD authors' Caffe
     `SatisfySampleConstraint`) and at least one object's centre lies in them.
     Boxes whose centre is in the patch are kept, clipped to it; the others
     dropped;
  4. horizontal flip (p 0.5);
  5. resize to image_size x image_size (bilinear).
  Steps 2-5 are one resampling of the source; step 1 runs after it, on the
  output pixels: brightness, saturation and hue act pixel by pixel, so the
  image is the same up to interpolation (contrast uses the patch's mean, and
  the canvas is distorted with the image), at half the cost on a VOC image.

Output image: float32 in [0, 255], (image_size, image_size, 3); boxes rel_xyxy.

**Deterministic for a seed.** Every random draw is a stateless op keyed by a
per-example seed (`tf.random.experimental.stateless_split` of it), so the
result does not depend on tf.data's parallelism or on the order elements reach
the map function.

**What comes from keras-cv, and what is ours.**

- Brightness and contrast: keras-cv's `RandomBrightness` and `RandomContrast`
  (`augment_images`, given the transformation). The random *draws* are ours:
  keras-cv's layers draw from a stateful `tf.random.Generator`, shared by all
  of tf.data's parallel map calls, so which image gets which draw depends on
  thread timing and a seed cannot make the pipeline reproducible.
- Saturation and hue: TF's fused `tf.image.adjust_saturation`/`adjust_hue`
  kernels; keras-cv's `RandomSaturation`/`RandomHue` build each from
  rgb_to_hsv + hsv_to_rgb and made the four steps 3x as expensive.
- Zoom-out, crop, flip and resize: ours, fused into one
  `tf.image.crop_and_resize` of the uint8 source image. keras-cv 0.9 has
  no zoom-out onto a canvas for boxes and no min-IoU crop sampler (its
  `RandomCrop`/`RandomCropAndResize` ignore objects), and one resampling of the
  source costs a fraction of building a 4x canvas (2000x1500 pixels for a
  500x375 VOC image), cropping it and resizing it. The flip is the same
  resampling with the x end points swapped (keras-cv's `RandomFlip` would be a
  second pass, and stateful as above).
- Candidate IoU: `keras_cv.bounding_box.compute_iou`.
"""

import tensorflow as tf

AUGMENTATIONS = ("none", "flip", "ssd")

# The crop modes: IoU thresholds; -1 keeps the whole image, 0 is "any patch".
CROP_MODES = (-1.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)
CROP_TRIALS = 50
MIN_CROP_SIDE = 0.3
CROP_ASPECT = (0.5, 2.0)
MAX_ZOOM_OUT = 4.0
ZOOM_OUT_PROBABILITY = 0.5
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA_DEGREES = 18.0


def check_augment(augment):
    """The augmentation name, or a ValueError naming the choices. True/False
    (this argument's former boolean meaning) map to "flip"/"none"."""
    if augment is True:
        return "flip"
    if augment is False or augment is None:
        return "none"
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment={augment!r} is not an augmentation; use one of "
                         f"{', '.join(AUGMENTATIONS)}.")
    return augment


def _photometric_layers():
    """keras-cv's photometric layers, used only for their pixel work. Built at
    import: they create random-generator variables, which a traced function
    (tf.data's map, a test's tf.function) must not create on a later trace."""
    import keras_cv

    return dict(brightness=keras_cv.layers.RandomBrightness(0.1, value_range=(0, 255)),
                contrast=keras_cv.layers.RandomContrast(value_range=(0, 255), factor=0.5))


_LAYERS = _photometric_layers()


def _uniform(seed, low, high, shape=()):
    return tf.random.stateless_uniform(shape, seed, low, high, tf.float32)


def photometric_distort(image, seed):
    """SSD's photometric distortion of a float32 (H, W, 3) image in [0, 255]."""
    layers = _LAYERS
    seeds = tf.random.experimental.stateless_split(seed, 8)
    apply = _uniform(seeds[0], 0.0, 1.0, (4,)) < 0.5
    images = image[None]
    delta = _uniform(seeds[1], -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    images = tf.cond(apply[0], lambda: layers["brightness"].augment_images(
        images, tf.reshape(delta, (1, 1, 1, 1))), lambda: images)
    factor = _uniform(seeds[2], *CONTRAST_RANGE)
    images = tf.cond(apply[1], lambda: layers["contrast"].augment_images(
        images, tf.reshape(factor, (1, 1, 1, 1))), lambda: images)
    # saturation and hue: TF's fused AdjustSaturation / AdjustHue kernels (scale-free,
    # so [0, 255] works); keras-cv's layers build each from rgb_to_hsv + hsv_to_rgb
    # (all four steps: ~5.1 ms at 300x300 that way, ~1.7 ms this way; docs/detection.md)
    factor = _uniform(seeds[3], *SATURATION_RANGE)
    images = tf.cond(apply[2], lambda: tf.clip_by_value(tf.image.adjust_saturation(images, factor), 0.0, 255.0),
                     lambda: images)
    delta = _uniform(seeds[4], -HUE_DELTA_DEGREES, HUE_DELTA_DEGREES) / 360.0
    images = tf.cond(apply[3], lambda: tf.clip_by_value(tf.image.adjust_hue(images, delta), 0.0, 255.0),
                     lambda: images)
    return images[0]


def _pairwise_iou(patches, boxes):
    import keras_cv

    return keras_cv.bounding_box.compute_iou(patches, boxes, bounding_box_format="xyxy")


def sample_crop(seed, boxes, aspect, trials=CROP_TRIALS, modes=CROP_MODES):
    """SSD's min-IoU patch (4,) rel_xyxy of a canvas holding `boxes` (M, 4)
    rel_xyxy of that canvas; `aspect` = canvas height / width in pixels.
    Written here: keras-cv 0.9 has no crop sampler constrained by the objects.

    Every mode of CROP_MODES gets `trials` candidates at once (vectorised, no
    loop); among the modes where a candidate qualifies (the whole image always
    does) one is chosen uniformly and its first qualifying candidate taken. That
    is the SSD authors' Caffe rule (one sampler chosen among those that
    succeeded), and the distribution of ssd.pytorch's "draw another mode until
    one succeeds". `modes`: IoU thresholds, -1 = the whole image, 0 = any
    patch; when no mode succeeds, the whole image."""
    seeds = tf.random.experimental.stateless_split(seed, 6)
    thresholds = tf.constant(modes, tf.float32)[:, None, None]  # (modes, 1, 1)
    modes = len(modes)
    w = _uniform(seeds[1], MIN_CROP_SIDE, 1.0, (modes, trials))
    h = _uniform(seeds[2], MIN_CROP_SIDE, 1.0, (modes, trials))
    x0 = _uniform(seeds[3], 0.0, 1.0, (modes, trials)) * (1.0 - w)
    y0 = _uniform(seeds[4], 0.0, 1.0, (modes, trials)) * (1.0 - h)
    patches = tf.stack([x0, y0, x0 + w, y0 + h], axis=-1)  # (modes, trials, 4)
    pixel_aspect = h * aspect / w
    ok = (pixel_aspect >= CROP_ASPECT[0]) & (pixel_aspect <= CROP_ASPECT[1])
    iou = tf.reshape(_pairwise_iou(tf.reshape(patches, (-1, 4)), boxes), (modes, trials, -1))
    iou_ok = tf.reduce_any(iou >= thresholds, axis=2) | (thresholds[:, :, 0] <= 0.0)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    inside = _centres_inside(patches[:, :, None, :], centres[None, None])  # (modes, trials, M)
    centre_ok = tf.reduce_any(inside, axis=2) | tf.equal(tf.shape(boxes)[0], 0)
    ok = ok & iou_ok & centre_ok
    whole = thresholds[:, 0, 0] < 0.0
    found = tf.reduce_any(ok, axis=1) | whole  # (modes,)
    mode = tf.argmax(tf.where(found, _uniform(seeds[0], 0.0, 1.0, (modes,)), -1.0), output_type=tf.int32)
    first = tf.argmax(tf.cast(ok[mode], tf.int32), output_type=tf.int32)
    keep_whole = whole[mode] | tf.logical_not(tf.reduce_any(found))
    return tf.where(keep_whole, tf.constant([0.0, 0.0, 1.0, 1.0]), patches[mode, first])


def _centres_inside(patch, centres):
    return ((centres[..., 0] > patch[..., 0]) & (centres[..., 0] < patch[..., 2])
            & (centres[..., 1] > patch[..., 1]) & (centres[..., 1] < patch[..., 3]))


def boxes_in_patch(boxes, classes, patch):
    """Boxes whose centre lies in `patch` (4,), clipped to it, in its
    coordinates; the others dropped (with their classes)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    keep = _centres_inside(patch, centres)
    boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
    origin = tf.tile(patch[:2], [2])
    size = tf.tile(patch[2:] - patch[:2], [2])
    return tf.clip_by_value((boxes - origin) / size, 0.0, 1.0), classes


def _sample_points(start, stop, pixels, samples):
    """crop_and_resize's normalised end points for `samples` half-pixel-centred
    outputs over the continuous source interval [start, stop] (pixel units
    along an axis of `pixels` pixels): the sampling tf.image.resize does."""
    step = (stop - start) / samples
    first = start + 0.5 * step - 0.5
    last = start + (samples - 0.5) * step - 0.5
    scale = tf.maximum(pixels - 1.0, 1.0)
    return first / scale, last / scale


def augment_example(image, boxes, classes, seed, image_size, mode="ssd"):
    """One training example: (image float32 (image_size, image_size, 3) in
    [0, 255], boxes (K, 4) rel_xyxy, classes (K,)). `seed`: (2,) int stateless
    seed, one per example. `mode`: "none", "flip" or "ssd" (module docstring)."""
    mode = check_augment(mode)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), (-1, 4))
    if mode == "none":
        return tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size)), boxes, classes
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    window = tf.constant([0.0, 0.0, 1.0, 1.0])  # the output's extent, in source image coordinates
    if mode == "ssd":
        # zoom-out: the canvas spans [-offset, ratio - offset] of the image's extent
        zoom = _uniform(seeds[1], 0.0, 1.0) < ZOOM_OUT_PROBABILITY
        ratio = tf.where(zoom, _uniform(seeds[2], 1.0, MAX_ZOOM_OUT), 1.0)
        offset = _uniform(seeds[3], 0.0, 1.0, (2,)) * (ratio - 1.0)
        offset4 = tf.tile(offset, [2])
        canvas_boxes = (boxes + offset4) / ratio
        patch = sample_crop(seeds[4], canvas_boxes, height / width)
        boxes, classes = boxes_in_patch(canvas_boxes, classes, patch)
        window = patch * ratio - offset4
    flip = _uniform(seeds[5], 0.0, 1.0) < 0.5
    boxes = tf.where(flip, tf.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1),
                     boxes)
    x_first, x_last = _sample_points(window[0] * width, window[2] * width, width, image_size)
    y_first, y_last = _sample_points(window[1] * height, window[3] * height, height, image_size)
    x_first, x_last = tf.where(flip, x_last, x_first), tf.where(flip, x_first, x_last)
    # The source is read in its own dtype (uint8: no full-size float copy). Samples
    # outside it, the zoom-out canvas, come back as -1 and take the mean colour
    # (of every 16th row and column: a fill colour, not a statistic; the full mean
    # costs as much as the resampling).
    out = tf.image.crop_and_resize(image[None], tf.stack([[y_first, x_first, y_last, x_last]]), [0],
                                   (image_size, image_size), extrapolation_value=-1.0)[0]
    if mode == "ssd":  # only a zoom-out samples outside the source
        mean = tf.reduce_mean(tf.cast(image[::16, ::16], tf.float32), axis=(0, 1))
        out = tf.where(out < 0.0, mean, out)
        # SSD's first step, done here on the output pixels: brightness, saturation and
        # hue act pixel by pixel, so before or after resampling gives the same image up
        # to interpolation; at 300x300 it costs half what it costs on a 500x375 source.
        out = photometric_distort(out, seeds[0])
    return out, boxes, classes
