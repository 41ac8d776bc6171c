"""Markdown tables from experiments/ablation.py's JSON.

    python experiments/report.py docs/ablation.json > /tmp/tables.md

Accuracy: test top-1 (%) mean ± sample std (n seeds) per (architecture,
loss); paired differences by seed; the Table 5 variance statistics averaged
over seeds (avg = mean over seeds of the per-seed mean; max / min = mean
over seeds of the per-seed max / min).
"""

import argparse
import json
import statistics

ARCH_NAMES = {"noskip": "SkipblockNet without skip blocks", "skip": "SkipblockNet"}
LOSS_NAMES = {"ce": "CE", "focal": "focal", "bias": "bias loss"}


def _ms(values, scale=100.0, digits=2):
    values = [v * scale for v in values]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)})"


def _cell(runs, arch, loss, key="test_top1"):
    return {r["seed"]: r[key] for r in runs if r["arch"] == arch and r["loss"] == loss}


def accuracy_tables(data):
    runs = data["runs"]
    archs = [a for a in ARCH_NAMES if any(r["arch"] == a for r in runs)]
    losses = [l for l in LOSS_NAMES if any(r["loss"] == l for r in runs)]
    out = ["| model | " + " | ".join(LOSS_NAMES[l] for l in losses) + " |",
           "|---|" + "---|" * len(losses)]
    for a in archs:
        out.append(f"| {ARCH_NAMES[a]} | "
                   + " | ".join(_ms(list(_cell(runs, a, l).values())) for l in losses) + " |")

    seeds = sorted({r["seed"] for r in runs})
    out += ["", "Per seed (test top-1 %):", "",
            "| model | loss | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|---|" + "---|" * len(seeds)]
    for a in archs:
        for l in losses:
            cell = _cell(runs, a, l)
            out.append(f"| {ARCH_NAMES[a]} | {LOSS_NAMES[l]} | "
                       + " | ".join(f"{cell[s] * 100:.2f}" if s in cell else "–" for s in seeds) + " |")

    out += ["", "Paired differences (percentage points, same seed = same data order):", "",
            "| comparison | mean ± std (n) | per seed |", "|---|---|---|"]

    def paired(name, first, second):
        common = sorted(set(first) & set(second))
        diffs = [first[s] - second[s] for s in common]
        if diffs:
            out.append(f"| {name} | {_ms(diffs)} | "
                       + ", ".join(f"{d * 100:+.2f}" for d in diffs) + " |")

    for a in archs:
        for l in ("bias", "focal"):
            if l in losses and "ce" in losses:
                paired(f"{ARCH_NAMES[a]}: {LOSS_NAMES[l]} − CE", _cell(runs, a, l), _cell(runs, a, "ce"))
        if "bias" in losses and "focal" in losses:
            paired(f"{ARCH_NAMES[a]}: bias loss − focal", _cell(runs, a, "bias"), _cell(runs, a, "focal"))
    if len(archs) == 2:
        for l in losses:
            paired(f"skip blocks − none, {LOSS_NAMES[l]}", _cell(runs, "skip", l), _cell(runs, "noskip", l))
    if {"skip", "noskip"} <= set(archs) and {"bias", "ce"} <= set(losses):
        paired("SkipblockNet + bias loss − no skip + CE (Table 3 corners)",
               _cell(runs, "skip", "bias"), _cell(runs, "noskip", "ce"))
    return "\n".join(out)


def variance_tables(data, losses=("ce", "bias", "focal")):
    runs = [r for r in data["runs"] if "variance" in r]
    if not runs:
        return "(no variance statistics recorded)"
    labels = [row["label"] for row in runs[0]["variance"]["rows"]]
    info = {row["label"]: row for row in runs[0]["variance"]["rows"]}
    out = ["Layers: " + "; ".join(
        f"{l} = conv #{info[l]['conv_index']} `{info[l]['layer']}` read at `{info[l]['read_at']}` "
        f"({'x'.join(map(str, info[l]['shape']))})" for l in labels) + ".", ""]
    out += ["| model | loss | n | " + " | ".join(f"{l} avg | {l} max | {l} min" for l in labels) + " |",
            "|---|---|---|" + "---|" * (3 * len(labels))]
    for a in ARCH_NAMES:
        for l in losses:
            cell = [r for r in runs if r["arch"] == a and r["loss"] == l]
            if not cell:
                continue
            values = []
            for label in labels:
                rows = [next(x for x in r["variance"]["rows"] if x["label"] == label) for r in cell]
                for key in ("mean", "max", "min"):
                    values.append(_fmt(statistics.mean(x[key] for x in rows)))
            out.append(f"| {ARCH_NAMES[a]} | {LOSS_NAMES[l]} | {len(cell)} | " + " | ".join(values) + " |")
    out += ["", "Last-layer average variance per seed:", ""]
    for a in ARCH_NAMES:
        for l in losses:
            cell = sorted((r for r in runs if r["arch"] == a and r["loss"] == l), key=lambda r: r["seed"])
            if cell:
                vals = ", ".join(
                    f"{next(x for x in r['variance']['rows'] if x['label'] == 'last')['mean']:.3g}"
                    for r in cell)
                out.append(f"- {ARCH_NAMES[a]}, {LOSS_NAMES[l]}: {vals}")
    return "\n".join(out)


def bias_weight_stats(data):
    """Mean z and clamped fraction over the last epoch's training batches."""
    import csv
    import io

    lines = []
    for r in sorted(data["runs"], key=lambda r: (r["arch"], r["seed"])):
        if r["loss"] != "bias" or "history_csv" not in r:
            continue
        rows = list(csv.DictReader(io.StringIO(r["history_csv"])))
        if rows and "bias_weight" in rows[-1]:
            last = rows[-1]
            lines.append(f"- {ARCH_NAMES[r['arch']]}, seed {r['seed']}: mean z {float(last['bias_weight']):.3f}, "
                         f"clamped {float(last['bias_clamped']) * 100:.2f}% of samples (last epoch, training)")
    return "\n".join(lines) or "(no bias-loss runs)"


def _fmt(x):
    return f"{x:.3g}"


def timing(data):
    runs = data["runs"]
    if not runs:
        return "(no runs)"
    times = [r["wall_time_s"] for r in runs]
    return (f"{len(runs)} runs, {sum(times) / 60:.1f} min of run time in total "
            f"(mean {statistics.mean(times):.0f} s, min {min(times):.0f} s, max {max(times):.0f} s per run); "
            f"started {data.get('started_utc', '?')}, finished {data.get('finished_utc', 'not yet')}.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", default="docs/ablation.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="only these seeds (default: all recorded)")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        data = json.load(f)
    if args.seeds is not None:
        data["runs"] = [r for r in data["runs"] if r["seed"] in args.seeds]
    print("## Accuracy\n")
    print(accuracy_tables(data))
    print("\n## Variance (Table 5 analogue)\n")
    print(variance_tables(data))
    print("\n## Bias-loss weights\n")
    print(bias_weight_stats(data))
    print("\n## Timing\n")
    print(timing(data))


if __name__ == "__main__":
    main()
