"""The report header's wall times come from the run directories' file times."""

from __future__ import annotations

import os
from pathlib import Path

from nsae.report.runs import Run
from nsae.report.sections.header import wall_times


def _job(root: Path, name: str, start: float, end: float | None, status: str = "done") -> Run:
    d = root / name
    d.mkdir()
    (d / "config.yaml").write_text("{}")
    os.utime(d / "config.yaml", (start, start))
    if end is not None:
        (d / "metrics.json").write_text("{}")
        os.utime(d / "metrics.json", (end, end))
    return Run(path=d, rel=name, config={}, status=status)


def test_wall_time_spans_first_start_to_last_end_and_sums_the_trained_jobs(tmp_path: Path) -> None:
    runs = [
        _job(tmp_path, "a", 1000.0, 1100.0),
        _job(tmp_path, "b", 1050.0, 1300.0),  # overlaps a: two jobs at a time
        _job(tmp_path, "c", 900.0, None, status="unfinished"),  # not counted
    ]
    assert wall_times(runs) == {"sweep_seconds": 300.0, "job_seconds_sum": 350.0, "jobs": 2}


def test_no_finished_job_means_no_wall_time(tmp_path: Path) -> None:
    assert wall_times([_job(tmp_path, "a", 1000.0, None, status="unfinished")]) is None
