"""Instructions per LiteRT inference, counted by valgrind: a latency proxy that
does not move with the load of a shared machine (timings here varied by
±15% between rounds), and a look inside XNNPACK (which kernels ran).

Each .tflite is run under `valgrind --tool=callgrind` twice, with 1 and with
5 `invoke()` calls after the same start-up; the difference / 4 is one
inference. Printed per file: instructions per inference in the LiteRT
runtime (the interpreter and XNNPACK; Python's own work between calls is
left out: numpy's idle BLAS threads spin a time-dependent amount), those in
XNNPACK (`xnn_*`), the ratios to the first file, and whether an
XNNPACK PAD operator ran (a zero PAD that XNNPACK folds into the next
convolution is defined but never created or run).

    python benchmarks/litert_instructions.py mv3l.tflite m_same.tflite m_symmetric.tflite

Needs valgrind (Debian: `apt-get install valgrind`). About 1 min per file on
2 cores (the two runs of a file go in parallel).
"""

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

from absl import app

# Runs under valgrind, so it imports only ai_edge_litert: keras_skipblock would import TensorFlow,
# minutes of start-up under callgrind. The files were opened with the package's runtime first.
INVOKE = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
x = np.random.default_rng(0).uniform(0, 1, detail["shape"]).astype(detail["dtype"])
interpreter.set_tensor(detail["index"], x)
for _ in range(int(sys.argv[2])):
    interpreter.invoke()
"""
FEW, MANY = 1, 5
FUNCTION_LINE = re.compile(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)")
PAD_OPERATOR = re.compile(r"xnn_(create|setup|reshape|run)_constant_pad|pad_ukernel")


def per_function(callgrind_out):
    """{function: instructions} from a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", callgrind_out],
                          capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    for line in text.splitlines():
        match = FUNCTION_LINE.match(line)
        if match and "PROGRAM TOTALS" not in match.group(2):
            counts[match.group(2)] += int(match.group(1).replace(",", ""))
    return counts


def count(path, workdir):
    """Per-inference {function: instructions} of one .tflite."""
    script = os.path.join(workdir, "invoke.py")
    with open(script, "w") as f:
        f.write(INVOKE)
    outputs, runs = {}, []
    for calls in (FEW, MANY):
        outputs[calls] = os.path.join(workdir, f"callgrind.{os.path.basename(path)}.{calls}")
        runs.append(subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outputs[calls]}",
             sys.executable, script, path, str(calls)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, OPENBLAS_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")))
    for run in runs:
        _, errors = run.communicate()
        if run.returncode:
            raise SystemExit(f"valgrind failed on {path}:\n{errors[-2000:]}")
    few, many = per_function(outputs[FEW]), per_function(outputs[MANY])
    return {name: (many[name] - few[name]) / (MANY - FEW) for name in set(few) | set(many)}


def main(argv):
    from keras_skipblock import validation
    from keras_skipblock.litert.runtime import open_interpreter

    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more .tflite files; ratios are to the first")
    for path in paths:
        validation.check_tflite_file("file", path)
    if not shutil.which("valgrind"):
        raise validation.InputError("valgrind is not installed (Debian: apt-get install valgrind).")
    for path in paths:  # a file LiteRT cannot load fails here, in one line, not under valgrind
        open_interpreter(path)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for path in paths:
            functions = count(os.path.abspath(path), workdir)
            total = sum(v for name, v in functions.items() if "ai_edge_litert" in name)
            xnnpack = sum(v for name, v in functions.items() if "xnn_" in name)
            pad_ran = any(PAD_OPERATOR.search(name) and v > 0 for name, v in functions.items())
            rows.append((os.path.basename(path), total, xnnpack, pad_ran))
            print(f"{path}: {total:,.0f} LiteRT instructions per inference", file=sys.stderr, flush=True)
    first_total, first_xnnpack = rows[0][1], rows[0][2]
    print("| file | LiteRT instructions / inference | of which XNNPACK | × first (LiteRT) | "
          "× first (XNNPACK) | XNNPACK PAD operator ran |")
    print("|---|---|---|---|---|---|")
    for name, total, xnnpack, pad_ran in rows:
        print(f"| {name} | {total:,.0f} | {xnnpack:,.0f} | {total / first_total:.4f} | "
              f"{xnnpack / first_xnnpack:.4f} | {'yes' if pad_ran else 'no'} |")


if __name__ == "__main__":
    from keras_skipblock.validation import run_cli

    run_cli(main)
