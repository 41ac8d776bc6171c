"""SSD augmentation (keras_skipblock/detection/augment.py) and its place in training_dataset."""

import numpy as np
import pytest
import tensorflow as tf

from keras_skipblock.detection import augment as aug
from tolerances import ELEMENTWISE_RTOL, assert_close
from keras_skipblock.detection import data as data_lib

OUT = 48  # output side of the augmented images in these tests


@tf.function(reduce_retracing=True)
def _augment_graph(image, boxes, classes, seed, size, mode):
    return aug.augment_example(image, boxes, classes, seed, size, mode)


def _augment(image, boxes, classes, seed, mode="ssd", size=OUT):
    image, boxes, classes = _augment_graph(
        tf.constant(image), tf.constant(np.asarray(boxes, "float32").reshape(-1, 4)),
        tf.constant(np.asarray(classes, "int32")), tf.constant(seed, tf.int64), size, mode)
    return image.numpy(), boxes.numpy(), classes.numpy()


def _white_rectangle(height=60, width=80, box=(50, 12, 70, 30)):
    """A black image with one white rectangle at pixel box (x0, y0, x1, y1), and its rel_xyxy box."""
    image = np.zeros((height, width, 3), "uint8")
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image, np.array([[x0 / width, y0 / height, x1 / width, y1 / height]], "float32")


def _object_extent(image):
    """Pixel extent (x0, y0, x1, y1) of the bright pixels, thresholded halfway between
    the darkest pixel and the brightest."""
    grey = image.mean(axis=-1)
    mask = grey > (grey.min() + grey.max()) / 2
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], "float32")


@pytest.mark.parametrize("mode", ["flip", "ssd"])
def test_boxes_follow_the_pixels(mode):
    """A filled rectangle, augmented with 40 seeds: its returned box frames its pixels
    within 1.5 output pixels (bilinear resampling blurs edges by up to a pixel)."""
    image, box = _white_rectangle()
    seen_flip = seen_zoom = 0
    for seed in range(40):
        out, boxes, classes = _augment(image, box, [4], [7, seed], mode)
        assert len(boxes) == 1, f"seed {seed}: the only object was dropped"  # its centre is always kept (see below)
        assert classes.tolist() == [4]
        extent = _object_extent(out)
        np.testing.assert_allclose(boxes[0] * OUT, extent, atol=1.5, err_msg=f"seed {seed}")
        seen_flip += extent[0] < OUT / 2  # the rectangle sits in the right half of the source
        seen_zoom += (extent[2] - extent[0]) < 0.2 * OUT  # 20/80 of the width unless zoomed out
    assert seen_flip > 5, "no flipped sample in 40 seeds"
    if mode == "ssd":
        assert seen_zoom > 3, "no zoomed-out sample in 40 seeds"
    else:
        assert seen_zoom == 0


def test_flip_alone_mirrors_exactly():
    image, box = _white_rectangle()
    flips = 0
    for seed in range(10):
        out, boxes, _ = _augment(image, box, [0], [1, seed], "flip", size=80)
        np.testing.assert_allclose(out.shape, (80, 80, 3))
        x0, y0, x1, y1 = box[0]
        # boxes lie in [0, 1]: the error model's bound at that scale is ELEMENTWISE_RTOL
        flipped = np.allclose(boxes[0], [1 - x1, y0, 1 - x0, y1], rtol=0, atol=ELEMENTWISE_RTOL)
        assert flipped or np.allclose(boxes[0], box[0], rtol=0, atol=ELEMENTWISE_RTOL)
        flips += flipped
    assert 0 < flips < 10


def test_no_box_lost_without_reason():
    """A box is dropped only when its centre is outside the patch; kept boxes come back unchanged."""
    boxes = tf.constant([[0.1, 0.1, 0.5, 0.5],     # centre (0.3, 0.3): in
                         [0.0, 0.0, 0.3, 0.3],     # centre (0.15, 0.15): out
                         [0.6, 0.6, 0.95, 0.9],    # centre (0.775, 0.75): in
                         [0.7, 0.1, 0.95, 0.3]])   # centre (0.825, 0.2): out (above)
    kept, classes = aug.boxes_in_patch(boxes, tf.constant([1, 2, 3, 4]), tf.constant([0.2, 0.25, 0.8, 0.85]))
    assert classes.numpy().tolist() == [1, 3]
    np.testing.assert_array_equal(kept.numpy(), boxes.numpy()[[0, 2]])


