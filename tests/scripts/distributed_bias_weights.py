"""Run under 2 logical CPU devices: BiasLoss weights and running minimum under
MirroredStrategy must equal those of one device seeing the global batch.

Prints one JSON line; tests/test_distributed.py checks it. A separate process
because logical devices must be configured before TensorFlow starts. The
optional argument is the seed (tools/measure_thresholds.py varies it)."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import keras_skipblock as ks  # noqa: E402

keras.utils.set_random_seed(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
rng = np.random.default_rng(0)
# The two halves have very different spreads: per-replica min/max would differ.
scales = np.concatenate([np.linspace(0.1, 0.5, 4), np.linspace(1.0, 3.0, 4)])
features = (rng.normal(size=(8, 3, 3, 4)) * scales[:, None, None, None]).astype("float32")
logits = rng.normal(size=(8, 5)).astype("float32")
labels = rng.integers(0, 5, size=8).astype("int32")

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
loss = ks.BiasLoss(normalization="global", clamp=None)
running_min = np.float32(0.5)  # above the first half's variances: the gather must lower it


halves = strategy.experimental_distribute_values_from_function(
    lambda ctx: tf.constant(features[4 * ctx.replica_id_in_sync_group:][:4]))


@tf.function
def replica_fn(half):
    bias = loss.bias_weights(half, running_min)
    return bias.weights, bias.variance_min


weights, mins = strategy.run(replica_fn, args=(halves,))
distributed = np.concatenate([w.numpy() for w in strategy.experimental_local_results(weights)])
replica_mins = [float(m) for m in strategy.experimental_local_results(mins)]
single = loss.bias_weights(features, running_min)

# End to end: fit under the strategy keeps one running minimum for all replicas.
with strategy.scope():
    inputs = keras.Input((3, 3, 4))
    x = keras.layers.Conv2D(4, 1, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = ks.with_features(keras.Model(inputs, keras.layers.Dense(5)(pooled)))
    model.compile(optimizer="sgd", loss=ks.BiasLoss(normalization="global"))
history = model.fit(features, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
expected_min = float(ks.sample_variance(model.get_layer("conv")(features)).numpy().min())

print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "distributed": distributed.tolist(),
    "single": single.weights.numpy().tolist(),
    "replica_mins": replica_mins,
    "single_min": float(single.variance_min),
    "fit_loss": history.history["loss"][0],
    "fit_min": float(keras.ops.convert_to_numpy(model.bias_loss_variance_min.value.read_value())),
    "fit_expected_min_upper": expected_min,
}))
