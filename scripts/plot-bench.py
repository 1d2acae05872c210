#!/usr/bin/env python3
"""Plots round latency (p50 and p99) against N from mesh-bench JSON lines.

Usage: plot-bench.py RESULTS.jsonl OUT.png

Reads the `raw`, `broadcast` and `broadcast-etcd` lines that `mesh-bench --json-out`
writes (one JSON object per line, `{"workload": ..., "rows": [...]}`) and draws one line
per series: the raw gRPC limit, the mesh embedded and the mesh on etcd, p50 solid and p99
dashed. `make bench-plot` runs it in .venv-bench.
"""

import json
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    ("raw", "raw gRPC limit", "tab:gray"),
    ("broadcast", "mesh, embedded", "tab:blue"),
    ("broadcast-etcd", "mesh, etcd-backed", "tab:orange"),
]


def load(path):
    lines = {}
    machine = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            doc = json.loads(line)
            if doc.get("workload") == "machine":
                machine = doc
            elif doc.get("workload") in {s[0] for s in SERIES}:
                lines[doc["workload"]] = sorted(doc["rows"], key=lambda r: r["n"])
    return lines, machine


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    lines, machine = load(sys.argv[1])
    if not lines:
        sys.exit(f"no raw/broadcast lines in {sys.argv[1]}")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for workload, label, color in SERIES:
        rows = lines.get(workload)
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        ax.plot(ns, [r["p50_us"] / 1000 for r in rows], "o-", color=color, label=f"{label} p50")
        ax.plot(ns, [r["p99_us"] / 1000 for r in rows], "s--", color=color, alpha=0.7,
                label=f"{label} p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    all_ns = sorted({r["n"] for rows in lines.values() for r in rows})
    ax.set_xticks(all_ns)
    ax.set_xticklabels([str(n) for n in all_ns])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("N (worker processes / streams per round)")
    ax.set_ylabel("round latency (ms, log scale)")
    title = "Broadcast round latency: one CONTRIBUTE phase to N workers vs raw gRPC"
    if machine:
        title += f"\n{machine.get('nproc')} CPUs ({machine.get('cpu')}), {machine.get('plan')} run"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
