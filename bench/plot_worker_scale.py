"""Draws bench/worker-scale.png from bench/worker-scale-results.json (written by
dist/bench/worker-scale.js, which runs this in ~/.cache/taskbatch/bench-venv-plot).

    python bench/plot_worker_scale.py <results.json> <out.png>

Left: aggregate items/s against worker processes, one line per pool mode on one Redis, plus the
three-batch runs (one Redis, and a 3-primary Redis Cluster) as single points. Right: one stacked
bar per run, the cores used by each redis-server, the workers, the bench and everything else.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"async": "tab:blue", "thread": "tab:orange", "process": "tab:green"}


def main(results_path: str, out_path: str) -> None:
    with open(results_path) as f:
        results = json.load(f)
    runs = results["runs"]
    fig, (ax, ax_cpu) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 1.3]})
    for mode, color in COLORS.items():
        rows = sorted((r for r in runs if r["kind"] == "single" and r["mode"] == mode), key=lambda r: r["workers"])
        if rows:
            ax.plot([r["workers"] for r in rows], [r["itemsPerSec"] for r in rows], marker="o", color=color, label=f"{mode}, one batch, one Redis")
    markers = {"three-standalone": ("s", "black", "3 batches, one Redis (async)", 6), "three-cluster": ("*", "tab:red", "3 batches, 3-primary Redis Cluster (async)", -12)}
    for kind, (marker, color, label, dy) in markers.items():
        for i, r in enumerate(r for r in runs if r["kind"] == kind):
            ax.scatter([r["workers"]], [r["itemsPerSec"]], marker=marker, s=120, color=color, zorder=3, label=label if i == 0 else None)
            ax.annotate(f"{r['itemsPerSec']:,}", (r["workers"], r["itemsPerSec"]), textcoords="offset points", xytext=(8, dy), fontsize=8, color=color)
    ticks = sorted({r["workers"] for r in runs})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("worker processes")
    ax.set_ylabel("aggregate items/s (no-op handler)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Drain throughput, {results['items']:,} items in all")

    # Right: one stacked bar per run, in cores over the measured window.
    short = {"single": "", "three-standalone": "3b ", "three-cluster": "3b cl "}
    labels = [f"{short[r['kind']]}{r['mode']} x{r['workers']}" for r in runs]
    xs = list(range(len(runs)))
    bottom = [0.0] * len(runs)
    redis_colors = ["tab:red", "salmon", "mistyrose"]
    parts = []
    for i in range(max(len(r["cpu"]["redisCores"]) for r in runs)):
        parts.append((f"redis-server {i + 1}" if i else "redis-server (1st)", [r["cpu"]["redisCores"][i] if i < len(r["cpu"]["redisCores"]) else 0 for r in runs], redis_colors[i % 3]))
    parts.append(("worker processes", [r["cpu"]["workerCores"] for r in runs], "tab:blue"))
    parts.append(("this bench", [r["cpu"]["benchCores"] for r in runs], "tab:gray"))
    parts.append(("other processes on the machine", [r["cpu"]["otherCores"] for r in runs], "lightgray"))
    for name, values, color in parts:
        ax_cpu.bar(xs, values, bottom=bottom, color=color, label=name, edgecolor="white", linewidth=0.5)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax_cpu.axhline(results["machineCores"], color="black", linestyle="--", linewidth=1)
    ax_cpu.axhline(1, color="tab:red", linestyle=":", linewidth=1)
    ax_cpu.annotate("one core: a redis-server's ceiling", (len(runs) - 0.5, 1), textcoords="offset points", xytext=(-2, 3), ha="right", fontsize=7, color="tab:red", backgroundcolor="white")
    ax_cpu.set_xticks(xs)
    ax_cpu.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax_cpu.set_ylabel(f"CPU, cores (machine: {results['machineCores']})")
    ax_cpu.set_ylim(0, results["machineCores"] * 1.35)
    ax_cpu.legend(fontsize=7, loc="upper left", ncol=3)
    ax_cpu.set_title("Where the CPU went during each run")
    fig.suptitle(f"{results['machine']}; load average at start / end: {results['machineAtStart'].split('loadavg: ')[1].split(';')[0][:14]} / {results['machineAtEnd'].split('loadavg: ')[1].split(';')[0][:14]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
