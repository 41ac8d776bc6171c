"""keras_skipblock._compat: each private Keras/TF/LiteRT API we use still exists
and behaves as we rely on; and no other module uses a private API.

A failure names the entry (`_compat.<name>`): a Keras or TF release changed
what it wraps. Fix the entry (or raise setup.py's floor / lower its ceiling).
"""

import ast
import contextlib
import inspect
import pathlib

import numpy as np
import pytest

from keras_skipblock import _compat

ROOT = pathlib.Path(__file__).resolve().parents[1]
FENCED_DIRS = ("keras_skipblock", "recipes", "tflite", "tools", "benchmarks")


@contextlib.contextmanager
def entry(name):
    """Turn any failure inside into one that names the _compat entry."""
    try:
        yield
    except Exception as error:  # noqa: BLE001  any change under us must read as this entry's
        pytest.fail(f"_compat.{name}: the Keras/TF/LiteRT API under it changed: "
                    f"{type(error).__name__}: {error}", pytrace=True)


def _tiny_model(units=3):
    import keras

    inputs = keras.Input((4,))
    x = keras.layers.Dense(units, name="dense")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def _compiled_with_ema(model=None):
    import keras

    model = model or _tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


# -- layers and graphs ------------------------------------------------------------


def test_flatten_layers():
    import keras

    class Block(keras.layers.Layer):  # a custom layer holding a sublayer
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(2, name="inner_dense")

        def call(self, x):
            return self.inner(x)

    with entry("flatten_layers"):
        inner_in = keras.Input((4,))
        nested = keras.Model(inner_in, Block(name="block")(inner_in), name="nested")
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1, name="top")(nested(inputs)), name="outer")
        names = [layer.name for layer in _compat.flatten_layers(model)]
        assert {"nested", "block", "inner_dense", "top"} <= set(names), names
        assert "outer" not in names, names
        with_self = _compat.flatten_layers(model, include_self=True)
        assert with_self[0] is model and len(with_self) == len(names) + 1


def test_inbound_nodes():
    import keras

    with entry("inbound_nodes"):
        shared = keras.layers.Dense(2, name="shared")
        a, b = keras.Input((3,)), keras.Input((3,))
        outputs = [shared(a), shared(b)]
        keras.Model([a, b], outputs)
        nodes = _compat.inbound_nodes(shared)
        assert len(nodes) == 2, nodes  # one per call
        assert nodes[0].input_tensors[0] is a and nodes[1].output_tensors[0] is outputs[1]


def test_nodes_by_depth():
    import keras

    with entry("nodes_by_depth"):
        model = _tiny_model()
        by_depth = _compat.nodes_by_depth(model)
        assert isinstance(by_depth, dict) and all(isinstance(d, int) for d in by_depth)
        ops = {node.operation.name for nodes in by_depth.values() for node in nodes}
        assert {"dense", "head"} <= ops, ops
        head_node = next(n for nodes in by_depth.values() for n in nodes if n.operation.name == "head")
        assert head_node.input_tensors[0] is model.get_layer("dense").output
        assert isinstance(head_node.output_tensors[0], keras.KerasTensor)


def test_producer_node():
    import keras

    with entry("producer_node"):
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(3, name="dense")(inputs)
        node = _compat.producer_node(hidden)
        assert node.operation.name == "dense" and node.input_tensors[0] is inputs
        assert node.output_tensors[0] is hidden
        assert _compat.producer_node(np.zeros(3)) is None


# -- losses -----------------------------------------------------------------------


def test_reduce_weighted_values():
    from keras import ops

    with entry("reduce_weighted_values"):
        losses = ops.convert_to_tensor([1.0, 2.0, 3.0, 4.0])
        weights = ops.convert_to_tensor([1.0, 0.0, 1.0, 0.0])
        mean = _compat.reduce_weighted_values(losses, weights, "sum_over_batch_size")
        total = _compat.reduce_weighted_values(losses, None, "sum")
        np.testing.assert_allclose(float(mean), 1.0)  # (1 + 3) / 4: divides by the batch size
        np.testing.assert_allclose(float(total), 10.0)


