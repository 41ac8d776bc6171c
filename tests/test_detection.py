"""Detection: detector shapes and parameter counts, anchors, box coding and
matching, VOC mAP on hand-computed cases, Fashion-MNIST scenes, the VOCdevkit
reader and its errors, a few training steps, .keras round trip, the driver,
and the LiteRT conversion. Tiny inputs throughout (64x64 detectors)."""

import os

import numpy as np
import pytest

from keras_skipblock import detection
from keras_skipblock.detection import data as data_lib
from keras_skipblock.detection.metrics import average_precision, voc_map
from tolerances import DEEP_NETWORK_RTOL, ELEMENTWISE_RTOL, assert_close, perturbed

SMALL = 64
# int8 vs float32 detections of the tiny trained SSD matched (IoU >= 0.5, same class):
# 0.990-1.000 over seeds 0-2 x oneDNN 0/1 (n=6 per version, before and after the SPLIT fix;
# tools/measure_thresholds.py --only=detection_int8). Collapsed boxes give 0.
MIN_INT8_BOX_MATCH = 0.9


def _conv_params(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def _bn(c):
    return 2 * c  # trainable gamma, beta


# -- anchors ---------------------------------------------------------------------------


def test_anchor_table_and_counts_at_300():
    sizes = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    anchors = detection.generate_anchors((300, 300), sizes)
    per_cell = [len(level) for level in detection.SSD_ANCHORS]
    assert per_cell == [3, 6, 6, 6, 6, 6]
    assert len(anchors) == 19 * 19 * 3 + 6 * (100 + 25 + 9 + 4 + 1) == 1917  # ssd_mobilenet_v2's count
    assert detection.level_slices(sizes)[1] == (1083, 1683)
    # Level 0, cell (0, 0), first anchor: scale 0.1, ratio 1, centred at 0.5 / 19.
    c = 0.5 / 19
    assert_close(anchors[0], [c - 0.05, c - 0.05, c + 0.05, c + 0.05], ELEMENTWISE_RTOL)
    # Second anchor: scale 0.2, ratio 2 (width / height): w = 0.2 * sqrt(2), h = 0.2 / sqrt(2).
    w, h = 0.2 * np.sqrt(2), 0.2 / np.sqrt(2)
    assert_close(anchors[1], [c - w / 2, c - h / 2, c + w / 2, c + h / 2], ELEMENTWISE_RTOL)
    # The 1x1 level: six anchors centred on the image; the last has scale sqrt(0.95 * 1).
    assert_close(anchors[-1], 0.5 + np.sqrt(0.95) / 2 * np.array([-1, -1, 1, 1]), ELEMENTWISE_RTOL)


def test_encode_decode_round_trip():
    rng = np.random.RandomState(0)
    anchors = detection.generate_anchors((SMALL, SMALL), [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1), (1, 1)])
    xy = rng.uniform(0, 0.6, (len(anchors), 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.4, (len(anchors), 2))], axis=1).astype("float32")
    decoded = np.asarray(detection.decode(detection.encode(perturbed(boxes), anchors), anchors))
    assert_close(decoded, boxes, ELEMENTWISE_RTOL)  # log then exp, a few ops: tests/tolerances.py


def test_matching_targets_by_hand():
    anchors = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0],
                        [0.5, 0.0, 1.0, 0.5]], "float32")
    # Box 0 overlaps anchor 1 with IoU 0.64 (positive by threshold); box 1 is
    # tiny (IoU 0.04 with anchor 2, 0 elsewhere): positive only by forcing.
    boxes = np.array([[0.5, 0.5, 0.9, 0.9], [0.1, 0.6, 0.2, 0.7]], "float32")
    deltas, labels = detection.encode_targets(boxes, np.array([4, 7]), anchors)
    np.testing.assert_array_equal(np.asarray(labels), [0, 5, 8, 0])  # class + 1; anchor 0 background
    decoded = np.asarray(detection.decode(deltas, anchors))
    assert_close(decoded[[1, 2]], boxes, ELEMENTWISE_RTOL)
    np.testing.assert_array_equal(np.asarray(deltas)[[0, 3]], 0.0)
    # No boxes: every anchor is background.
    _, labels = detection.encode_targets(np.zeros((0, 4), "float32"), np.zeros((0,), "int32"), anchors)
    np.testing.assert_array_equal(np.asarray(labels), 0)


