"""Every private Keras / TensorFlow / LiteRT API the package uses, in one place.

Each entry says why no public API does the job. tests/test_compat.py checks
each one (it exists, and behaves as we rely on) and fails naming the entry
when a release changes it; it also checks that no other module of the
package or its scripts uses a private API. Tested with keras 3.15.1,
tensorflow 2.21.0, ai-edge-litert 2.3.0.

Only keras is imported here; TensorFlow internals are imported inside the
functions, so that `import keras_skipblock` stays as light as it was.
"""

# -- hooks we override (a subclass must use Keras' own private names) ------------

# {Keras class path: private methods our subclasses override}; test_compat
# checks that Keras still defines and calls them.
OVERRIDDEN_HOOKS = {
    # the EMA swap runs as one compiled function (training/callbacks.py)
    "keras.callbacks.SwapEMAWeights": ("_tf_swap_variables",),
    # the checkpoint saves the EMA weights (training/callbacks.py)
    "keras.callbacks.ModelCheckpoint": ("_save_model",),
    # the EMA decay warms up (training/optimizers.py)
    "keras.optimizers.Optimizer": ("_update_model_variables_moving_average",),
}


# -- layers and graphs ------------------------------------------------------------


def flatten_layers(layer, include_self=False):
    """Every layer inside `layer`, recursively (nested models and the sublayers of custom layers)."""
    # Why private: Model.layers is one level only, and a plain Layer has no public list of its sublayers.
    return list(layer._flatten_layers(include_self=include_self))


def inbound_nodes(layer):
    """The graph nodes where `layer` was called (one per call)."""
    # Why private: Keras 3 has no public accessor for a layer's nodes (Keras 2's `inbound_nodes` is gone).
    return layer._inbound_nodes


def producer_node(tensor):
    """The graph node that wrote a symbolic KerasTensor (None for a model input's placeholder or
    any other value)."""
    # Why private: Keras 3 records a KerasTensor's producer only in `_keras_history`.
    history = getattr(tensor, "_keras_history", None)
    if history is None or history[0] is None:
        return None
    operation, node_index = history[0], history[1]
    return operation._inbound_nodes[node_index]


def nodes_by_depth(model):
    """{depth: [node, ...]} of a functional model's own graph."""
    # Why private: a functional model exposes its layers publicly, not the nodes (calls) of its graph.
    return model._nodes_by_depth


# -- losses -----------------------------------------------------------------------


def reduce_weighted_values(losses, sample_weight, reduction):
    """Keras' own weighting and reduction of per-sample losses."""
    # Why private: the public Loss classes apply it only to their own call(); per-sample losses
    # computed elsewhere (BiasLoss) need it bare to keep sample_weight and distribution scaling identical.
    from keras.src.losses.loss import reduce_weighted_values as reduce

    return reduce(losses, sample_weight=sample_weight, reduction=reduction)


def aggregate_additional_loss(model, loss):
    """A `model.losses` term as Keras' compute_loss adds it (summed, floatx, scaled for tf.distribute)."""
    # Why private: overriding compute_loss drops Keras' handling of model.losses; this is that handling.
    return model._aggregate_additional_loss(loss)


# -- weight EMA -------------------------------------------------------------------


def optimizer_strategy(optimizer):
    """The tf.distribute strategy the optimizer's variables were made under (None: the current one)."""
    # Why private: Keras optimizers do not expose the strategy they captured at build.
    return optimizer._distribution_strategy


def ema_pairs(optimizer):
    """[(trainable variable, its moving average)] of a built optimizer with use_ema."""
    # Why private: the averages are public only as unnamed entries of optimizer.variables.
    return list(zip(optimizer._trainable_variables, optimizer._model_variables_moving_average))


def ema_averages(optimizer):
    """The optimizer's moving averages, one per trainable variable (None where not trainable)."""
    # Why private: as ema_pairs; needed inside our _update_model_variables_moving_average override.
    return optimizer._model_variables_moving_average