def test_axis_plan_and_box_mapping_by_hand():
    """The window snapped to whole source pixels, the output span it is resized onto,
    and boxes mapped through that snapped mapping (clipped to the output)."""
    def plan(start, stop, pixels, samples):
        return aug._axis_plan(tf.constant(start), tf.constant(stop), tf.constant(pixels), samples).numpy().tolist()

    # a crop inside the source: slice [10, 111) fills the whole output
    assert plan(10.3, 110.7, 200.0, 40) == [10, 111, 0, 40]
    # a zoom-out (the canvas spans [-100, 300)): all 200 source pixels land on output [10, 30)
    assert plan(-100.0, 300.0, 200.0, 40) == [0, 200, 10, 30]
    # a window that misses the source: an empty span, all canvas
    assert plan(-300.0, -100.0, 200.0, 40)[2:] == [40, 40]
    # boxes on a 200 x 200 source: x through the zoom-out plan, y through the crop plan
    boxes = tf.constant([[0.25, 0.1, 0.75, 0.3], [0.0, 0.0, 1.0, 1.0]])
    out = aug._map_boxes(boxes, tf.constant([0, 200, 10, 30]), tf.constant([10, 111, 0, 40]),
                         tf.constant(200.0), tf.constant(200.0), 40).numpy()
    # x: 10 + 50 * 20 / 200 = 15 and 10 + 150 * 20 / 200 = 25 of 40; y: (20 - 10) * 40 / 101
    # and (60 - 10) * 40 / 101 of 40; the whole image's y (-10 and 190) * 40 / 101 clip to [0, 1]
    expected = [[15 / 40, 10 / 101, 25 / 40, 50 / 101], [10 / 40, 0.0, 30 / 40, 1.0]]
    assert_close(out, expected, ELEMENTWISE_RTOL, what="mapped boxes")  # a few elementwise ops


def test_flip_and_none_keep_every_box():
    boxes = np.array([[0.0, 0.0, 0.1, 0.1], [0.5, 0.2, 1.0, 1.0], [0.3, 0.3, 0.3, 0.4]], "float32")
    image = np.full((30, 40, 3), 90, "uint8")
    for mode in ("none", "flip"):
        for seed in range(5):
            _, out, classes = _augment(image, boxes, [0, 1, 2], [0, seed], mode)
            assert classes.tolist() == [0, 1, 2]
            assert len(out) == 3


def test_crops_never_empty_the_targets():
    """Small objects near the borders make most random patches miss them: with 300 seeds,
    SSD's crop still returns at least one box for every image that had one."""
    image = np.full((60, 90, 3), 50, "uint8")
    boxes = [[0.0, 0.0, 0.06, 0.08], [0.9, 0.85, 1.0, 1.0]]
    counts = []
    for seed in range(300):
        _, out, classes = _augment(image, boxes, [2, 5], [3, seed], "ssd", size=16)
        assert len(out) >= 1, f"seed {seed}: every box was dropped"
        assert len(out) == len(classes)
        counts.append(len(out))
    assert min(counts) == 1 and max(counts) == 2  # crops did drop a box, never both


def test_image_without_boxes():
    image = np.random.RandomState(0).randint(0, 255, (50, 70, 3)).astype("uint8")
    for seed in range(10):
        out, boxes, classes = _augment(image, np.zeros((0, 4)), [], [0, seed], "ssd")
        assert out.shape == (OUT, OUT, 3) and boxes.shape == (0, 4) and classes.shape == (0,)
        assert np.isfinite(out).all()