def test_aggregate_additional_loss():
    from keras import ops

    with entry("aggregate_additional_loss"):
        model = _tiny_model()
        total = _compat.aggregate_additional_loss(model, ops.convert_to_tensor([1, 2, 3], "int32"))
        assert "float32" in str(total.dtype), total.dtype  # cast to floatx
        np.testing.assert_allclose(float(total), 6.0)  # summed; one replica: no scaling


# -- weight EMA -------------------------------------------------------------------


def test_ema_pairs_and_averages():
    with entry("ema_pairs"):
        model = _compiled_with_ema()
        pairs = _compat.ema_pairs(model.optimizer)
        assert len(pairs) == len(model.trainable_variables) == 4
        for (variable, average), trainable in zip(pairs, model.trainable_variables):
            assert variable is trainable and tuple(average.shape) == tuple(variable.shape)
    with entry("ema_averages"):
        assert [a for _, a in pairs] == list(_compat.ema_averages(model.optimizer))
    with entry("optimizer_strategy"):
        import tensorflow as tf

        strategy = _compat.optimizer_strategy(model.optimizer)
        assert strategy is None or isinstance(strategy, tf.distribute.Strategy), strategy


def test_keras_ema_update():
    import keras

    calls = []

    class Recording(keras.optimizers.SGD):
        def _update_model_variables_moving_average(self, trainable_variables):
            calls.append(len(trainable_variables))
            return _compat.keras_ema_update(super(), trainable_variables)

    with entry("keras_ema_update"):
        model = _tiny_model()
        model.compile(optimizer=Recording(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
        model.fit(np.ones((4, 4), "float32"), np.ones((4, 2), "float32"), epochs=1, batch_size=4, verbose=0)
        assert calls, "Keras no longer calls _update_model_variables_moving_average"
        for variable, average in _compat.ema_pairs(model.optimizer):
            assert np.all(np.isfinite(average.numpy())) and average.shape == variable.shape


def test_swap_ema_weights():
    import keras

    from keras_skipblock.training.callbacks import SwapEMAWeights

    for swapper_class in (keras.callbacks.SwapEMAWeights, SwapEMAWeights):
        with entry("swap_ema_weights"):
            model = _compiled_with_ema()
            pairs = _compat.ema_pairs(model.optimizer)
            for i, (variable, average) in enumerate(pairs):
                variable.assign(np.full(variable.shape, i, "float32"))
                average.assign(np.full(average.shape, 10 + i, "float32"))
            swapper = swapper_class()
            swapper.set_model(model)
            _compat.swap_ema_weights(swapper)
            for i, (variable, average) in enumerate(pairs):  # exchanged exactly
                np.testing.assert_array_equal(variable.numpy(), np.full(variable.shape, 10 + i))
                np.testing.assert_array_equal(average.numpy(), np.full(average.shape, i))


def test_overridden_hooks():
    import keras

    expected = {"_tf_swap_variables": ["self", "optimizer"], "_save_model": ["self", "epoch", "batch", "logs"],
                "_update_model_variables_moving_average": ["self", "trainable_variables"]}
    for path, hooks in _compat.OVERRIDDEN_HOOKS.items():
        cls = keras
        for part in path.split(".")[1:]:
            cls = getattr(cls, part)
        for hook in hooks:
            with entry(f"OVERRIDDEN_HOOKS[{path!r}] {hook}"):
                assert callable(getattr(cls, hook, None)), f"{path}.{hook} is gone"
                assert list(inspect.signature(getattr(cls, hook)).parameters) == expected[hook]

    # ...and Keras still calls them where we rely on it.
    calls = []

    class Swap(keras.callbacks.SwapEMAWeights):
        def _tf_swap_variables(self, optimizer):
            calls.append("_tf_swap_variables")
            return super()._tf_swap_variables(optimizer)

    class Checkpoint(keras.callbacks.ModelCheckpoint):
        def _save_model(self, epoch, batch, logs):
            calls.append("_save_model")

    with entry("OVERRIDDEN_HOOKS (Keras calls them)"):
        model = _compiled_with_ema()
        swap = Swap()
        swap.set_model(model)
        _compat.swap_ema_weights(swap)
        model.fit(np.ones((4, 4), "float32"), np.ones((4, 2), "float32"), epochs=1, verbose=0,
                  callbacks=[Checkpoint("unused.keras")])
        assert calls == ["_tf_swap_variables", "_save_model"], calls


# -- checkpoints and resuming -----------------------------------------------------


def test_checkpoint_file_path_and_should_save(tmp_path):
    import keras

    decisions = []

    class Checkpoint(keras.callbacks.ModelCheckpoint):  # as EMAModelCheckpoint uses them
        def _save_model(self, epoch, batch, logs):
            path = _compat.checkpoint_file_path(self, epoch, batch, logs)
            decisions.append((path, _compat.checkpoint_should_save(self, epoch, batch, logs, path)))

    with entry("checkpoint_file_path / checkpoint_should_save"):
        checkpoint = Checkpoint(str(tmp_path / "{epoch:02d}.keras"), monitor="loss", mode="min",
                                save_best_only=True)
        checkpoint.set_model(_tiny_model())
        for epoch, loss in enumerate((1.0, 2.0, 0.5)):
            checkpoint.on_epoch_end(epoch, {"loss": loss})
    with entry("checkpoint_file_path"):
        paths = [path for path, _ in decisions]
        assert paths == [str(tmp_path / f"0{e}.keras") for e in (1, 2, 3)], paths  # epochs from 1
    with entry("checkpoint_should_save"):
        assert [save for _, save in decisions] == [True, False, True], decisions  # only improvements


def test_backup_files_and_set_initial_epoch(tmp_path):
    import keras

    with entry("backup_files"):
        backup = keras.callbacks.BackupAndRestore(str(tmp_path), double_checkpoint=True,
                                                  delete_checkpoint=False)
        files = _compat.backup_files(backup)
        assert len(files) == 2 and all(len(pair) == 2 for pair in files)
        model = _tiny_model()
        model.compile(optimizer="sgd", loss="mse")
        x, y = np.ones((4, 4), "float32"), np.ones((4, 2), "float32")
        model.fit(x, y, epochs=2, verbose=0, callbacks=[backup])
        for path in (p for pair in files for p in pair):  # both backups written where it says
            assert pathlib.Path(path).is_file() and str(tmp_path) in path, path

    class StartAt(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            _compat.set_initial_epoch(self.model, 2)

    with entry("set_initial_epoch"):
        model = _tiny_model()
        model.compile(optimizer="sgd", loss="mse")
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[StartAt()])
        assert history.epoch == [2], history.epoch  # fit continued at epoch 2


# -- tf.distribute ----------------------------------------------------------------


def test_coordination_service():
    import tensorflow as tf

    with entry("coordination_service_configured"):
        assert _compat.coordination_service_configured() is False  # nothing configured in this process
    with entry("configure_coordination_service"):
        # Configuring it would tie this process to a cluster; the multi_worker test runs it for real.
        # Here: every name it uses exists and takes what it passes.
        coordination_config_pb2 = _compat.coordination_config_protos()
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context

        cluster = tf.train.ClusterSpec({"chief": ["a:1"], "worker": ["b:1", "c:1"]})
        assert multi_worker_util.coordination_leader(cluster) == "/job:chief/replica:0/task:0"
        job = coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=2)
        assert (job.name, job.num_tasks) == ("worker", 2)
        parameters = inspect.signature(context.context().configure_coordination_service).parameters
        assert {"service_type", "service_leader", "coordinated_jobs", "heartbeat_timeout_in_ms"} <= set(parameters)


# -- conversion and LiteRT --------------------------------------------------------


def test_convert_variables_to_constants_v2():
    import tensorflow as tf

    with entry("convert_variables_to_constants_v2"):
        weight = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec((2,), tf.float32)])
        def scale(x):
            return x * weight

        frozen = _compat.convert_variables_to_constants_v2(scale.get_concrete_function())
        assert not frozen.variables and not frozen.graph.variables  # frozen: no variables left
        np.testing.assert_allclose(frozen(tf.constant([1.0, 2.0]))[0].numpy(), [3.0, 6.0])


