"""The authors' checkpoint in our SkipblockNet-M, against outputs of their own
PyTorch code (../shared/fixtures/authors_skipblocknet_m, SPEC §8)."""

import collections
import os
import pickle
import sys
import types
import zipfile

import keras
import numpy as np
import pytest

import keras_skipblock as ks
from keras_skipblock.models.authors_weights import load_authors_weights
from keras_skipblock.models.torch_state_dict import CheckpointError, read_state_dict
from tolerances import DEEP_NETWORK_RTOL, ELEMENTWISE_RTOL, assert_close, assert_ratio, perturb_weights, perturbed

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", "authors_skipblocknet_m")
PTH = os.path.join(FIXTURE, "skipblocknet_m.pth")

# Our layer holding each activation the fixture recorded. A stage's output
# *before* its skip block is its last block's residual sum.
ACTIVATIONS = {
    "act_stem": "stem_act", "act_base_block": "base_block_add", "act_stage1": "stage1_block5_add",
    "act_stage2": "stage2_block4_add", "act_stage3": "stage3_block2_add",
    "act_stage4": "stage4_block3_add", "act_head_conv": "head_conv_act",
}


@pytest.fixture(scope="session")
def expected():
    if not os.path.isdir(FIXTURE):
        pytest.fail(f"the authors' fixture is missing: {os.path.abspath(FIXTURE)} (CI has ../shared)")
    return dict(np.load(os.path.join(FIXTURE, "expected.npz")))


@pytest.fixture(scope="session")
def imported():
    # The side under test: perturbed only when tools/check_tolerances.py asks.
    return perturb_weights(ks.models.SkipblockNetM(weights=PTH, num_classes=1000, include_preprocessing=True))


def test_imported_model_reproduces_the_authors_logits_and_activations(imported, expected):
    probe = keras.Model(imported.input, {**{k: imported.get_layer(v).output for k, v in ACTIVATIONS.items()},
                                         "logits": imported.output["logits"]})
    images = perturbed(expected["images"].astype("float32"))
    out = {k: np.asarray(v) for k, v in probe(images, training=False).items()}
    np.testing.assert_array_equal(out["logits"].argmax(1), expected["logits"].argmax(1))
    # PyTorch's kernels vs ours, float32 through the deep network (tests/tolerances.py)
    assert_close(out["logits"], expected["logits"], DEEP_NETWORK_RTOL, what="logits")
    for key in ACTIVATIONS:
        reference = expected[key].transpose(0, 2, 3, 1)  # NCHW -> NHWC
        assert out[key].shape == reference.shape, key
        assert_close(out[key], reference, DEEP_NETWORK_RTOL, what=key)


def test_preprocessing_is_the_authors_normalisation(expected):
    layer = ks.models.skipblocknet.preprocessing_layer((0, 255), "authors")
    x = np.asarray(layer(perturbed(expected["images"].astype("float32"))))
    # (x / 255 - mean) / std: three float32 ops against PyTorch's three
    assert_close(x, expected["x_nchw"].transpose(0, 2, 3, 1), ELEMENTWISE_RTOL, what="normalised input")
    # our own models: [0, 255] -> [-1, 1]
    symmetric = ks.models.skipblocknet.preprocessing_layer((0, 255), "symmetric")
    assert_close(np.asarray(symmetric(np.array([[[[0.0, 127.5, 255.0]]]]))), [[[[-1, 0, 1]]]],
                 ELEMENTWISE_RTOL, what="[0, 255] -> [-1, 1]")


def test_without_preprocessing_takes_the_normalised_input(imported, expected):
    bare = perturb_weights(ks.models.SkipblockNetM(weights=PTH, num_classes=1000))
    assert not any(layer.name == "preprocessing" for layer in bare.layers)
    logits = np.asarray(bare(perturbed(expected["x_nchw"].transpose(0, 2, 3, 1)), training=False)["logits"])
    assert_close(logits, expected["logits"], DEEP_NETWORK_RTOL, what="logits")