def test_sampled_patches_obey_ssd_rules():
    """Every patch is the whole canvas or has sides >= 0.3, pixel aspect 0.5-2, and an
    object's centre inside. The whole canvas is one of the modes that succeed (at most 7),
    chosen uniformly among them: 1/7 to 1/5 of the time here (0.9 may fail on these boxes)."""
    boxes = tf.constant([[0.2, 0.3, 0.5, 0.6], [0.6, 0.1, 0.9, 0.4]])
    centres = (boxes[:, :2] + boxes[:, 2:]).numpy() / 2
    whole = 0
    for seed in range(200):
        patch = aug.sample_crop(tf.constant([5, seed], tf.int64), boxes, aspect=0.75).numpy()
        if np.allclose(patch, [0, 0, 1, 1]):
            whole += 1
            continue
        w, h = patch[2] - patch[0], patch[3] - patch[1]
        assert 0 <= patch[0] < patch[2] <= 1 and 0 <= patch[1] < patch[3] <= 1
        assert w >= 0.3 - 1e-6 and h >= 0.3 - 1e-6
        assert 0.5 - 1e-6 <= h * 0.75 / w <= 2 + 1e-6
        inside = ((centres[:, 0] > patch[0]) & (centres[:, 0] < patch[2])
                  & (centres[:, 1] > patch[1]) & (centres[:, 1] < patch[3]))
        assert inside.any()
    assert 200 / 7 * 0.6 < whole < 200 / 5 * 1.4


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_min_iou_constraint(threshold):
    """Sampling with one IoU mode only: every patch is the whole image (no candidate
    qualified) or has IoU >= the threshold with the object (computed here by hand)."""
    ious, whole = [], 0
    for seed in range(100):
        patch = aug.sample_crop(tf.constant([9, seed], tf.int64), tf.constant([[0.3, 0.3, 0.7, 0.7]]),
                                aspect=1.0, modes=(threshold,)).numpy()
        if np.allclose(patch, [0, 0, 1, 1]):
            whole += 1
            continue
        inter = (max(0.0, min(patch[2], 0.7) - max(patch[0], 0.3))
                 * max(0.0, min(patch[3], 0.7) - max(patch[1], 0.3)))
        ious.append(inter / ((patch[2] - patch[0]) * (patch[3] - patch[1]) + 0.16 - inter))
    assert len(ious) >= 5, f"only {len(ious)} of 100 samples found a patch"
    assert min(ious) >= threshold - 1e-6


def test_zoom_out_fills_with_the_mean_colour():
    """A uniformly coloured image stays uniform however it is zoomed out and cropped: the
    canvas around it has the (distorted) image's mean colour."""
    image = np.empty((40, 60, 3), "uint8")
    image[...] = (200, 60, 20)
    for seed in range(15):
        out, _, _ = _augment(image, np.zeros((0, 4)), [], [2, seed], "ssd", size=32)
        assert out.std(axis=(0, 1)).max() < 0.01, f"seed {seed}: the canvas is not the image's colour"


def test_photometric_distortion_changes_colour_in_range():
    rng = np.random.RandomState(1)
    image = tf.constant(rng.uniform(0, 255, (20, 20, 3)), tf.float32)
    changed = 0
    for seed in range(12):
        out = aug.photometric_distort(image, tf.constant([0, seed], tf.int64)).numpy()
        assert out.shape == (20, 20, 3) and out.min() >= 0.0 and out.max() <= 255.0
        changed += not np.allclose(out, image.numpy(), atol=1e-3)
    assert changed >= 9  # each of 4 steps applies with p 0.5: all skipped 1/16 of the time


def test_deterministic_for_a_seed():
    image, box = _white_rectangle()
    a = _augment(image, box, [1], [11, 3], "ssd")
    b = _augment(image, box, [1], [11, 3], "ssd")
    c = _augment(image, box, [1], [11, 4], "ssd")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def _scenes_elements(n=24):
    scenes = data_lib.fashion_mnist_scenes("train", n, canvas_size=64, seed=0)
    return data_lib.examples_dataset(scenes)


def _anchors():
    from keras_skipblock.detection.anchors import generate_anchors

    return generate_anchors((64, 64), [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1), (1, 1)])