# -- the detector ---------------------------------------------------------------------


@pytest.mark.parametrize("head", ["ssd", "ssdlite"])
def test_mobilenet_v2_detector_shapes_and_parameter_count(head):
    import keras

    model = detection.build_detector("mobilenet_v2", 20, (300, 300, 3), head)
    outputs = model(np.zeros((1, 300, 300, 3), "float32"))
    assert outputs["boxes"].shape == (1, 1917, 4)
    assert outputs["logits"].shape == (1, 1917, 21)
    assert detection.feature_sizes(model) == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    channels = [576, 1280, 512, 256, 256, 128]
    assert [model.get_layer(f"features_{i}").output.shape[-1] for i in range(6)] == channels
    # Independent count: MobileNetV2's own trainable weights + extras + heads.
    backbone = keras.applications.MobileNetV2(input_shape=(300, 300, 3), include_top=False, weights=None)
    expected = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    previous = 1280
    for squeeze, out in ((256, 512), (128, 256), (128, 256), (64, 128)):
        expected += _conv_params(1, previous, squeeze) + _bn(squeeze)
        if head == "ssd":
            expected += _conv_params(3, squeeze, out) + _bn(out)
        else:
            expected += 9 * squeeze + _bn(squeeze) + _conv_params(1, squeeze, out) + _bn(out)
        previous = out
    for c, a in zip(channels, [3, 6, 6, 6, 6, 6]):
        for outputs_per_anchor in (4, 21):
            if head == "ssd":
                expected += _conv_params(3, c, a * outputs_per_anchor, bias=True)
            else:
                expected += 9 * c + _bn(c) + _conv_params(1, c, a * outputs_per_anchor, bias=True)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected


def test_skipblocknet_detector_reads_the_first_stride32_expansion():
    model = detection.build_detector("skipblocknet_s", 20, (SMALL, SMALL, 3))
    stride16 = model.get_layer("features_0").input
    assert stride16._keras_history.operation.name == "stage4_block1_expand_act"
    assert stride16.shape[1:] == (4, 4, 480)  # 80 channels x 6 at width 0.7
    assert model.get_layer("features_1").input.shape[1:] == (2, 2, 672)
    with pytest.raises(ValueError, match="Unknown detection backbone"):
        detection.build_detector("resnet50", 20, (SMALL, SMALL, 3))
    with pytest.raises(ValueError, match="Unknown head"):
        detection.build_detector("skipblocknet_s", 20, (SMALL, SMALL, 3), head="yolo")


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_large"])
def test_registry_taps_are_the_first_stride32_expansion(name):
    """The registry's named stride-16 taps are the layers the structural rule
    (input of the last stride-2 depthwise conv) finds; SkipblockNet's is checked above."""
    from keras_skipblock.models import registry

    backbone = registry.get_backbone(name, (SMALL, SMALL, 3))
    assert registry.feature_taps(name, backbone) == detection.backbone_features(backbone)


def test_detection_config_extends_train_config_and_refuses_what_detection_lacks():
    from keras_skipblock.detection.train import check_detection_config
    from keras_skipblock.training import TrainConfig
    from keras_skipblock.validation import InputError

    assert issubclass(detection.DetectionConfig, TrainConfig)
    check_detection_config(detection.DetectionConfig(dataset="fashion_mnist_scenes"))
    with pytest.raises(InputError, match="do not support strategy, mixed_precision yet"):
        check_detection_config(detection.DetectionConfig(
            dataset="fashion_mnist_scenes", strategy="mirrored", mixed_precision=True))


