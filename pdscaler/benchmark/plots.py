"""PNG plots of a trace's results: load and pool sizes over time, attainment against cost.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no display, no global
backend switch), so that plotting works on a server and changes no process state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pdscaler.benchmark.report import PolicyMetrics
from pdscaler.benchmark.suite import TraceResult

# Arrivals are counted per replay interval (5 s): a minute's mean reads better.
SMOOTH_S = 60.0


def write_plots(result: TraceResult, out_dir: Path) -> list[Path]:
    """``<trace>-timeline.png`` and ``<trace>-cost.png`` in ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result.setup.name
    timeline = out_dir / f"{name}-timeline.png"
    cost = out_dir / f"{name}-cost.png"
    _save(timeline_figure(result), timeline)
    _save(cost_figure(result), cost)
    return [timeline, cost]


def timeline_figure(result: TraceResult) -> Figure:
    """Offered load (req/s, one-minute mean) and each pool's replicas (ready and pending)
    over time, one line per policy."""
    figure = Figure(figsize=(11, 8), layout="constrained")
    load, prefill, decode = figure.subplots(3, 1, sharex=True)
    setup = result.setup
    figure.suptitle(
        f"{setup.name}: ×{setup.multiplier:g} rate, SLO TTFT {setup.slo.ttft_ms:g} ms, "
        f"ITL {setup.slo.itl_ms:g} ms"
    )
    if result.metrics:
        t, rate = _smoothed(result.metrics[0])
        load.plot(t, rate, color="black", linewidth=1)
    load.set_ylabel("offered load (req/s)")
    for m in result.metrics:
        minutes = [row[0] / 60 for row in m.timeline]
        prefill.step(minutes, [row[2] for row in m.timeline], where="post", label=m.policy)
        decode.step(minutes, [row[3] for row in m.timeline], where="post", label=m.policy)
    prefill.set_ylabel("prefill replicas")
    decode.set_ylabel("decode replicas")
    decode.set_xlabel("time (min)")
    prefill.legend(loc="upper left", fontsize="small", ncols=3)
    for axes in (load, prefill, decode):
        axes.grid(alpha=0.3)
    return figure


def cost_figure(result: TraceResult) -> Figure:
    """SLO attainment against GPU-hours, one point per policy; the lower bound as a line."""
    figure = Figure(figsize=(7, 5), layout="constrained")
    axes = figure.subplots()
    for m in result.metrics:
        axes.scatter(m.gpu_hours, 100 * m.attainment, s=40)
        axes.annotate(m.policy, (m.gpu_hours, 100 * m.attainment),
                      textcoords="offset points", xytext=(5, 5), fontsize="small")  # fmt: skip
    axes.axvline(result.setup.lower_bound_gpu_hours, color="grey", linestyle="--",
                 label="work-conserving lower bound")  # fmt: skip
    axes.set_xlabel("GPU-hours")
    axes.set_ylabel("SLO attainment (%)")
    axes.set_title(f"{result.setup.name}: attainment against cost (up and left is better)")
    axes.set_xlim(left=0)
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(alpha=0.3)
    return figure


def _smoothed(metrics: PolicyMetrics) -> tuple[list[float], list[float]]:
    """Minutes, and the arrival rate averaged over the trailing :data:`SMOOTH_S`."""
    rows: Sequence[tuple[float, float, int, int]] = metrics.timeline
    if len(rows) < 2:
        return [row[0] / 60 for row in rows], [row[1] for row in rows]
    interval = rows[1][0] - rows[0][0]
    width = max(1, round(SMOOTH_S / interval))
    rates = [row[1] for row in rows]
    smoothed = []
    total = 0.0
    for i, rate in enumerate(rates):
        total += rate - (rates[i - width] if i >= width else 0.0)
        smoothed.append(total / min(i + 1, width))
    return [row[0] / 60 for row in rows], smoothed


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
