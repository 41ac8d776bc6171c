"""Float tolerances for the tests: one error model, one assertion, and the
perturbation hooks that `tools/check_tolerances.py` turns on.

Error model. Two float32 evaluations of the same function (another CPU's
kernels, another accumulation order, an algebraically equal composition such
as folded vs separate input scaling) differ by rounding. Each operation
commits a relative error of a few u = 2^-24; a computation carries those
errors to its output amplified by its sensitivity kappa (how much a relative
change of its inputs and weights changes its output). So a bound reads

    |actual - reference| <= rtol * (|reference| + rms(reference))

with rtol = kappa x (ulps per operation) x u. The rms term is there because an
element near zero inherits the absolute error of the large values summed into
it, not an error relative to itself. The rtol of each class of computation is
a constant below, with its kappa; `tools/check_tolerances.py` checks every
bound by rerunning the tests with inputs and weights multiplied by
(1 + eps*U[-1, 1]): with eps = 2^-23 (one rounding of every value) each bound
must hold 3x over, and with eps = 2^-20 (eight) it must still hold.
"""

import json
import os

import numpy as np

U = 2.0 ** -24  # float32 unit roundoff

# A handful of elementwise float32 ops (exp, log, clip, softmax) against float64 numpy: each
# op <= 2 u, inputs' condition <= ~20 (exp(a v) with |a v| <= 20): 20 x 8 ops x 2 u ~ 2e-5.
ELEMENTWISE_RTOL = 4e-5
# Reductions over K <= 1e5 terms (means, variances, pooling windows): blocked summation
# grows as log2(K) u ~ 17 u; a variance near its mean squared loses up to ~1e2 more.
REDUCTION_RTOL = 1e-4
# A trained deep float32 network (SkipblockNet-M: 60+ conv layers, BatchNorm with small
# variances): kappa up to ~6e3, measured by perturbation (inputs and weights changed by 2^-20
# relative moved its features by <= 5.7e-3 (|ref| + rms)); two kernels' accumulation orders in
# its 960-term dot products differ by ~sqrt(960)/2 ~ 16 ulps: 6e3 x 16 u ~ 6e-3, x 2.7 for the
# 2^-20 envelope: 2^-6. A wrong input scaling or a pixel shift of padding moves it by ~1.
DEEP_NETWORK_RTOL = 2.0 ** -6
# A small network (a few conv/dense layers, or untrained keras.applications at 32x32):
# kappa <= ~50, same ulps per op: 50 x 8 x u = 2.4e-5, x 4 for the deepest of them.
SMALL_NETWORK_RTOL = 1e-4

PERTURB_EPS = float(os.environ.get("KS_PERTURB_EPS", "0"))
_RECORD_ONLY = os.environ.get("KS_TOLERANCE_RECORD_ONLY") == "1"
_LOG = os.environ.get("KS_TOLERANCE_LOG")
_rng = np.random.default_rng(int(os.environ.get("KS_PERTURB_SEED", "0")))


def rms(reference):
    return float(np.sqrt(np.mean(np.square(np.asarray(reference, "float64")))))


def perturbed(array):
    """`array` x (1 + eps U[-1, 1]) when a tolerance check is on; `array` itself otherwise.
    Apply it to the side under test: what another CPU would compute differently."""
    if not PERTURB_EPS:
        return array
    array = np.asarray(array)
    noise = 1.0 + PERTURB_EPS * _rng.uniform(-1.0, 1.0, array.shape)
    return (array * noise).astype(array.dtype)


def perturb_weights(model):
    """Multiplies every float weight of `model` in place by (1 + eps U[-1, 1]) when a tolerance
    check is on; returns the model."""
    if PERTURB_EPS:
        for variable in model.weights:
            if "float" in str(variable.dtype):
                variable.assign(perturbed(np.asarray(variable)))
    return model


def assert_close(actual, reference, rtol, atol=None, what=""):
    """|actual - reference| <= rtol * |reference| + atol elementwise, atol defaulting to
    rtol * rms(reference) (the error model above). Logs the worst error/bound ratio for
    tools/check_tolerances.py."""
    actual, reference = np.asarray(actual, "float64"), np.asarray(reference, "float64")
    assert actual.shape == reference.shape, (what, actual.shape, reference.shape)
    if atol is None:
        atol = rtol * rms(reference)
    ratios = np.abs(actual - reference) / np.maximum(rtol * np.abs(reference) + atol, np.finfo("float64").tiny)
    ratio = float(ratios.max()) if ratios.size else 0.0
    record(what, ratio)
    if not _RECORD_ONLY:
        worst = np.unravel_index(np.argmax(ratios), ratios.shape) if ratios.size else ()
        assert ratio <= 1.0, (
            f"{what}: |actual - reference| reaches {ratio:.3g}x its bound (rtol {rtol:g}, atol {atol:.3g}); "
            f"worst element {worst}: {actual[worst]!r} vs {reference[worst]!r}")


def assert_ratio(value, bound, what=""):
    """value <= bound, for tolerances that a library function computes (e.g. LiteRT's
    verification); logged like assert_close."""
    ratio = float(value) / float(bound)
    record(what, ratio)
    if not _RECORD_ONLY:
        assert ratio <= 1.0, f"{what}: {value:.3g} exceeds its bound {bound:.3g}"


def record(what, ratio):
    if _LOG:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
        with open(_LOG, "a") as log:
            log.write(json.dumps({"test": test, "what": what, "ratio": ratio, "eps": PERTURB_EPS}) + "\n")
