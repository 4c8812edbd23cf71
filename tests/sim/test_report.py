"""Report wording and the fleet report's plots."""

from __future__ import annotations

import io
from pathlib import Path

from tierserve.sim import report


def test_a_saving_and_an_overspend_are_worded_as_such() -> None:
    assert report.compare(0.6, 1.0) == "40.0% cheaper"
    assert report.compare(4.946, 1.0) == "394.6% more expensive"  # never "costs -394.6% less"
    assert report.compare(1.0, 1.0) == "the same cost"


def test_the_fleet_report_plots_load_replicas_cost_and_attainment(tmp_path: Path) -> None:
    gold = {"gold": {"attainment": 1.0, "rejected": 0.0}}
    runs = {"tierserve": {"cost_per_1m_requests": 0.05, "tiers": gold},
            "t4-fixed": {"cost_per_1m_requests": 0.1, "tiers": gold}}  # fmt: skip
    doc = {"runs": runs, "cheapest_single_pool_fleet": "t4-fixed", "saving_vs_cheapest_fixed": 0.5}
    timeline = [{"t": 60.0 * i, "arrival_rate": 100.0 + i, "cost_per_hour": 0.5, "attainment": [1.0],
                 "pools": {"t4": {"ready": 1, "starting": 0}, "cpu": {"ready": 0, "starting": 0}}}
                for i in range(1, 4)]  # fmt: skip
    html_path = report.write(tmp_path, doc, timeline, "day")[1]
    page = html_path.read_text()
    assert page.count("<svg") == 4 and "50.0% cheaper" in page
    assert ">t4<" in page and ">cpu<" not in page  # a pool never opened is left out


def test_the_progress_bar_prints_only_the_finished_line_off_a_terminal() -> None:
    out = io.StringIO()
    step = report.ProgressBar(out)("tierserve")
    for done in (0.0, 0.5, 1.0):
        step(done)
    assert out.getvalue().count("\r") == 1 and "100%" in out.getvalue()
