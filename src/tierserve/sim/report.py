"""Simulation reports: a table for the terminal, JSON for tools, and an HTML page with SVG plots."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tierserve.sim.simulator import SimResult

GOLD_GOAL = 0.999  # share of gold requests within target that a baseline fleet is sized to
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def summarise(results: dict[str, SimResult], fixed_sizes: dict[str, int]) -> dict[str, Any]:
    summaries = {name: r.summary() for name, r in results.items()}
    for name, n in fixed_sizes.items():
        summaries[name]["fixed_replicas"] = n
    doc: dict[str, Any] = {"runs": summaries}
    gold = next(iter(summaries["tierserve"]["tiers"])) if "tierserve" in summaries else None
    meeting = [
        (run["cost_per_1m_requests"], name)
        for name, run in summaries.items()
        if name.endswith("-fixed") and gold and run["tiers"][gold]["attainment"] >= GOLD_GOAL
    ]
    if meeting and gold:
        cost, name = min(meeting)
        doc["cheapest_single_pool_fleet"] = name
        doc["saving_vs_cheapest_fixed"] = round(1 - summaries["tierserve"]["cost_per_1m_requests"] / cost, 4)
    return doc


def table(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    tier_names = list(next(iter(runs.values()))["tiers"])
    head = f"{'run':16} {'$/1M req':>10} " + " ".join(
        f"{t + ' in target':>18} {t + ' rejected':>16}" for t in tier_names
    )
    lines = [head]
    for name, run in runs.items():
        cells = " ".join(
            f"{run['tiers'][t]['attainment']:>18.4%} {run['tiers'][t]['rejected']:>16.4%}" for t in tier_names
        )
        size = f" ({run['fixed_replicas']} replicas)" if "fixed_replicas" in run else ""
        lines.append(f"{name:16} {run['cost_per_1m_requests']:>10.4f} {cells}{size}")
    if "saving_vs_cheapest_fixed" in doc:
        lines.append(
            f"tierserve costs {doc['saving_vs_cheapest_fixed']:.1%} less than the cheapest single-pool fleet "
            f"that meets gold >= 99.9% ({doc['cheapest_single_pool_fleet']})"
        )
    return "\n".join(lines)


def write(out: Path, doc: dict[str, Any], timeline: list[dict[str, Any]], title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "simulation.json"
    json_path.write_text(json.dumps({**doc, "timeline": timeline}, indent=1) + "\n")
    html_path = out / "simulation.html"
    html_path.write_text(_html(doc, timeline, title))
    return [json_path, html_path]


def _html(doc: dict[str, Any], timeline: list[dict[str, Any]], title: str) -> str:
    pools = [k for k in (timeline[0] if timeline else {}) if isinstance(timeline[0][k], dict)]
    hours = [row["t"] / 3600 for row in timeline]
    rate = {"arrivals/s": list(zip(hours, [row["arrival_rate"] for row in timeline], strict=True))}
    replicas = {p: list(zip(hours, [row[p]["ready"] for row in timeline], strict=True)) for p in pools}
    p95 = {p: list(zip(hours, [row[p]["p95_ratio"] for row in timeline], strict=True)) for p in pools}
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1000px}pre{background:#f6f6f6;padding:1em}</style>"
        f"<h1>{html.escape(title)}</h1><pre>{html.escape(table(doc))}</pre>"
        + _svg(rate, "Load (arrivals per second)")
        + _svg(replicas, "tierserve replicas ready per pool")
        + _svg(p95, "p95 latency / target, deadline tiers, per pool (1.0 = at target)")
    )


def _svg(series: dict[str, list[tuple[float, float]]], title: str, w: int = 900, h: int = 220) -> str:
    points = [pt for s in series.values() for pt in s]
    if not points:
        return ""
    x_max = max(x for x, _ in points) or 1.0
    y_max = max(y for _, y in points) or 1.0
    pad = 40
    parts = [f'<h3>{html.escape(title)}</h3><svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{pad}" y="5" width="{w - pad - 5}" height="{h - pad}" fill="none" stroke="#999"/>',
             f'<text x="2" y="15" font-size="11">{y_max:.3g}</text>',
             f'<text x="2" y="{h - pad + 5}" font-size="11">0</text>',
             f'<text x="{w - 60}" y="{h - 8}" font-size="11">{x_max:.2f} h</text>']  # fmt: skip
    for i, (name, pts) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        coords = " ".join(
            f"{pad + x / x_max * (w - pad - 5):.1f},{5 + (h - pad) * (1 - y / y_max):.1f}" for x, y in pts
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{coords}"/>')
        label = f'<text x="{pad + 10 + 120 * i}" y="{h - 8}" font-size="12" fill="{colour}">'
        parts.append(f"{label}{html.escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)
