"""Quiet TensorFlow for the scripts: no INFO lines from its C++ core, the
TFLite converter, LiteRT or absl unless asked for (`--verbose`); warnings,
errors and tracebacks unchanged.

TensorFlow honours `TF_CPP_MIN_LOG_LEVEL` for most of its C++ logging, but
not for lines logged before absl is initialised, while TensorFlow is
imported (tensorflow/tensorflow#100442), nor for the lines the converter and
LiteRT print straight to stderr. `native_info_filtered` catches those at the
file-descriptor level around the calls that print them. This module imports
only the standard library, so it can run before TensorFlow is imported.
"""

import contextlib
import os
import re
import sys
import tempfile

# INFO lines printed on file descriptor 2, bypassing Python's logging:
INFO_LINE = re.compile(
    r"^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "  # C++ INFO (before absl is set up: 00:00:<epoch>)
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I "  # older TSL INFO format
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"  # about the above
    r"|INFO: "  # LiteRT / TFLite runtime ("Created TensorFlow Lite XNNPACK delegate")
    r"|fully_quantize: \d+, inference_type: \d+"  # the converter's calibration
    r")"
)


def info_hidden():
    """Whether INFO lines are unwanted: TF_CPP_MIN_LOG_LEVEL set above 0."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() not in ("", "0")


def configure_logging(verbose=False):
    """Python-side logging of a script: absl's and TensorFlow's INFO records
    only when verbose (absl's `app.run` turns them on by default). Call after
    the flags are parsed; set TF_CPP_MIN_LOG_LEVEL ("0" when verbose) before
    TensorFlow is imported."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)


@contextlib.contextmanager
def native_info_filtered():
    """Within the block, file descriptor 2 goes to a temporary file; after
    it, its lines go to stderr less the INFO ones, or all of them if the
    block raised. Does nothing unless `info_hidden()`."""
    if not info_hidden():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = lines if failed else [line for line in lines if not INFO_LINE.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