def test_detector_keras_round_trip(tmp_path):
    import keras

    model = detection.build_detector("skipblocknet_xs", 3, (SMALL, SMALL, 3), "ssdlite")
    model.compile(optimizer="sgd", loss=detection.MultiboxLoss("bias", detection.level_anchor_counts()))
    path = str(tmp_path / "detector.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, detection.SSDDetector)
    assert restored.loss.class_loss == "bias"
    x = np.random.RandomState(1).uniform(-1, 1, (2, SMALL, SMALL, 3)).astype("float32")
    a, b = model(x), restored(perturbed(x))
    for key in ("boxes", "logits"):
        # the same deep network's weights, reloaded (tests/tolerances.py)
        assert_close(np.asarray(b[key]), np.asarray(a[key]), DEEP_NETWORK_RTOL, what=key)


# -- VOC mAP -----------------------------------------------------------------------------------

A, B = [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]


def _truth(boxes, classes, difficult=None):
    return (np.array(boxes, "float32").reshape(-1, 4), np.array(classes),
            np.zeros(len(classes), bool) if difficult is None else np.array(difficult))


def _dets(boxes, scores, classes):
    return np.array(boxes, "float32").reshape(-1, 4), np.array(scores, "float32"), np.array(classes)


def test_map_perfect_detections():
    truths = [_truth([A, B], [0, 1]), _truth([B], [1])]
    detections = [_dets([A, B], [0.9, 0.8], [0, 1]), _dets([B], [0.7], [1])]
    result = voc_map(detections, truths, 2)
    assert result["map_11point"] == result["map_area"] == 1.0


def test_map_a_miss():
    # Two objects, one found: precision 1 up to recall 0.5.
    result = voc_map([_dets([A], [0.9], [0])], [_truth([A, B], [0, 0])], 1)
    assert result["map_area"] == pytest.approx(0.5)
    assert result["map_11point"] == pytest.approx(6 / 11)  # recall thresholds 0, 0.1, ..., 0.5


def test_map_a_duplicate():
    # A (0.9) TP, A again (0.8) FP (duplicate), B (0.7) TP:
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    detections = [_dets([A, A, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    result = voc_map(detections, [_truth([A, B], [0, 0])], 1)
    assert result["map_area"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert result["map_11point"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_map_difficult_objects_are_ignored():
    truth = [_truth([A, B], [0, 0], difficult=[False, True])]
    # The difficult object missed: not a miss.
    assert voc_map([_dets([A], [0.9], [0])], truth, 1)["map_area"] == 1.0
    # The difficult object detected (even before A): neither TP nor FP.
    assert voc_map([_dets([B, A], [0.95, 0.9], [0, 0])], truth, 1)["map_area"] == 1.0
    # Without the flag the same detections of a two-object truth give a miss.
    assert voc_map([_dets([A], [0.9], [0])], [_truth([A, B], [0, 0])], 1)["map_area"] == pytest.approx(0.5)


def test_map_wrong_class_low_iou_and_absent_classes():
    shifted = [0.25, 0.25, 0.55, 0.55]  # IoU with A = 0.05^2... well below 0.5
    result = voc_map([_dets([shifted, A], [0.9, 0.8], [0, 1])], [_truth([A], [0])], 3, ["a", "b", "c"])
    assert result["ap_area"] == {"a": 0.0}  # classes b, c have no objects: no AP, not in the mean
    assert result["positives"] == {"a": 1, "b": 0, "c": 0}
    assert average_precision([1.0, 0.5], [0.5, 0.5], "area") == pytest.approx(0.5)


# -- data -------------------------------------------------------------------------------------


def test_fashion_mnist_scenes_deterministic_real_and_exact():
    a = data_lib.fashion_mnist_scenes("train", 12, canvas_size=SMALL)
    b = data_lib.fashion_mnist_scenes("train", 12, canvas_size=SMALL)
    np.testing.assert_array_equal(a.images, b.images)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes))
    test = data_lib.fashion_mnist_scenes("test", 12, canvas_size=SMALL)
    assert not np.array_equal(a.images, test.images)
    assert a.images.shape == (12, SMALL, SMALL, 3) and len(a.class_names) == 10
    for image, boxes in zip(a.images, a.boxes):
        assert 1 <= len(boxes) <= 6
        pixels = (boxes * SMALL).round().astype(int)
        np.testing.assert_allclose(boxes * SMALL, pixels, atol=1e-4)  # whole pixels
        inside = np.zeros((SMALL, SMALL), bool)
        for x0, y0, x1, y1 in pixels:
            assert x1 > x0 and y1 > y0
            inside[y0:y1, x0:x1] = True
            # Tight: the brightest pixel of each item lies inside its box
            # (the canvas noise is < 40, items are brighter).
            assert image[y0:y1, x0:x1, 0].max() >= 40
        assert (image[..., 0][~inside] < 40).all()  # nothing bright outside the boxes


def _write_voc(root, year, items, image_set="trainval"):
    """A VOCdevkit year folder: items = [(id, (w, h), [(name, xmin, ymin, xmax, ymax, difficult)])]."""
    from PIL import Image

    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, year, sub), exist_ok=True)
    for image_id, (w, h), objects in items:
        Image.fromarray(np.full((h, w, 3), 120, "uint8")).save(os.path.join(root, year, "JPEGImages",
                                                                          f"{image_id}.jpg"))
        xml = [f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
        for name, x0, y0, x1, y1, difficult in objects:
            xml.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                       f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
        xml.append("</annotation>")
        with open(os.path.join(root, year, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write("".join(xml))
    with open(os.path.join(root, year, "ImageSets", "Main", f"{image_set}.txt"), "w") as f:
        f.write("".join(f"{image_id}\n" for image_id, _, _ in items))


def test_voc_folder_reader(tmp_path):
    root = str(tmp_path / "VOCdevkit")
    _write_voc(root, "VOC2007", [("000001", (100, 50), [("dog", 1, 1, 50, 25, 0), ("person", 51, 11, 100, 50, 1)])])
    _write_voc(root, "VOC2007", [("000002", (80, 80), [("cat", 11, 21, 40, 80, 0)])], image_set="test")
    _write_voc(root, "VOC2012", [("2012_000001", (60, 40), [("car", 31, 1, 60, 20, 0)])])
    train = data_lib.read_voc_folder(root, "trainval")
    assert len(train) == 2  # 2007 + 2012 trainval
    np.testing.assert_allclose(train.boxes[0], [[0, 0, 0.5, 0.5], [0.5, 0.2, 1.0, 1.0]])
    assert list(train.classes[0]) == [data_lib.VOC_CLASSES.index("dog"), data_lib.VOC_CLASSES.index("person")]
    assert list(train.difficult[0]) == [False, True]
    data = data_lib.load_detection_data("voc_folder", root)
    assert len(data.test_truth) == 1 and data.train_size == 2
    element = next(iter(data.train))
    assert tuple(element["image"].shape) == (50, 100, 3)
    anchors = detection.generate_anchors((SMALL, SMALL), [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1), (1, 1)])
    images, targets = next(iter(data_lib.training_dataset(data.train, anchors, SMALL, 2, augment=False)))
    assert images.shape == (2, SMALL, SMALL, 3) and float(np.abs(images).max()) <= 1.0
    assert (np.asarray(targets["labels"]) > 0).sum() >= 2  # difficult person left out, dog + car in


@pytest.mark.parametrize("objects, message", [
    ([("dog", 1, 1, 120, 25, 0)], "outside the 100x50 image"),
    ([("dog", 60, 1, 50, 25, 0)], "x_max < x_min"),
    ([("unicorn", 1, 1, 50, 25, 0)], "unknown class name 'unicorn'"),
])
def test_voc_folder_bad_annotations(tmp_path, objects, message):
    root = str(tmp_path / "VOCdevkit")
    _write_voc(root, "VOC2007", [("000001", (100, 50), objects)])
    with pytest.raises(data_lib.AnnotationError, match=message) as info:
        data_lib.read_voc_folder(root, "trainval")
    assert "000001.xml" in str(info.value)


def test_bad_boxes_and_empty_image_lists(tmp_path):
    from keras_skipblock.data import DatasetNotFoundError

    root = str(tmp_path / "VOCdevkit")
    _write_voc(root, "VOC2007", [])
    with pytest.raises(DatasetNotFoundError, match="missing or empty"):
        data_lib.read_voc_folder(root, "trainval")
    images = np.zeros((1, 8, 8, 3), "uint8")
    for boxes, message in (([[0.5, 0.1, 1.2, 0.4]], "outside the image"),
                           ([[0.6, 0.1, 0.4, 0.4]], "x_max < x_min")):
        examples = data_lib.DetectionExamples(images, [np.array(boxes, "float32")], [np.array([0])],
                                              [np.array([False])], ("a",), "arrays")
        with pytest.raises(data_lib.AnnotationError, match=message):
            data_lib.examples_dataset(examples)
    empty = data_lib.DetectionExamples(np.zeros((0, 8, 8, 3), "uint8"), [], [], [], ("a",), "arrays")
    with pytest.raises(DatasetNotFoundError, match="image list is empty"):
        data_lib.examples_dataset(empty)


# -- training -----------------------------------------------------------------------------------


def _tiny_backbone():
    """A 64x64 MobileNet-like backbone of a few layers (tracing a whole
    SkipblockNet detector's train step takes longer than the steps): the
    detector splits it at the input of its last stride-2 depthwise conv."""
    import keras
    from keras import layers

    inputs = keras.Input((SMALL, SMALL, 3))
    x = inputs
    for filters in (16, 24, 32, 48):
        x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(
            layers.Conv2D(filters, 1, use_bias=False)(x))
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(layers.Conv2D(96, 1, use_bias=False)(x)))
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)  # the stride-32 block
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(layers.Conv2D(128, 1, use_bias=False)(x)))
    return keras.Model(inputs, x, name="tiny")


@pytest.fixture(scope="session")
def trained():
    return train_tiny_detector(seed=0)


def train_tiny_detector(seed):
    """A tiny SSD trained 8 epochs x 3 steps on 48 real scenes with the Bias
    Loss branch, and its loss history. A plain function too: tools/measure_thresholds.py
    trains exactly this over seeds."""
    import keras

    keras.utils.set_random_seed(seed)
    scenes = data_lib.fashion_mnist_scenes("train", 48, canvas_size=SMALL)
    model = detection.build_detector(_tiny_backbone(), 10, (SMALL, SMALL, 3), "ssd", bn_momentum=0.9)
    anchors = detection.generate_anchors((SMALL, SMALL), detection.feature_sizes(model))
    train = data_lib.training_dataset(data_lib.examples_dataset(scenes), anchors, SMALL, 16, augment=False)
    model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9),
                  loss=detection.MultiboxLoss("bias", detection.level_anchor_counts()), jit_compile=False)
    history = model.fit(train, epochs=8, shuffle=False, verbose=0)  # train is a shuffled tf.data
    return model, anchors, scenes, history.history


