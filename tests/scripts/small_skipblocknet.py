"""SkipblockNet's blocks (stem, inverted residual with squeeze-excite, skip
block with adaptive pooling, head) in a design of one stage: 63 variables,
where SkipblockNet-XS has 302 and MobileNetV3-Small 211.

For the tests that run the recipes' driver under a tf.distribute strategy in
another process (tests/scripts/multi_worker_train.py,
tests/test_distributed_training.py): there every variable is made per device
(under MultiWorkerMirroredStrategy also broadcast from the chief, eagerly, one
at a time), and the train step is traced per replica, so the variable count
set most of those tests' time. `install()` makes `registry.get_model`, which
the driver's `build_classifier` calls with the run's model flags translated,
build this design in place of a SkipblockNet.
"""

from keras_skipblock.models import registry, skipblocknet

SMALL = skipblocknet.Design(
    stem=8, stages=((skipblocknet.Block(3, 2, 16, True, skipblocknet.HS, 2),),),
    skips=(skipblocknet.Skip(1, 3, 2),), head=None, last_point=32, width=1.0)


def get_model(name, input_shape, num_classes, **kwargs):
    if not name.startswith("skipblocknet_"):
        raise ValueError(f"small_skipblocknet stands in for a SkipblockNet, not {name!r}")
    return skipblocknet.SkipblockNet(SMALL, input_shape, num_classes, name=f"small_{name}", **kwargs)


def install():
    registry.get_model = get_model
