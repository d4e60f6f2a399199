"""The report's header: wall times from the run directories' file times, and the summary."""

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
    assert wall_times(runs) == {
        "sweep_seconds": 300.0,
        "running_seconds": 300.0,
        "job_seconds_sum": 350.0,
        "jobs": 2,
    }


def test_running_time_leaves_out_the_pauses_between_sittings(tmp_path: Path) -> None:
    """A sweep stopped and continued an hour later (or commands run apart into one sweep
    dir): the running time is the union of the jobs' spans, the span still first to last."""
    runs = [
        _job(tmp_path, "a", 1000.0, 1100.0),
        _job(tmp_path, "b", 1050.0, 1200.0),
        _job(tmp_path, "c", 1100.0, 1150.0),  # inside b
        _job(tmp_path, "d", 5000.0, 5100.0),  # the next sitting
        _job(tmp_path, "e", 5100.0, 5250.0),  # starts as d ends
    ]
    wall = wall_times(runs)
    assert wall is not None
    assert wall["sweep_seconds"] == 4250.0
    assert wall["running_seconds"] == 200.0 + 250.0
    assert wall["job_seconds_sum"] == 100.0 + 150.0 + 50.0 + 100.0 + 150.0


def test_the_header_states_the_running_time_and_the_pause(tmp_path: Path) -> None:
    from nsae.report.sections.header import build

    runs = [_job(tmp_path, "a", 0.0, 3600.0), _job(tmp_path, "b", 7200.0, 7200.0 + 1800.0)]
    _, setup, record = build(runs, tmp_path, [])
    row = next(r for r in setup[1].rows if r[0] == "wall time")
    assert row[1].startswith("1 h 30 min running (first job's start to last job's end, 2 h 30 min")
    assert "less 1 h 00 min in which no job ran" in row[1]
    assert record["wall_time"]["running_seconds"] == 5400.0
    top, _, _ = build(runs, tmp_path, [])  # the first line states seeds and the wall time
    assert "; seeds 0; 1 h 30 min of wall time (Setup, below)." in top[1].text


def test_no_finished_job_means_no_wall_time(tmp_path: Path) -> None:
    assert wall_times([_job(tmp_path, "a", 1000.0, None, status="unfinished")]) is None


def test_a_many_section_summary_says_each_claim_once_with_its_sections_by_verdict() -> None:
    """With several sources, one sentence per claim groups the sources by verdict (the
    verdict table below has every row); a one-section report lists each claim's verdict."""
    from nsae.report.sections.summary import summary

    def e(claim: str, verdict: str, where: str, scope: str = "x vs y") -> dict:
        return {"claim": claim, "key": claim, "verdict": verdict, "where": where,
                "scope": scope, "counted": True}  # fmt: skip

    entries = [
        e("less shrinkage", "supported", "flat"),
        e("less shrinkage", "contradicted", "flat", "pooled"),  # not the claim's first scope
        e("less shrinkage", "inconclusive", "mixture"),
        e("less shrinkage", "supported", "massive"),
        e("removes the bias", "contradicted", "across sources: mixture vs flat"),
    ]
    text = summary(entries, 10, [0, 1]).text
    assert "less shrinkage: **supported** on flat, massive; **inconclusive** on mixture." in text
    assert "removes the bias: **contradicted** on mixture vs flat." in text
    assert "5 claims and scopes: 2 supported, 2 contradicted, 1 inconclusive" in text
    one = summary([{**x, "where": ""} for x in entries[:1]], 10, [0, 1]).text
    assert "less shrinkage: **supported**." in one and " on " not in one