def test_a_few_train_steps_lower_the_loss(trained):
    _, _, _, history = trained
    loss = history["loss"]
    # 8 epochs x 3 steps. Last/first loss ratio measured 0.214-0.227 over seeds
    # 0-2 (scenes and weights), the same with TF_ENABLE_ONEDNN_OPTS=0; 0.5 leaves a wide margin.
    assert loss[-1] < 0.5 * loss[0], loss
    assert np.all(np.isfinite(loss))
    assert 0.5 <= history["bias_weight"][-1] <= 1.5  # clamped Bias Loss weights were applied


def test_multibox_loss_mines_three_negatives_per_positive():
    loss = detection.MultiboxLoss("ce")
    labels = np.zeros((1, 10), "int32")
    labels[0, 0] = 1  # one positive
    logits = np.zeros((1, 10, 2), "float32")
    logits[0, :, 1] = np.arange(10)  # background anchors 1..9: CE grows with the index
    targets = {"boxes": np.zeros((1, 10, 4), "float32"), "labels": labels}
    total, parts = loss(targets, {"boxes": np.zeros((1, 10, 4), "float32"), "logits": logits})
    ce = np.log1p(np.exp(np.arange(10.0)))  # CE of background when logit(class) = i, logit(bg) = 0
    ce_positive = np.log1p(np.exp(-0.0))  # anchor 0: logits (0, 0), label 1
    expected = ce_positive + ce[7] + ce[8] + ce[9]  # the three hardest negatives
    assert_close(float(parts["class_loss"]), expected, ELEMENTWISE_RTOL, what="class loss")
    assert float(parts["box_loss"]) == 0.0
    assert_close(float(total), expected, ELEMENTWISE_RTOL, what="total")