def keras_ema_update(parent, trainable_variables):
    """Keras' own EMA update; `parent` is `super()` inside an optimizer subclass."""
    # Why private: the EMA update is a private hook of keras.optimizers.Optimizer (OVERRIDDEN_HOOKS).
    return parent._update_model_variables_moving_average(trainable_variables)


def swap_ema_weights(swapper):
    """Swap the model's weights with the optimizer's averages (a keras.callbacks.SwapEMAWeights, model set)."""
    # Why private: SwapEMAWeights swaps only from its own on_test_begin/on_epoch_end hooks.
    swapper._swap_variables()


# -- checkpoints and resuming -----------------------------------------------------


def checkpoint_file_path(checkpoint, epoch, batch, logs):
    """The file a keras.callbacks.ModelCheckpoint would write now (its filepath formatted)."""
    # Why private: ModelCheckpoint formats its filepath template only internally.
    return checkpoint._get_file_path(epoch, batch, logs)


def checkpoint_should_save(checkpoint, epoch, batch, logs, path):
    """Whether a ModelCheckpoint saves now (save_best_only: the monitor improved; updates its best)."""
    # Why private: the best-so-far decision is internal to ModelCheckpoint.
    return checkpoint._should_save_model(epoch, batch, logs, path)


def backup_files(backup):
    """((weights, metadata) of the latest backup, (weights, metadata) of the previous one)
    of a keras.callbacks.BackupAndRestore."""
    # Why private: BackupAndRestore does not expose where it writes inside backup_dir.
    return ((backup._weights_path, backup._training_metadata_path),
            (backup._prev_weights_path, backup._prev_training_metadata_path))


def set_initial_epoch(model, epoch):
    """Make the running fit() continue at `epoch` (what BackupAndRestore does on restore)."""
    # Why private: fit() reads this attribute; its initial_epoch argument is fixed before callbacks run.
    model._initial_epoch = epoch


# -- tf.distribute ----------------------------------------------------------------


def coordination_service_configured():
    """Whether TF's coordination service is already configured in this process."""
    # Why private: the eager context (tensorflow.python.eager) has no public view of the service.
    from tensorflow.python.eager import context

    return context.context().coordination_service is not None


def coordination_config_protos():
    """TF's coordination_config_pb2 module (CoordinatedJob)."""
    # Why private: the proto is not exported; TF 2.18 moved it from tsl/ to compiler/xla/tsl/.
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    except ImportError:  # TF 2.17
        from tensorflow.tsl.protobuf import coordination_config_pb2
    return coordination_config_pb2


def configure_coordination_service(cluster, heartbeat_timeout_ms):
    """Configure the coordination service for `cluster` (a tf.train.ClusterSpec) as TF's
    MultiWorkerMirroredStrategy does (same leader, chief and worker jobs), with our heartbeat timeout."""
    # Why private: the strategy takes no timeout, and only the eager context can configure the service.
    coordination_config_pb2 = coordination_config_protos()
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ("chief", "worker") if job in cluster.jobs],
        heartbeat_timeout_in_ms=int(heartbeat_timeout_ms),
    )


# -- conversion and LiteRT --------------------------------------------------------


def convert_variables_to_constants_v2(concrete_function):
    """`concrete_function` with its variables frozen into constants."""
    # Why private: TF has no public freezing; the LiteRT converter keeps resource variables, which
    # int8 calibration cannot read.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2 as freeze

    return freeze(concrete_function)


def keras_tensorflow_nn():
    """The module of Keras' TensorFlow backend whose functions keras.ops.nn calls
    (hard_silu, average_pool, ...), or None when another backend is in use."""
    # Why private: the only way to trace a Keras op as a different TF graph is to replace it there.
    from keras.src import backend
    from keras.src.backend.tensorflow import nn as tf_nn

    if backend.backend() != "tensorflow" or backend.nn is not tf_nn:
        return None
    return tf_nn


def interpreter_ops_details(interpreter):
    """[{"index", "op_name", "inputs", "outputs", ...}] of an allocated LiteRT Interpreter's nodes,
    delegate nodes included."""
    # Why private: the only view LiteRT gives of the nodes after delegation.
    return interpreter._get_ops_details()
