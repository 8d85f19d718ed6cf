"""PNG plots of a results dict (matplotlib, Agg backend). -> list of written file names."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plots(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tag = " (QUICK run: not a measurement)" if res.get("quick") else ""
    parts, figs, written = res["parts"], res["figures"], []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    p1 = parts.get("P1")
    if isinstance(p1, dict) and p1.get("per_type"):
        types = [t for t, d in p1["per_type"].items() if "baseline_total_s_extrapolated" in d]
        if types:
            fig, ax = plt.subplots(figsize=(7, 4))
            x = np.arange(len(types))
            ours = [p1["per_type"][t]["ours_s"]["median"] for t in types]
            base = [p1["per_type"][t]["baseline_total_s_extrapolated"] for t in types]
            ax.bar(x - 0.2, base, 0.4, label="per-query re-processing (extrapolated)", color="#c44")
            ax.bar(x + 0.2, ours, 0.4, label="one pass + batched heads", color="#48c")
            for i, t in enumerate(types):
                ax.text(i, max(base[i], ours[i]) * 1.3, f"{p1['per_type'][t].get('speedup', 0):.0f}x", ha="center")
            ax.set_yscale("log")
            ax.set_ylim(top=max(base + ours) * 6)
            ax.set_xticks(x, [f"{t}\n({p1['per_type'][t]['queries']} q)" for t in types])
            ax.set_ylabel("seconds for all queries of the type")
            ax.set_title(f"P1: {p1['video_s'] / 60:g}-min video{tag}", fontsize=10)
            ax.legend(fontsize=8)
            save(fig, "P1_speedup.png")

    p2 = parts.get("P2")
    if isinstance(p2, dict) and p2.get("configs"):
        names = list(p2["configs"])
        fig, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(len(names))
        for j, (be, col) in enumerate((("onnxruntime", "#48c"), ("torch", "#999"))):
            st = [p2["configs"][n][f"rtf_{be}"] for n in names]
            med = [s["median"] or 0 for s in st]
            err = [[m - (s["p10"] or m) for m, s in zip(med, st)], [(s["p90"] or m) - m for m, s in zip(med, st)]]
            ax.bar(x + (j - 0.5) * 0.4, med, 0.4, yerr=err, label=be, color=col, capsize=3)
        for n, g in (("lvm-tiny", 30), ("lvm-edge", 5)):
            if n in names:
                i = names.index(n)
                ax.hlines(g, i - 0.45, i + 0.45, colors="k", linestyles="--")
        ax.set_xticks(x, names)
        ax.set_ylabel("real-time factor (video s / wall s)")
        ax.set_title(f"P2: streaming rate, {p2['threads']} threads (dashed: goal){tag}", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "P2_rtf.png")

    pp = parts.get("P3_P4")
    if isinstance(pp, dict) and pp.get("rss_series"):
        s = pp["rss_series"]
        fig, ax = plt.subplots(figsize=(7, 4))
        h = [x["stream_s"] / 3600 for x in s]
        ax.plot(h, [x["rss_bytes"] / 2**20 for x in s], "o-", label="process RSS (MiB)")
        ax.set_xlabel("stream hours" + (" (quick: scaled)" if res.get("quick") else ""))
        ax.set_ylabel("MiB")
        ax2 = ax.twinx()
        ax2.plot(h, [x["memory_bytes"] / 2**20 for x in s], "s--", color="#c84", label="StreamState.memory_bytes (MiB)")
        ax2.set_ylabel("Engine state MiB")
        ax.set_title(f"P4: memory over the accelerated stream{tag}", fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
        ax2.legend(loc="lower right", fontsize=8)
        save(fig, "P4_memory.png")
    if isinstance(pp, dict) and isinstance(pp.get("p3"), dict):
        p3 = pp["p3"]
        fig, ax = plt.subplots(figsize=(7, 4))
        labels, vals = [], []
        for k, lab in (("ms_1min", "after 1 min"), ("ms_10h", "after 10 h"), ("ms_10h_rest_windows", "10 h, 5-30 min windows")):
            st = p3.get(k)
            if st and st.get("median") is not None:
                labels.append(lab)
                vals.append(st)
        x = np.arange(len(labels))
        ax.bar(x, [v["median"] for v in vals], 0.5, color="#48c", label="p50")
        ax.scatter(x, [v["p90"] for v in vals], color="k", marker="_", s=400, label="p90")
        p99 = [p3.get("p99_ms_1min"), p3.get("p99_ms_10h"), p3.get("p99_ms_10h_rest_windows")][: len(labels)]
        ax.scatter(x, p99, color="#c44", marker="_", s=400, label="p99")
        ax.axhline(10, color="#48c", ls="--", lw=0.8)
        ax.axhline(50, color="#c44", ls="--", lw=0.8)
        ax.set_xticks(x, labels)
        ax.set_ylabel("ms per single-query call")
        ax.set_title(f"P3: query latency while streaming (dashed: goals){tag}", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "P3_latency.png")

    p5 = parts.get("P5")
    if isinstance(p5, dict) and p5.get("ms"):
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        keys = [("incremental", "OnlineSVD.update"), ("ipca", "IncrementalPCA\n.partial_fit"),
                ("randomized", "randomized_svd\n(window)"), ("recompute", "full SVD\n(window)")]
        med = [p5["ms"][k]["median"] for k, _ in keys]
        ax.bar(range(len(keys)), med, color=["#48c", "#999", "#c84", "#c44"])
        ax.set_yscale("log")
        ax.set_xticks(range(len(keys)), [l for _, l in keys], fontsize=7, rotation=20)
        ax.set_ylabel("ms per clip")
        ax.set_title(f"P5: {p5['window_clips']}-clip window, rank {p5['rank']}", fontsize=10)
        ser = p5.get("residual_ratio_f_series") or []
        ax2.plot(range(1, len(ser) + 1), ser, "o-", label="online (engine f) vs window optimum")
        acc = p5["accuracy"]
        ax2.axhline(acc["online_f1"]["residual_ratio"], color="#48c", ls="--", label="online f=1, same window")
        ax2.axhline(acc["ipca"]["residual_ratio"], color="#999", ls=":", label="IncrementalPCA, same window")
        ax2.set_xlabel("slide position (clips)")
        ax2.set_ylabel("residual / offline optimum")
        ax2.legend(fontsize=7)
        ax2.set_title(f"accuracy{tag}", fontsize=10)
        save(fig, "P5_svd.png")

    p6 = parts.get("P6")
    if isinstance(p6, dict) and p6.get("latency_ms"):
        lat = p6["latency_ms"]
        precs = list(lat)
        graphs = list(next(iter(lat.values())))
        fig, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(len(graphs))
        cols = {"fp32": "#48c", "fp16": "#c84", "int8": "#4a4"}
        for j, p in enumerate(precs):
            ax.bar(x + (j - (len(precs) - 1) / 2) * 0.25, [lat[p][g]["median"] for g in graphs], 0.25,
                   label=p, color=cols.get(p))
        ax.set_xticks(x, graphs)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call (ONNX Runtime CPU)")
        ax.set_title(f"P6: per-graph latency by precision{tag}", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "P6_precision.png")

    p7 = parts.get("P7")
    if isinstance(p7, dict) and p7.get("gflops"):
        g = p7["gflops"]
        ks = list(g)
        fig, ax = plt.subplots(figsize=(7.5, 4))
        ax.bar(range(len(ks)), [g[k]["median"] for k in ks],
               color=["#48c" if k.startswith("backbone_ort") else "#c84" if k.startswith("backbone") else "#999" for k in ks])
        ax.set_xticks(range(len(ks)), [k.replace("_", "\n", 2) for k in ks], fontsize=7)
        ax.set_ylabel("GFLOP/s")
        fr = figs.get("P7.backbone_fraction_of_peak", {}).get("value")
        ax.set_title(f"P7: backbone vs GEMM peak ({fr} of peak){tag}", fontsize=10)
        save(fig, "P7_flops.png")
    return written