def test_keras_tensorflow_nn():
    import keras
    from keras import ops

    with entry("keras_tensorflow_nn"):
        tf_nn = _compat.keras_tensorflow_nn()
        assert tf_nn is not None, "the tensorflow backend's nn module was not found"
        calls = []
        saved = tf_nn.hard_silu, tf_nn.average_pool
        tf_nn.hard_silu = lambda x: calls.append("hard_silu") or saved[0](x)
        tf_nn.average_pool = lambda *args, **kwargs: calls.append("average_pool") or saved[1](*args, **kwargs)
        try:  # keras.ops dispatches through the module's attributes, so a replacement is traced
            ops.hard_silu(np.ones((1, 2, 2, 1), "float32"))
            keras.layers.AveragePooling2D(2)(np.ones((1, 2, 2, 1), "float32"))
        finally:
            tf_nn.hard_silu, tf_nn.average_pool = saved
        assert calls == ["hard_silu", "average_pool"], calls


def test_interpreter_ops_details():
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    with entry("interpreter_ops_details"):
        @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
        def f(x):
            return tf.nn.relu(x + 1.0)

        flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()]).convert()
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        interpreter.allocate_tensors()
        details = _compat.interpreter_ops_details(interpreter)
        assert details and {"index", "op_name", "inputs", "outputs"} <= set(details[0]), details
        names = {op["op_name"] for op in details}
        assert names & {"ADD", "RELU", "DELEGATE"}, names


