"""Check every float-equality bound of the test suite against float32-level
perturbation, as another CPU's kernels would perturb the computation.

    .venv/bin/python tools/check_tolerances.py                 # every condition, ~40 min on 2 cores
    .venv/bin/python tools/check_tolerances.py --eps=0,2^-20 --onednn=1 --threads=2

Reruns each test that asserts through `tests/tolerances.py` (`assert_close`,
`assert_ratio`) with KS_PERTURB_EPS set: the tests multiply the inputs and
weights of the side under test by (1 + eps U[-1, 1]). Each condition (eps x
oneDNN on/off x thread count) runs in its own pytest process, because
TensorFlow reads its settings at start-up. The tests only record the ratio
error / bound there (KS_TOLERANCE_RECORD_ONLY), so a bound that breaks still
shows by how much. Prints, per assertion, the worst ratio under each eps and
checks the rule of tests/TOLERANCES.md: ratio <= 1/3 at eps = 2^-23 and <= 1 at
2^-20. Exit status 1 when a bound breaks the rule.
"""

import ast
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULE = {2.0 ** -23: 1 / 3, 2.0 ** -20: 1.0}  # eps -> largest allowed error / bound

flags.DEFINE_list("eps", ["0", "2^-23", "2^-20"], "Perturbation sizes ('2^-k' or a float).")
flags.DEFINE_list("onednn", ["0", "1"], "TF_ENABLE_ONEDNN_OPTS values.")
flags.DEFINE_list("threads", ["1", "2"], "TF intra/inter-op thread counts.")
flags.DEFINE_string("k", None, "Only tests whose id contains this (pytest -k).")
FLAGS = flags.FLAGS


def _eps(text):
    return 2.0 ** float(text[2:]) if text.startswith("2^") else float(text)


def tolerance_tests():
    """Node ids of the test functions that call assert_close / assert_ratio."""
    ids = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "test_*.py"))):
        tree = ast.parse(open(path).read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                calls = {n.func.id for n in ast.walk(node)
                         if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
                if calls & {"assert_close", "assert_ratio"}:
                    ids.append(f"{os.path.relpath(path, ROOT)}::{node.name}")
    return ids


def run_condition(tests, eps, onednn, threads, log):
    env = dict(os.environ, KS_PERTURB_EPS=repr(eps), KS_TOLERANCE_RECORD_ONLY="1",
               KS_TOLERANCE_LOG=log, TF_ENABLE_ONEDNN_OPTS=onednn, TF_NUM_INTRAOP_THREADS=threads,
               TF_NUM_INTEROP_THREADS=threads, OMP_NUM_THREADS=threads, CUDA_VISIBLE_DEVICES="")
    # -n 0: one process (pytest.ini's xdist workers would share the log and the thread setting).
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-m", "not multi_worker",
               *(["-k", FLAGS.k] if FLAGS.k else []), *tests]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    return result.returncode, result.stdout.strip().splitlines()[-1:]


def main(_):
    tests = tolerance_tests()
    epsilons = [_eps(e) for e in FLAGS.eps]
    worst = collections.defaultdict(dict)  # (test, what) -> {eps: worst ratio}
    failed_runs = []
    for eps in epsilons:
        for onednn in FLAGS.onednn:
            for threads in FLAGS.threads:
                condition = f"eps={eps:.3g} oneDNN={onednn} threads={threads}"
                print(f"# {condition}: {len(tests)} tests", file=sys.stderr, flush=True)
                with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as log:
                    status, tail = run_condition(tests, eps, onednn, threads, log.name)
                    rows = [json.loads(line) for line in log]
                print(f"  {len(rows)} bounds checked; pytest: {' '.join(tail)}", file=sys.stderr, flush=True)
                if status:  # another assertion failed under perturbation (an argmax, say)
                    failed_runs.append(f"{condition}: {' '.join(tail)}")
                for row in rows:
                    key = (row["test"], row["what"])
                    worst[key][eps] = max(worst[key].get(eps, 0.0), row["ratio"])
    names = {key: f"{key[0].split('tests/')[-1]} :: {key[1]}" for key in worst}
    width = max(map(len, names.values()), default=12) + 2
    header = "".join(f"{'eps=' + format(e, '.2g'):>13}" for e in epsilons)
    print(f"\n{'test :: what':<{width}}{header}  rule")
    broken = 0
    for (test, what), by_eps in sorted(worst.items()):
        ok = all(by_eps.get(e, 0.0) <= limit for e, limit in RULE.items() if e in by_eps)
        broken += not ok
        cells = "".join(f"{by_eps[e]:>13.3g}" if e in by_eps else f"{'-':>13}" for e in epsilons)
        print(f"{names[(test, what)]:<{width}}{cells}  {'ok' if ok else 'BROKEN'}")
    overall = {e: max(v.get(e, 0.0) for v in worst.values()) for e in epsilons}
    print("\nworst error/bound: " + ", ".join(f"eps={e:.3g}: {r:.3g}" for e, r in overall.items()))
    print(f"{len(worst)} bounds, {broken} break the rule (<= 1/3 at 2^-23, <= 1 at 2^-20); "
          f"conditions: oneDNN {'/'.join(FLAGS.onednn)} x threads {'/'.join(FLAGS.threads)}")
    for line in failed_runs:
        print(f"pytest failed under {line}")
    return 1 if broken or failed_runs else 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