def test_wrong_class_count_fails_naming_the_key_and_both_shapes_and_loads_nothing():
    model = ks.models.SkipblockNetM(num_classes=10)
    before = [w.copy() for w in model.get_layer("stem").get_weights()]
    with pytest.raises(CheckpointError, match=r"classifier\.3\.weight is \(1000, 1280\).*expects \(1280, 10\)"):
        load_authors_weights(model, PTH)
    np.testing.assert_array_equal(model.get_layer("stem").get_weights()[0], before[0])


def test_fine_tuning_load_keeps_mismatched_layers_fresh():
    model = ks.models.SkipblockNetM(num_classes=10)
    kept = load_authors_weights(model, PTH, strict=False)
    assert kept == ["logits"]
    state = read_state_dict(PTH)
    np.testing.assert_array_equal(model.get_layer("stem").get_weights()[0],
                                  state["first_layer.0.weight"].transpose(2, 3, 1, 0))


def test_skip_blocks_false_loads_a_checkpoint_without_skip_blocks_and_refuses_one_with_them():
    state = read_state_dict(PTH)
    no_skip = ks.models.SkipblockNetM(skip_blocks=False)
    with pytest.raises(CheckpointError, match=r"unexpected in the checkpoint: skip1\.core_block\.0\.weight"):
        load_authors_weights(no_skip, state)
    assert load_authors_weights(no_skip, {k: v for k, v in state.items() if not k.startswith("skip")}) == []
    np.testing.assert_array_equal(no_skip.get_layer("head_conv_bn").get_weights()[3], state["conv.1.running_var"])


@pytest.mark.parametrize("kwargs", [dict(width=0.75), dict(input_shape=(224, 224, 1))])
def test_other_shapes_than_the_released_one_are_refused(kwargs):
    with pytest.raises(ValueError, match="SkipblockNet-M at width 1.0 with RGB input only"):
        ks.models.SkipblockNetM(weights=PTH, **kwargs)
    with pytest.raises(ValueError, match="SkipblockNet-M at width 1.0"):
        ks.models.SkipblockNetS(weights=PTH)


# -- the reader, on files written here ----------------------------------------------------


def _write_pth(path, value, storages):
    """A torch-format zip written without torch: `value` may hold `_Tensor`s,
    pickled as torch._utils._rebuild_tensor_v2 over `storages`."""
    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called when writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    float_storage = type("FloatStorage", (), {"__module__": "torch"})
    fake_torch.FloatStorage = float_storage
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": fake_torch, "torch._utils": fake_utils})

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", float_storage, obj.key, "cpu", obj.numel)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, _Tensor):
                return _rebuild_tensor_v2, (obj.storage, 0, obj.shape, obj.stride, False,
                                            collections.OrderedDict())
            return NotImplemented

    try:
        import io

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(value)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/version", "3\n")
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", np.ascontiguousarray(array, "<f4").tobytes())


class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)
        self.stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))


def test_reader_unwraps_state_dict_and_dataparallel_prefixes(tmp_path):
    weight = np.arange(6, dtype="float32").reshape(2, 3)
    tensor = _Tensor(_Storage("0", 6), weight.shape)
    path = str(tmp_path / "wrapped.pth")
    _write_pth(path, {"epoch": 3, "state_dict": collections.OrderedDict([("module.fc.weight", tensor)])},
               {"0": weight})
    state = read_state_dict(path)
    assert list(state) == ["fc.weight"]
    np.testing.assert_array_equal(state["fc.weight"], weight)


def test_reader_refuses_code_in_the_pickle(tmp_path):
    path = str(tmp_path / "evil.pth")
    with zipfile.ZipFile(path, "w") as archive:
        # what pickle.dumps of an object whose __reduce__ is (os.system, ("...",)) writes
        archive.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    with pytest.raises(CheckpointError, match=r"refusing to load os\.system"):
        read_state_dict(path)


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(str(tmp_path / "missing.pth"))
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a zip-format PyTorch checkpoint"):
        read_state_dict(str(legacy))


# -- LiteRT and fine-tuning from the authors' file ----------------------------------------


