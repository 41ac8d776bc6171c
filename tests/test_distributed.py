"""BiasLoss under tf.distribute on 2 logical CPU devices (in a subprocess)."""

import json
import os
import subprocess
import sys

import numpy as np
from tolerances import ELEMENTWISE_RTOL, assert_close

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "distributed_bias_weights.py")
# |fit_min / post-step minimum - 1| after one SGD step: seeds 0-4 x oneDNN 0/1 x
# default/1 thread: 0.002-0.007 (n=20; up to 0.012 in 6 unseeded runs). The minimum
# of the replica holding the wide half (scales 1-3 against 0.1-0.5) would be ~100x off.
FIT_MIN_RTOL = 0.2


def test_mirrored_weights_equal_single_device_weights():
    result = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    # the same variances and elementwise ops on other batch shapes (tests/tolerances.py)
    assert_close(out["distributed"], out["single"], ELEMENTWISE_RTOL, what="bias weights")
    # Every replica agrees on the global minimum (one device's view of the batch).
    assert out["replica_mins"] == [out["single_min"]] * 2
    assert out["single_min"] < 0.5
    assert np.isfinite(out["fit_loss"])
    # After one SGD step the features moved slightly; the running minimum is the
    # global-batch minimum seen during the step, close to the post-step one.
    assert np.isfinite(out["fit_min"]) and out["fit_min"] > 0
    np.testing.assert_allclose(out["fit_min"], out["fit_expected_min_upper"], rtol=FIT_MIN_RTOL)