def test_train_detector_driver_end_to_end(tmp_path, capsys):
    config = detection.DetectionConfig(
        dataset="fashion_mnist_scenes", image_size=SMALL, canvas_size=SMALL, train_images=32,
        validation_size=8, test_images=8, model="skipblocknet_xs", head="ssdlite", bn_momentum=0.9,
        loss="ce", epochs=1, batch_size=8, learning_rate=0.01, steps_per_epoch=2,
        model_dir=str(tmp_path / "run"), run_eagerly=True, verbose=0)
    summary = detection.train_detector(config)
    assert summary["epochs"] == 1 and summary["optimizer_steps"] == 2
    assert 0.0 <= summary["test_map_area"] <= 1.0 and set(summary["test_ap_area"]) <= set(
        data_lib.fashion_mnist_scenes("test", 1, canvas_size=SMALL).class_names)
    for name in ("best.keras", "summary.json", "test_ap.md", "history.csv", "backup"):
        assert os.path.exists(tmp_path / "run" / name), name
    assert "SUMMARY fashion_mnist_scenes skipblocknet_xs+ssdlite loss=ce: test mAP@0.5" in capsys.readouterr().out


# -- LiteRT ----------------------------------------------------------------------------------------


def test_litert_detector_matches_keras(trained):
    from keras_skipblock import litert

    model, anchors, _, _ = trained
    flatbuffer = litert.convert(model)
    ops = litert.op_summary(flatbuffer)["ops"]
    assert ops["NON_MAX_SUPPRESSION_V5"] == 10 and not any(op.startswith("Flex") for op in ops)
    images = litert.scene_images(8, SMALL, "test")
    runner = litert.spec_for(model).runtime(flatbuffer)
    litert_detections = runner.detect(images)
    keras_detections = detection.detect(model, images, anchors)
    # Every detection down to the 0.01 NMS score threshold has its twin.
    result = litert.compare_detections(keras_detections, litert_detections, score_threshold=0.02)
    assert result.detections > 0, "the trained model should detect something"
    assert result.passed, result.describe()
    for boxes, scores, classes in litert_detections:
        assert boxes.shape[1:] == (4,) and len(boxes) == len(scores) == len(classes)
        assert np.all(np.diff(scores) <= 0) and np.all((classes >= 0) & (classes < 10))


