"""The comparison table printed after a run, and the JSON record written beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.metrics import Metric

REFERENCE_TARGET = "orthanc"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def speedup(metric: Metric, reference: float, value: float) -> float | None:
    """How many times better `value` is than `reference`: value/reference for throughput,
    reference/value for latency and memory. Above 1 means better than the reference."""
    if metric.higher_is_better is None or not _usable(reference) or not _usable(value):
        return None
    return value / reference if metric.higher_is_better else reference / value


def _usable(number: float) -> bool:
    return not math.isnan(number) and number > 0


def _format(number: float | None) -> str:
    if number is None or math.isnan(number):
        return "—"
    if abs(number) >= 100:
        return f"{number:,.0f}"
    return f"{number:.3g}" if abs(number) < 1 else f"{number:.1f}"


def comparison_table(metrics_by_target: dict[str, list[Metric]], reference: str = REFERENCE_TARGET) -> str:
    """One row per metric, one column per target, then one ratio column per non-reference
    target when the reference (Orthanc, or the one named) ran."""
    targets = list(metrics_by_target)
    order: list[Metric] = []
    seen: set[str] = set()
    for metrics in metrics_by_target.values():
        for metric in metrics:
            if metric.name not in seen:
                seen.add(metric.name)
                order.append(metric)
    values = {
        target: {metric.name: metric.value for metric in metrics}
        for target, metrics in metrics_by_target.items()
    }
    compared = [t for t in targets if t != reference] if reference in targets else []
    header = ["metric", "unit", *targets, *(f"{t} vs {reference}" for t in compared)]
    rows = [header]
    for metric in order:
        row = [metric.label, metric.unit]
        row += [_format(values[target].get(metric.name)) for target in targets]
        for target in compared:
            ratio = speedup(
                metric,
                values[reference].get(metric.name, math.nan),
                values[target].get(metric.name, math.nan),
            )
            row.append("—" if ratio is None else f"{ratio:.2f}×")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    if compared:
        lines.append("")
        lines.append(
            f"Ratios: target/{reference} for throughput, {reference}/target for latency "
            f"and memory; above 1.00× the target is better, below it {reference} is."
        )
    return "\n".join(lines)


def write_results(record: dict, stamp: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps(_nan_as_null(record), indent=2, allow_nan=False) + "\n")
    return path


def _nan_as_null(value):
    """JSON has no NaN; a percentile of no samples is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_as_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_as_null(item) for item in value]
    return value
