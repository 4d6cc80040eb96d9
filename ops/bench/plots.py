"""The benchmark's growth plots (PNG, into docs/): how time, memory and read latency grow
with size. matplotlib with the Agg backend: files only, no display needed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

#: Log axes labelled 0.1, 1, 10 (not 10^-1, 10^0, 10^1).
_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
#: Sizes as 1,000 and 1,000,000.
_COUNT = FuncFormatter(lambda value, _: f"{value:,.0f}")


def _stamp() -> str:
    return f"make bench, {time.strftime('%Y-%m-%d', time.gmtime())}"


def calendar_growth(points: list[dict[str, Any]], path: Path) -> Path:
    """POST -> SUCCESS time and the worker's peak RSS against the calendar's todos, log-log."""
    done = [p for p in points if p["job"]["status"] == "SUCCESS"]
    todos = [p["todos"] for p in done]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.plot(todos, [p["post_to_success_s"] for p in done], "o-")
    left.set(title="POST -> SUCCESS", ylabel="seconds")
    right.plot(todos, [p["worker_peak_rss_mib"] for p in done], "o-", color="tab:orange")
    right.axhline(256, color="grey", linestyle=":", label="P8 target, 256 MiB")
    right.set(title="worker peak RSS during the job", ylabel="MiB")
    right.legend(loc="upper left")
    for axes in (left, right):
        axes.set(xscale="log", yscale="log", xlabel="todos in the calendar")
        axes.grid(True, which="both", alpha=0.3)
    right.set_yscale("log", base=2)  # 64, 128, 256 MiB: memory is counted in doublings
    for axes in (left, right):
        axes.xaxis.set_major_formatter(_COUNT)
        axes.yaxis.set_major_formatter(_PLAIN)
        axes.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"One calendar job by size ({_stamp()})")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_latency(
    latency: dict[str, dict[int, dict[str, float]]], names: dict[str, str], path: Path
) -> Path:
    """Each endpoint's p95 against the rows in jobs and todos (log x, linear y from 0: flat
    is the goal)."""
    fig, axes = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for key, by_size in latency.items():
        sizes = sorted(by_size)
        axes.plot(sizes, [by_size[n]["p95_ms"] for n in sizes], "o-", label=names.get(key, key))
    axes.set(
        xscale="log",
        xlabel="rows in jobs and in todos (each)",
        ylabel="p95 latency, ms (wrk -t1 -c2, median of 3)",
        title=f"Reads as the tables grow ({_stamp()})",
    )
    axes.set_ylim(bottom=0)
    axes.xaxis.set_major_formatter(_COUNT)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
