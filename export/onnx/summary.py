"""The table lvm-export prints at the end: per graph its precision, size, parity, CPU latency, plan."""
from __future__ import annotations

from pathlib import Path

HEADER = ("graph", "precision", "size MB", "parity vs PyTorch", "CPU ms median (p10-p90)", "int8 mode", "plan")
RIGHT_ALIGNED = {"size MB"}


def summary_rows(graphs: dict, parity: dict, latency: dict) -> list[tuple[str, ...]]:
    rows = []
    for n, g in graphs.items():
        p = parity.get(n, {})
        par = (f"recall {p['topm_recall']:.4f}" if "topm_recall" in p else f"max|d| {p.get('max_abs', 0):.2e}")
        lat = latency.get(n, {})
        lat_s = f"{lat.get('median_ms', 0):.1f} ({lat.get('p10_ms', 0):.0f}-{lat.get('p90_ms', 0):.0f})"
        if "speedup_vs_fp32" in lat:
            lat_s += f" x{lat['speedup_vs_fp32']:.2f} vs fp32"
        q = g.get("quantization") or {}
        rows.append((n, g.get("precision") or "", f"{g['size_bytes'] / 1e6:.2f}", par, lat_s,
                     q.get("mode", "-") if q else "-", "yes" if g.get("plan") else "-"))
    return rows


def format_table(title: str, rows: list[tuple[str, ...]], caption: str) -> str:
    """Plain aligned text: reads the same in a terminal, a pipe and a log file."""
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if h in RIGHT_ALIGNED else c.ljust(w)
                         for c, w, h in zip(cells, widths, HEADER)).rstrip()

    return "\n".join([title, line(HEADER), line("-" * w for w in widths), *(line(r) for r in rows), caption])


def print_summary(model: str, precision: str, graphs: dict, parity: dict, latency: dict, target: Path,
                  committed: bool) -> None:
    where = f"bundle {'written to' if committed else 'NOT written'}: {target}"
    print(format_table(f"lvm-export {model} {precision}", summary_rows(graphs, parity, latency), where), flush=True)