def test_training_dataset_same_seed_same_batches():
    """Stateless draws per example: two pipelines with one seed give identical batches
    (with tf.data's parallel map), another seed other batches, a second epoch new ones.
    The second pipeline caches the decoded images (cache=True): its second epoch, read
    from the cache, equals the uncached pipeline's."""
    elements, anchors = _scenes_elements(), _anchors()

    def batches(seed, cache=False):
        ds = data_lib.training_dataset(elements, anchors, 64, 8, seed=seed, augment="ssd", cache=cache)
        return [(x.numpy(), y["labels"].numpy(), y["boxes"].numpy()) for x, y in ds], ds

    first, ds = batches(3)
    again, cached = batches(3, cache=True)
    other, _ = batches(4)
    for (x, l, b), (x2, l2, b2) in zip(first, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(l, l2)
        np.testing.assert_array_equal(b, b2)
    assert not np.array_equal(first[0][0], other[0][0])
    second_epoch = next(iter(ds))[0].numpy()
    assert not np.array_equal(first[0][0], second_epoch)
    np.testing.assert_array_equal(next(iter(cached))[0].numpy(), second_epoch)


@pytest.mark.parametrize("augment", ["none", "flip", "ssd"])
def test_training_dataset_shapes_and_range(augment):
    elements, anchors = _scenes_elements(16), _anchors()
    ds = data_lib.training_dataset(elements, anchors, 64, 8, seed=0, augment=augment)
    for images, targets in ds:
        assert images.shape == (8, 64, 64, 3) and images.dtype == tf.float32
        assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0
        assert targets["boxes"].shape == (8, len(anchors), 4)
        labels = targets["labels"].numpy()
        assert labels.shape == (8, len(anchors)) and labels.min() >= 0 and labels.max() <= 10
        assert ((labels > 0).sum(axis=1) >= 1).all()  # every scene has an object, so a positive anchor


def test_bad_augment_names_the_choices():
    with pytest.raises(ValueError, match="none, flip, ssd"):
        aug.check_augment("mosaic")
    assert aug.check_augment(True) == "flip" and aug.check_augment(False) == "none"
    with pytest.raises(ValueError, match="augment='random'"):
        data_lib.training_dataset(_scenes_elements(8), _anchors(), 64, 4, augment="random")


def test_detection_config_validates_augment():
    from keras_skipblock.detection.train import DetectionConfig, check_detection_config
    from keras_skipblock.validation import InputError

    with pytest.raises(InputError, match="--augment: unknown value 'zoom'; use one of none, flip, ssd"):
        check_detection_config(DetectionConfig(dataset="fashion_mnist_scenes", augment="zoom"))


def test_batched_matching_ignores_the_padding():
    """training_dataset matches a padded batch at once; every image's targets equal
    its targets matched alone, unpadded (images with 0 to 7 boxes, padding class -1),
    and its labels those of the rule written in numpy."""
    from keras_skipblock.detection.anchors import encode_targets, encode_targets_batch, generate_anchors

    anchors = generate_anchors((300, 300), [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])
    rng = np.random.RandomState(0)
    counts = [0, 1, 3, 7, 2, 5]
    boxes = np.zeros((len(counts), 7, 4), "float32")
    classes = -np.ones((len(counts), 7), "int32")
    for b, k in enumerate(counts):
        corner = rng.uniform(0, 0.7, (k, 2))
        boxes[b, :k] = np.concatenate([corner, corner + rng.uniform(0.02, 0.3, (k, 2))], axis=1)
        classes[b, :k] = rng.randint(0, 20, k)
    deltas, labels = encode_targets_batch(boxes, classes, anchors)
    for b, k in enumerate(counts):
        one_deltas, one_labels = encode_targets(boxes[b, :k], classes[b, :k], anchors)
        np.testing.assert_array_equal(labels[b].numpy(), one_labels.numpy())
        assert_close(deltas[b].numpy(), one_deltas.numpy(), ELEMENTWISE_RTOL, what="deltas")  # same elementwise ops
        assert (labels[b].numpy() > 0).sum() >= k  # every box has at least its best anchor
        np.testing.assert_array_equal(labels[b].numpy(), _labels_by_numpy(boxes[b, :k], classes[b, :k], anchors))


def _labels_by_numpy(boxes, classes, anchors, threshold=0.5):
    """SSD's matching rule written plainly: each anchor's best box (IoU >= threshold ->
    class + 1), then each box's best anchor forced to it."""
    x0 = np.maximum(anchors[:, None, 0], boxes[None, :, 0])
    y0 = np.maximum(anchors[:, None, 1], boxes[None, :, 1])
    x1 = np.minimum(anchors[:, None, 2], boxes[None, :, 2])
    y1 = np.minimum(anchors[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(anchors)[:, None] + area(boxes)[None, :] - inter)  # (N, k)
    labels = np.zeros(len(anchors), "int32")
    if len(boxes):
        best = iou.argmax(axis=1)
        positive = iou.max(axis=1) >= threshold
        labels[positive] = classes[best[positive]] + 1
        for box, anchor in enumerate(iou.argmax(axis=0)):
            labels[anchor] = classes[box] + 1
    return labels
