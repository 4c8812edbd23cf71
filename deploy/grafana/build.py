"""Writes the Grafana dashboards in ``dashboards/`` (run it after changing a panel; a test checks the
JSON files match it and that every query names metrics the server exports)::

    python deploy/grafana/build.py

One generator keeps the four dashboards' layout, datasource and units consistent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WINDOW = "$__rate_interval"

# Attainment: met over everything with an outcome but "invalid" (bad input is the client's fault).
ATTAINMENT = (
    f'sum by (tier) (rate(tierserve_tier_requests_total{{outcome="met"}}[{WINDOW}])) / '
    f'sum by (tier) (rate(tierserve_tier_requests_total{{outcome!="invalid"}}[{WINDOW}]))'
)


def timeseries(
    title: str, targets: list[tuple[str, str]], unit: str = "short", **options: Any
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, **options}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def stat(title: str, expr: str, legend: str, unit: str = "short") -> dict[str, Any]:
    panel = timeseries(title, [(expr, legend)], unit)
    panel["type"] = "stat"
    panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    return panel


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    for i, panel in enumerate(panels):  # two columns, 8 rows high
        panel["id"] = i + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
    return {
        "uid": uid,
        "title": title,
        "tags": ["tierserve"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            ]
        },
        "panels": panels,
    }


def p99(metric: str, by: str) -> str:
    return f"histogram_quantile(0.99, sum by (le, {by}) (rate({metric}_bucket[{WINDOW}])))"


def dashboards() -> dict[str, dict[str, Any]]:
    overview = dashboard(
        "tierserve-overview",
        "tierserve: overview",
        [
            timeseries("SLO attainment per tier", [(ATTAINMENT, "{{tier}}")], "percentunit", min=0, max=1),
            timeseries(
                "p99 latency per tier (targets: gold 50 ms, silver 150 ms)",
                [(p99("tierserve_tier_request_duration_seconds", "tier"), "{{tier}} p99")],
                "s",
            ),
            timeseries(
                "Rejections per tier",
                [
                    (
                        "sum by (tier) "
                        f'(rate(tierserve_tier_requests_total{{outcome="rejected"}}[{WINDOW}]))',
                        "{{tier}}",
                    )
                ],
                "reqps",
            ),
            timeseries(
                "Goodput (met) and served per second",
                [
                    (f'sum(rate(tierserve_tier_requests_total{{outcome="met"}}[{WINDOW}]))', "met"),
                    (f'sum(rate(tierserve_requests_total{{outcome="success"}}[{WINDOW}]))', "served"),
                ],
                "reqps",
            ),
            timeseries(
                "Requests by tier and outcome",
                [
                    (
                        f"sum by (tier, outcome) (rate(tierserve_tier_requests_total[{WINDOW}]))",
                        "{{tier}} {{outcome}}",
                    )
                ],
                "reqps",
            ),
            timeseries(
                "Queued per tier",
                [("sum by (tier) (tierserve_tier_queue_depth)", "{{tier}}")],
            ),
        ],
    )
    models = dashboard(
        "tierserve-models",
        "tierserve: models",
        [
            timeseries(
                "Model versions ready", [("tierserve_model_ready", "{{model}} v{{version}} {{state}}")]
            ),
            timeseries(
                "Requests per model and outcome",
                [
                    (
                        f"sum by (model, outcome) (rate(tierserve_requests_total[{WINDOW}]))",
                        "{{model}} {{outcome}}",
                    )
                ],
                "reqps",
            ),
            timeseries(
                "p99 latency per model",
                [(p99("tierserve_request_duration_seconds", "model"), "{{model}}")],
                "s",
            ),
            timeseries(
                "p99 queue wait and batch time per model",
                [
                    (p99("tierserve_queue_duration_seconds", "model"), "{{model}} queue"),
                    (p99("tierserve_inference_duration_seconds", "model"), "{{model}} batch"),
                ],
                "s",
            ),
            timeseries(
                "Mean batch size",
                [
                    (
                        f"sum by (model) (rate(tierserve_batch_size_sum[{WINDOW}])) / "
                        f"sum by (model) (rate(tierserve_batch_size_count[{WINDOW}]))",
                        "{{model}}",
                    )
                ],
            ),
            timeseries(
                "Result cache hit ratio per model",
                [
                    (
                        f'sum by (model) (rate(tierserve_cache_requests_total{{result="hit"}}[{WINDOW}])) / '
                        f"sum by (model) (rate(tierserve_cache_requests_total[{WINDOW}]))",
                        "{{model}}",
                    ),
                    (
                        "sum by (model, layer) "
                        f'(rate(tierserve_cache_lookups_total{{result="hit"}}[{WINDOW}]))'
                        f" / sum by (model, layer) (rate(tierserve_cache_lookups_total[{WINDOW}]))",
                        "{{model}} {{layer}} layer",
                    ),
                ],
                "percentunit",
            ),
            timeseries(
                "Oldest queued request",
                [("max by (model) (tierserve_queue_oldest_age_seconds)", "{{model}}")],
                "s",
            ),
        ],
    )
    cost = dashboard(
        "tierserve-cost",
        "tierserve: pools and cost",
        [
            timeseries(
                "Cost per hour by pool",
                [(f"sum by (pool) (rate(tierserve_cost_dollars_total[{WINDOW}])) * 3600", "{{pool}}")],
                "currencyUSD",
            ),
            timeseries(
                "Cost per 1M requests by pool",
                [
                    (
                        f"sum by (pool) (rate(tierserve_cost_dollars_total[{WINDOW}])) / "
                        f"sum by (pool) (rate(tierserve_pool_requests_total[{WINDOW}])) * 1e6",
                        "{{pool}}",
                    )
                ],
                "currencyUSD",
            ),
            timeseries(
                "Cost per hour by tenant",
                [
                    (
                        f"sum by (tenant) (rate(tierserve_cost_dollars_total[{WINDOW}])) * 3600",
                        "{{tenant}}",
                    )
                ],
                "currencyUSD",
            ),
            timeseries(
                "Cost per 1M requests by tenant",
                [
                    (
                        f"sum by (tenant) (rate(tierserve_cost_dollars_total[{WINDOW}])) / "
                        f"sum by (tenant) (rate(tierserve_pool_requests_total[{WINDOW}])) * 1e6",
                        "{{tenant}}",
                    )
                ],
                "currencyUSD",
            ),
            timeseries(
                "Requests per pool and tier",
                [
                    (
                        f"sum by (pool, tier) (rate(tierserve_pool_requests_total[{WINDOW}]))",
                        "{{pool}} {{tier}}",
                    )
                ],
                "reqps",
            ),
            timeseries(
                "Desired replicas per pool", [("max by (pool) (tierserve_desired_replicas)", "{{pool}}")]
            ),
            timeseries(
                "Budget used",
                [("tierserve_budget_spent_dollars / tierserve_budget_limit_dollars", "{{budget}}")],
                "percentunit",
            ),
            timeseries(
                "Circuit breakers (0 closed, 1 half-open, 2 open)",
                [("max by (pool, endpoint) (tierserve_breaker_state)", "{{pool}} {{endpoint}}")],
            ),
        ],
    )
    jobs = dashboard(
        "tierserve-jobs",
        "tierserve: jobs",
        [
            timeseries("Jobs per status", [("sum by (status) (tierserve_jobs)", "{{status}}")]),
            timeseries("Oldest queued job", [("max(tierserve_jobs_oldest_queued_age_seconds)", "age")], "s"),
            timeseries(
                "Dead letters (change over 15 min)",
                [
                    (
                        'sum(tierserve_jobs{status="dead"}) '
                        '- sum(min_over_time(tierserve_jobs{status="dead"}[15m]))',
                        "dead",
                    )
                ],
            ),
            stat("Queued now", 'sum(tierserve_jobs{status="queued"})', "queued"),
        ],
    )
    return {"overview": overview, "models": models, "cost": cost, "jobs": jobs}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main() -> None:
    for name, doc in dashboards().items():
        (HERE / "dashboards" / f"{name}.json").write_text(render(doc))


if __name__ == "__main__":
    main()