def test_litert_conversion_of_the_pth_reproduces_the_authors_logits(tmp_path, expected):
    from keras_skipblock import litert
    from keras_skipblock.litert import LiteRTModel, load_keras_model
    from keras_skipblock.litert.pipeline import convert_file

    model = perturb_weights(load_keras_model(checkpoint=PTH))
    assert ks.models.raw_input_range(model) == (0.0, 255.0)
    output = str(tmp_path / "m.tflite")
    result = convert_file(model, output, representative_data="digits", num_verify=8, log=lambda *a: None)
    assert result.verification.passed
    lite = LiteRTModel(output)
    assert lite.input_shape == (224, 224, 3)
    images = expected["images"].astype("float32")
    logits = lite.predict(perturbed(images))
    np.testing.assert_array_equal(logits.argmax(1), expected["logits"].argmax(1))
    assert_close(logits, expected["logits"], DEEP_NETWORK_RTOL, what="LiteRT logits")
    # The converter's own float32 bound (litert/verify.py), against another rounding of the
    # Keras side: LiteRT's kernels vs TF's on a perturbed copy of the weights.
    check = litert.verify(perturb_weights(model), lite, images, "none", raise_on_failure=False)
    assert_ratio(check.max_abs_diff, litert.MAX_ABS_DIFF * max(1.0, np.abs(expected["logits"]).max()),
                 what="litert.verify float32 bound")


def test_fine_tuning_starts_from_the_authors_weights_with_consistent_input_scaling():
    from keras_skipblock.training.driver import TrainConfig, build_model

    config = TrainConfig(model="skipblocknet_m", init_checkpoint=PTH, weight_decay=0.0)
    model = build_model(config, (64, 64, 3), 10)
    state = read_state_dict(PTH)
    np.testing.assert_array_equal(model.get_layer("stage4_block3_project").get_weights()[0],
                                  state["blocks.3.2.conv.7.weight"].transpose(2, 3, 1, 0))
    assert model.get_layer("logits").get_weights()[0].shape == (1280, 10)  # fresh, 10 classes
    # The pipeline's [-1, 1] images reach the first conv as the authors normalise [0, 255] RGB.
    reference = ks.models.SkipblockNetM(weights=PTH, input_shape=(64, 64, 3), include_preprocessing=True)
    x = np.random.RandomState(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    ours = np.asarray(perturb_weights(model)(perturbed(x), training=False)["features"])
    theirs = np.asarray(reference((x + 1) * 127.5, training=False)["features"])
    # Two float32 affine compositions carried through the deep network (tests/tolerances.py);
    # a wrong scaling moves the features by ~1 x their rms.
    assert_close(ours, theirs, DEEP_NETWORK_RTOL, what="features")
    with pytest.raises(ValueError, match="use --model skipblocknet_m"):
        build_model(TrainConfig(model="skipblocknet_s", init_checkpoint=PTH), (64, 64, 3), 10)


def test_food101_recipe_fine_tunes_from_the_pth(tmp_path):
    from test_data import write_image_folder
    from test_recipes import assert_run_outputs, run_recipe

    food = write_image_folder(str(tmp_path / "food_like"), classes=("a", "b", "c"), per_class=3)
    out = str(tmp_path / "run")
    result = run_recipe("food101.py", "--dataset=folder", f"--data_dir={food}", f"--model_dir={out}",
                        f"--init_checkpoint={PTH}", "--image_size=64", "--batch_size=4", "--epochs=1",
                        "--steps_per_epoch=2", "--run_eagerly")
    assert "123 layers copied, 1 kept fresh (logits)" in result.stdout
    assert_run_outputs(out, epochs=1)
    scaling = keras.saving.load_model(os.path.join(out, "best.keras"), compile=False).get_layer("preprocessing")
    assert scaling.input_range == (-1.0, 1.0) and scaling.normalization == "authors"

    wrong = run_recipe("food101.py", "--dataset=folder", f"--data_dir={food}", f"--model_dir={out}2",
                       f"--init_checkpoint={PTH}", "--model=skipblocknet_s", check=False, in_process=True)
    assert wrong.returncode == 2 and "use --model skipblocknet_m" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_backbone_without_top_loads_all_but_the_classifier(expected):
    backbone = perturb_weights(ks.models.SkipblockNetM(weights=PTH, include_top=False, include_preprocessing=True))
    features = np.asarray(backbone(perturbed(expected["images"].astype("float32")), training=False))
    reference = expected["act_head_conv"].transpose(0, 2, 3, 1)
    assert_close(features, reference, DEEP_NETWORK_RTOL, what="head conv features")