def test_one_litert_path_for_detector_and_classifier(trained):
    """spec_for picks the task; the same convert and verify serve a detector and a classifier."""
    import keras

    from keras_skipblock import litert

    detector = trained[0]
    classifier = keras.Sequential([keras.Input((SMALL, SMALL, 3)), keras.layers.Conv2D(4, 3, strides=4),
                                   keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    assert litert.spec_for(detector) is litert.DETECTOR and litert.spec_for(classifier) is litert.CLASSIFIER
    images = litert.scene_images(8, SMALL, "test")
    for model, spec in ((detector, litert.DETECTOR), (classifier, litert.CLASSIFIER)):
        flatbuffer = litert.convert(model, "none")
        runner = spec.runtime(flatbuffer)
        assert set(runner.interpreter.get_signature_list()["serving_default"]["outputs"]) == set(spec.outputs)
        result = litert.verify(model, flatbuffer, images, "none")
        assert result.passed, result.describe()
    with pytest.raises(litert.LiteRTError, match="detector converts with quantize 'none' or 'int8'"):
        litert.convert(detector, "float16")
    with pytest.raises(litert.LiteRTError, match="is a classifier; a DetectorSpec cannot"):
        litert.convert(classifier, spec=litert.DetectorSpec())
    assert litert.requires_calibration(detector) and litert.requires_calibration(classifier)
    # A spec's settings reach the serving function: NMS keeps at most 5 boxes.
    runner = litert.LiteRTDetector(litert.convert(detector, spec=litert.DetectorSpec(max_detections=5)))
    assert all(len(boxes) <= 5 for boxes, _, _ in runner.detect(images))
    assert runner.runner.get_output_details()["boxes"]["shape"].tolist() == [1, 5, 4]


def _op_types(flatbuffer):
    """[(op name, input dtypes, output dtypes)] of a .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    dtype = lambda i: interpreter._get_tensor_details(i, 0)["dtype"].__name__  # noqa: E731
    return [(op["op_name"], [dtype(i) for i in op["inputs"] if i >= 0], [dtype(i) for i in op["outputs"]])
            for op in interpreter._get_ops_details()]


@pytest.fixture(scope="session")
def int8_detector(trained):
    """(int8, float32 reference) `.tflite` bytes of the trained tiny detector."""
    from keras_skipblock import litert

    return litert.convert_with_reference(trained[0], "int8", litert.scene_images(64, SMALL, "train"))


def test_int8_detector_quantizes_the_network_and_keeps_post_processing_float(int8_detector):
    int8, float32 = int8_detector
    ops = _op_types(int8)
    convolutions = [op for op in ops if op[0] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convolutions and all(op[1][0] == "int8" and op[2] == ["int8"] for op in convolutions)
    # Decoding, scores, selection and counting in float32: quantized, they gave all-zero
    # boxes and one shared score per image (mAP 0).
    post = [op for op in ops if op[0] in ("EXP", "DIV", "NON_MAX_SUPPRESSION_V5", "TOPK_V2", "SUM",
                                         "GATHER", "GREATER", "SPLIT")]
    assert {op[0] for op in post} >= {"EXP", "DIV", "NON_MAX_SUPPRESSION_V5", "TOPK_V2", "SUM"}  # DIV: softmax
    assert all("int8" not in op[1] + op[2] for op in post), [op for op in post if "int8" in op[1] + op[2]]
    # Quantized once, at the input: nothing after the network is re-quantized (a quantized
    # decode collapsed every box of a trained SkipblockNet-S SSD to (0, 0, 0, 0)).
    assert [op[0] for op in ops].count("QUANTIZE") == 1 and ops[0][0] == "QUANTIZE"
    # The int8 boxes are where the float32 ones are (the broken conversion gave (0, 0, 0, 0)).
    assert int8_box_match(float32, int8) >= MIN_INT8_BOX_MATCH


def int8_box_match(float32, int8):
    """The share of the float32 `.tflite`'s detections (score >= 0.1, 96 test scenes) that have an
    int8 box of the same class with IoU >= 0.5."""
    from keras_skipblock import litert

    images = litert.scene_images(96, SMALL, "test")
    float32 = litert.LiteRTDetector(float32).detect(images)
    quantized = litert.LiteRTDetector(int8).detect(images)
    ious = [max((_iou(box, other) for other, c in zip(q_boxes, q_classes) if c == label), default=0.0)
            for (boxes, scores, classes), (q_boxes, _, q_classes) in zip(float32, quantized)
            for box, score, label in zip(boxes, scores, classes) if score >= 0.1]
    assert len(ious) >= 10, "the trained model should detect something"
    return float(np.mean(np.array(ious) >= 0.5))


def _iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_int8_detector_that_loses_map_is_refused_and_not_written(trained, int8_detector, tmp_path, monkeypatch):
    import importlib

    from keras_skipblock import litert

    checks = importlib.import_module("keras_skipblock.litert.verify")  # litert.verify is the function
    monkeypatch.setattr(checks, "MAX_INT8_MAP_DROP", -1.0)  # no int8 model can pass
    pipeline = importlib.import_module("keras_skipblock.litert.pipeline")
    asked = []

    def converted(model, quantize, calibration, **kwargs):  # the conversion the test above checks
        asked.append((quantize, len(calibration)))
        return int8_detector

    monkeypatch.setattr(pipeline, "convert_with_reference", converted)
    output = tmp_path / "detector_int8.tflite"
    with pytest.raises(litert.VerificationError, match="int8 check FAILED.*nothing written"):
        litert.convert_file(trained[0], str(output), "int8", num_calibration=16, num_verify=8,
                            log=lambda *a: None)
    assert asked == [("int8", 16)] and not output.exists()
