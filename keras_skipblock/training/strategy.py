"""tf.distribute strategies by name: default | mirrored | multi_worker | tpu."""

import tensorflow as tf

from keras_skipblock import _compat

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

# TF's coordination service declares a worker dead after 10 s without a
# heartbeat, and then aborts every worker: one stall that long (a loaded or
# paused machine) ended a CI run. A crashed worker is still detected at once,
# by its peers' refused connections (4 s measured); this bounds only a hang.
HEARTBEAT_TIMEOUT_S = 60


def get_strategy(name="default", tpu_address=None):
    """The strategy called `name`. Create it first thing in a program (before other TF work).

    - default: no distribution (one device).
    - mirrored: one machine, all its GPUs; with no GPU, all logical CPU
      devices (e.g. made with `tf.config.set_logical_device_configuration`).
    - multi_worker: `MultiWorkerMirroredStrategy`, cluster from TF_CONFIG.
    - tpu: `TPUStrategy` on `tpu_address` ("" or None: the local TPU / Cloud
      TPU VM, or the TPU named in the environment).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        configure_heartbeat_timeout(HEARTBEAT_TIMEOUT_S)
        return MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; use one of {STRATEGIES}.")


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """TF's MultiWorkerMirroredStrategy with the `reduce` that Keras 3 expects.

    Keras 3 `fit` calls `reduce` on the first (x, y) batch in one call, and
    on scalar step logs with `axis=0`; TF's collective strategy takes one
    value at a time and no axis on a scalar ("Attempt to convert a value
    (PerReplica...)", keras-team/keras#20585). Here each part of a nested
    value is reduced on its own, and a scalar across replicas only.
    """

    def reduce(self, reduce_op, value, axis):
        reduce_one = super().reduce

        def reduce_part(part):
            local = self.experimental_local_results(part)[0]
            scalar = len(getattr(local, "shape", ())) == 0
            return reduce_one(reduce_op, part, None if scalar else axis)

        return tf.nest.map_structure(reduce_part, value)


def configure_heartbeat_timeout(seconds):
    """Set the heartbeat timeout of the coordination service of the cluster in
    TF_CONFIG, configured as TF's MultiWorkerMirroredStrategy does (same
    leader and jobs) but for the timeout, for which it has no argument.
    Call before the strategy is made; does nothing with fewer than 2 workers
    or when the service is already configured."""
    cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    if _worker_count(cluster.as_dict()) < 2 or _compat.coordination_service_configured():
        return
    _compat.configure_coordination_service(cluster, int(seconds * 1000))


def _worker_count(cluster):
    """Training processes (chief and workers) in a cluster dict."""
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief(strategy):
    """Whether this worker should write summaries and checkpoints of its own."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def is_multi_worker(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy over more than one worker process."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return _worker_count(strategy.cluster_resolver.cluster_spec().as_dict()) > 1
