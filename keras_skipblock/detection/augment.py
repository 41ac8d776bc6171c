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

- Brightness: keras-cv's `RandomBrightness` (`augment_images`, given the
  transformation). The random *draws* are ours: keras-cv's layers draw from a
  stateful `tf.random.Generator`, shared by all of tf.data's parallel map
  calls, so which image gets which draw depends on thread timing and a seed
  cannot make the pipeline reproducible.
- Contrast, saturation and hue: TF's fused `tf.image.adjust_contrast`/
  `adjust_saturation`/`adjust_hue` kernels. keras-cv's `RandomContrast`
  computes the same contrast in four separate ops (3x the time);
  `RandomSaturation`/`RandomHue` build each from rgb_to_hsv + hsv_to_rgb and
  made the four steps 3x as expensive.
- Zoom-out, crop, flip and resize: ours, one `tf.image.resize` of the slice
  of the source that the output shows, padded with the fill colour where the
  zoom-out canvas shows, then mirrored for the flip. keras-cv 0.9 has no
  zoom-out onto a canvas for boxes and no min-IoU crop sampler (its
  `RandomCrop`/`RandomCropAndResize` ignore objects), and resizing only the
  slice costs a fraction of building a 4x canvas (2000x1500 pixels for a
  500x375 VOC image), cropping it and resizing it. The window is snapped to
  whole source pixels (as ssd.pytorch's integer crops and canvas offsets are),
  and the boxes are mapped through the snapped window, so they stay exact
  (`_axis_plan`).
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
    """keras-cv's brightness layer, used only for its pixel work. Built at import:
    it creates random-generator variables, which a traced function (tf.data's
    map, a test's tf.function) must not create on a later trace."""
    import keras_cv

    return dict(brightness=keras_cv.layers.RandomBrightness(0.1, value_range=(0, 255)))


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
    # contrast, saturation and hue: TF's fused AdjustContrastv2 / AdjustSaturation /
    # AdjustHue kernels (scale-free, so [0, 255] works). keras-cv's RandomContrast
    # computes the same (x - channel mean) * factor + mean in 4 separate ops, 3x the
    # time; its HSV layers build each from rgb_to_hsv + hsv_to_rgb (docs/detection.md)
    images = tf.cond(apply[1], lambda: tf.clip_by_value(tf.image.adjust_contrast(images, factor), 0.0, 255.0),
                     lambda: images)
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
    """The boxes (and classes) whose centre lies in `patch` (4,), unchanged; the
    others dropped. The resampling's box mapping (`_map_boxes`) clips the kept
    ones to the output."""
    keep = _centres_inside(patch, (boxes[:, :2] + boxes[:, 2:]) / 2.0)
    return tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)


def _axis_plan(start, stop, pixels, samples):
    """How one axis is resampled: the window [start, stop] (source pixels, floats;
    it reaches outside [0, pixels] where a zoom-out canvas shows) becomes the
    integer source slice [v0, v1) resized onto the integer output span [q0, q1)
    of `samples` output pixels; outside that span is canvas. Snapping to whole
    pixels (as ssd.pytorch's integer crops do) moves the window by under half a
    source pixel and lets a plain `tf.image.resize` of a slice do the work, at
    half `crop_and_resize`'s cost; the boxes follow the snapped mapping
    (`_map_boxes`), so they stay exact."""
    scale = samples / (stop - start)
    v0 = tf.clip_by_value(tf.round(start), 0.0, pixels - 1.0)
    v1 = tf.clip_by_value(tf.round(stop), v0 + 1.0, pixels)  # never empty: resize needs a source
    # the span is empty (q0 == q1) when the window misses the source (a box-free zoom-out crop)
    q0 = tf.clip_by_value(tf.round((v0 - start) * scale), 0.0, float(samples))
    q1 = tf.clip_by_value(tf.round((v1 - start) * scale), q0, float(samples))
    return tf.cast(tf.stack([v0, v1, q0, q1]), tf.int32)


def _map_boxes(boxes, plan_x, plan_y, width, height, samples):
    """rel_xyxy source boxes -> rel_xyxy output boxes through the two axis plans, clipped to [0, 1]."""
    plans = tf.cast(tf.stack([plan_x, plan_y, plan_x, plan_y]), tf.float32)  # (4, [v0, v1, q0, q1])
    pixels = tf.stack([width, height, width, height])
    v0, v1, q0, q1 = tf.unstack(plans, axis=1)
    out = q0 + (boxes * pixels - v0) * (q1 - q0) / (v1 - v0)
    return tf.clip_by_value(out / samples, 0.0, 1.0)


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
        canvas_boxes, classes = boxes_in_patch(canvas_boxes, classes, patch)
        boxes = canvas_boxes * ratio - offset4
        window = patch * ratio - offset4
    plan_x = _axis_plan(window[0] * width, window[2] * width, width, image_size)
    plan_y = _axis_plan(window[1] * height, window[3] * height, height, image_size)
    boxes = _map_boxes(boxes, plan_x, plan_y, width, height, image_size)
    # The slice of the source that the output shows, resized onto its span of the output.
    span = tf.stack([plan_y[3] - plan_y[2], plan_x[3] - plan_x[2]])
    out = tf.image.resize(image[plan_y[0]:plan_y[1], plan_x[0]:plan_x[1]],  # uint8 in, float32 out: no float copy
                          tf.maximum(span, 1))[:span[0], :span[1]]
    if mode == "ssd":
        # only a zoom-out leaves canvas around the source: the image's mean colour (of every
        # 16th row and column: a fill colour, not a statistic, at a fraction of the full
        # mean's cost), computed only then
        def fill():
            mean = tf.reduce_mean(tf.cast(image[::16, ::16], tf.float32), axis=(0, 1))
            pad = tf.stack([[plan_y[2], image_size - plan_y[3]], [plan_x[2], image_size - plan_x[3]], [0, 0]])
            return tf.pad(out - mean, pad) + mean

        canvas = tf.reduce_any(tf.not_equal(tf.stack([plan_x[2:], plan_y[2:]]), [0, image_size]))
        out = tf.cond(canvas, fill, lambda: out)
    flip = _uniform(seeds[5], 0.0, 1.0) < 0.5
    out = tf.cond(flip, lambda: tf.reverse(out, axis=[1]), lambda: out)
    boxes = tf.where(flip, tf.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1),
                     boxes)
    out = tf.ensure_shape(out, (image_size, image_size, 3))
    if mode == "ssd":
        # SSD's first step, done here on the output pixels: brightness, saturation and
        # hue act pixel by pixel, so before or after resampling gives the same image up
        # to interpolation; at 300x300 it costs half what it costs on a 500x375 source.
        out = photometric_distort(out, seeds[0])
    return out, boxes, classes