# -- the fence --------------------------------------------------------------------


def _sources():
    for directory in FENCED_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if path.name != "_compat.py" and ".venv" not in path.parts:
                yield path


def _own_private_names(trees):
    """Underscored names our own code defines (functions, classes, attributes, module globals)."""
    own = {"_replace", "_fields", "_asdict"}  # namedtuple's public API
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name) and node.value.id == "self"):
                own.add(node.attr)  # self._x = ...; not other objects' attributes (model._x = ...)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
    hooks = {hook for hooks in _compat.OVERRIDDEN_HOOKS.values() for hook in hooks}
    return own - hooks  # an override of a Keras hook does not make its name ours


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_api_outside_compat():
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in _sources()}
    own = _own_private_names(trees.values())
    found = []
    for path, tree in trees.items():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for module in modules:
                if module.startswith(("keras.src", "tensorflow.python", "tensorflow.compiler")):
                    found.append(f"{where}:{node.lineno}: import {module}")
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                # super()._hook(...) would bypass _compat even for a listed hook
                found.append(f"{where}:{node.lineno}: .{node.attr}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                    and _private(node.args[1].value) and node.args[1].value not in own):
                found.append(f"{where}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    assert not found, ("Private Keras/TF API used outside keras_skipblock/_compat.py; add an entry "
                       "there (with its reason and a test here) and call it:\n" + "\n".join(found))


def test_no_unlisted_override_of_a_keras_private_method():
    """A method of ours that shadows a private method of its Keras/TF base is a hook: it must be listed."""
    import keras

    bases = [keras.layers.Layer, keras.Model, keras.callbacks.Callback, keras.callbacks.ModelCheckpoint,
             keras.callbacks.BackupAndRestore, keras.callbacks.SwapEMAWeights, keras.optimizers.Optimizer,
             keras.optimizers.SGD, keras.optimizers.RMSprop, keras.losses.Loss, keras.metrics.Metric]
    hooks = {hook for hooks in _compat.OVERRIDDEN_HOOKS.values() for hook in hooks}
    unlisted = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if (isinstance(item, ast.FunctionDef) and _private(item.name) and item.name not in hooks
                            and any(hasattr(base, item.name) for base in bases)):
                        unlisted.append(f"{path.relative_to(ROOT)}:{item.lineno}: {node.name}.{item.name}")
    assert not unlisted, "Overrides of private Keras methods not in _compat.OVERRIDDEN_HOOKS:\n" + "\n".join(unlisted)
