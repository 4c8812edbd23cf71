"""Simulation reports: a table for the terminal, JSON for tools, and an HTML page with SVG plots."""

from __future__ import annotations

import html
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

GOLD_GOAL = 0.999  # share of gold requests within target that a baseline fleet is sized to
SILVER_GOAL = 0.99
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


class _Summarised(Protocol):
    def summary(self) -> dict[str, Any]: ...


def compare(cost: float, baseline: float) -> str:
    """``"N% cheaper"`` or ``"N% more expensive"`` than ``baseline`` (never a negative saving)."""
    if baseline <= 0:
        return "no cheaper baseline to compare to"
    change = cost / baseline - 1
    if abs(change) < 0.0005:
        return "the same cost"
    return f"{abs(change):.1%} {'cheaper' if change < 0 else 'more expensive'}"


def summarise(results: Mapping[str, _Summarised], fixed_sizes: dict[str, int]) -> dict[str, Any]:
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
    if "reactive" in summaries and "tierserve" in summaries and summaries["reactive"]["cost_per_1m_requests"]:
        ours, theirs = (
            summaries["tierserve"]["cost_per_1m_requests"],
            summaries["reactive"]["cost_per_1m_requests"],
        )
        doc["saving_vs_reactive"] = round(1 - ours / theirs, 4)
    if "tierserve" in summaries:
        tiers = summaries["tierserve"]["tiers"]
        names = list(tiers)
        doc["tierserve_goals"] = {
            f"{names[0]} >= {GOLD_GOAL:.1%}": tiers[names[0]]["attainment"] >= GOLD_GOAL,
            **({f"{names[1]} >= {SILVER_GOAL:.0%}": tiers[names[1]]["attainment"] >= SILVER_GOAL}
               if len(names) > 1 else {}),
        }  # fmt: skip
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
    ours = runs.get("tierserve", {}).get("cost_per_1m_requests")
    if "saving_vs_cheapest_fixed" in doc and ours is not None:
        name = doc["cheapest_single_pool_fleet"]
        versus = compare(ours, runs[name]["cost_per_1m_requests"])
        lines.append(
            f"tierserve is {versus} per 1M requests than the cheapest single-pool fleet that meets "
            f"gold >= {GOLD_GOAL:.1%} ({name})"
        )
    if "saving_vs_reactive" in doc and ours is not None:
        lines.append(
            f"tierserve is {compare(ours, runs['reactive']['cost_per_1m_requests'])} per 1M requests than "
            "reactive utilisation-only autoscaling"
        )
    for goal, met in doc.get("tierserve_goals", {}).items():
        lines.append(f"tierserve {goal} within target: {'met' if met else 'NOT met'}")
    lines += [f"note: {n}" for n in doc.get("notes", [])]
    return "\n".join(lines)


def write(out: Path, doc: dict[str, Any], timeline: list[dict[str, Any]], title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "simulation.json"
    json_path.write_text(json.dumps({**doc, "timeline": timeline}, indent=1) + "\n")
    html_path = out / "simulation.html"
    html_path.write_text(_html(doc, timeline, title))
    return [json_path, html_path]


def _html(doc: dict[str, Any], timeline: list[dict[str, Any]], title: str) -> str:
    if timeline and "pools" in timeline[0]:
        return _fleet_html(doc, timeline, title)
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


def _fleet_html(doc: dict[str, Any], timeline: list[dict[str, Any]], title: str) -> str:
    """The fluid model's minute-by-minute timeline: load, replicas per pool, cost rate, attainment."""
    hours = [row["t"] / 3600 for row in timeline]
    pools = list(timeline[0]["pools"])
    tiers = list(next(iter(doc["runs"].values()))["tiers"])

    def series(values: list[float]) -> list[tuple[float, float]]:
        return list(zip(hours, values, strict=True))

    load = {"arrivals/s": series([row["arrival_rate"] for row in timeline])}
    replicas = {p: series([row["pools"][p]["ready"] for row in timeline]) for p in pools}
    replicas = {p: s for p, s in replicas.items() if any(y for _, y in s)}
    cost = {"$/h": series([row["cost_per_hour"] for row in timeline])}
    attainment = {t: series([row["attainment"][k] for row in timeline]) for k, t in enumerate(tiers)}
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1000px}pre{background:#f6f6f6;padding:1em}</style>"
        f"<h1>{html.escape(title)}</h1><pre>{html.escape(table(doc))}</pre>"
        "<p>tierserve's run, per minute of the simulated day.</p>"
        + _svg(load, "Load (arrivals per second)")
        + _svg(replicas, "Replicas ready per pool (pools never opened are left out)")
        + _svg(cost, "Cost rate ($ per hour; per-request endpoints included)")
        + _svg(attainment, "Share of each tier's arrivals served within target, per minute")
    )


class ProgressBar:
    """One line per run, redrawn with ``\\r`` on a terminal (``t4-fixed x3  [#####.....]  50%  4.1 s``);
    elsewhere only the finished line."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width

    def __call__(self, name: str) -> Callable[[float], None]:
        started = time.perf_counter()
        last = [-1]

        def report(done: float) -> None:
            percent = int(done * 100)
            if percent == last[0] or (done < 1.0 and not self.stream.isatty()):
                return
            last[0] = percent
            filled = int(done * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            end = "\n" if done >= 1.0 else ""
            elapsed = time.perf_counter() - started
            self.stream.write(f"\r{name:24} [{bar}] {percent:3d}%  {elapsed:5.1f} s{end}")
            self.stream.flush()

        return report
