"""The study preset end to end, as `experiment=nsae_study_mini` (the study's grid narrowed
to 2 SAE types x 2 coefficient scales x 3 seeds = 12 jobs, and 4 with twice the steps for
the doubling check, each shrunk by `debug=study`): a
real parallel sweep whose every output line names its job, and a report that renders every
section from it, each number traced to the metrics.json it came from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_grid_report import report

pytestmark = pytest.mark.slow
SECTIONS = (
    "### Premise",
    "### Results",
    "### Claims",
    "### Matched L0",
    "### Per norm decile",
    "### Convergence by doubling",
    "### Training curves",
    "### Train versus eval L0",
    "### Dictionary",
)
CLAIMS = ("feature_suppression", "norm_l0_across_layers", "cross_layer_cv", "l1_l0", "on_par")
VERDICT = "SUPPORTED|BETTER|CONTRADICTED|INCONCLUSIVE|NOT JUDGED"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("study")
    proc = run_cli(
        "-m",
        "experiment=nsae_study_mini",
        "logger=csv",
        f"data.cache_dir={base / 'cache'}",
        f"hydra.sweep.dir={base / 'sweep'}",
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base / "sweep", proc.stdout


@pytest.fixture(scope="module")
def study(sweep: tuple[Path, str]) -> Path:
    return sweep[0]


def test_the_study_sweep_has_every_seed_and_scale(study: Path) -> None:
    every = [json.loads(p.read_text()) for p in study.glob("*/metrics.json")]
    summaries = [s for s in every if s["steps"] == 8]
    doubled = [s for s in every if s["steps"] == 16]
    assert len(summaries) == 12 and len(doubled) == 4
    assert {(s["condition"]["scale"], s["seed"]) for s in doubled} == {(2.0, 0), (2.0, 1)}
    cells = {(s["condition"]["sae_type"], s["condition"]["scale"]) for s in summaries}
    assert len(cells) == 4
    assert {s["seed"] for s in summaries} == {0, 1, 2}
    assert all(s["provenance"]["epochs"] <= 2 for s in summaries)  # no token seen > twice
    names = sorted(p.parent.name for p in study.glob("*/metrics.json"))
    assert "0_relu_none_alpha=1.0_seed=0_steps=8" in names  # condition and seed, each once


def test_every_line_of_the_sweep_names_its_job(sweep: tuple[Path, str]) -> None:
    """Under the parallel launcher every line a job prints starts with its job number; the
    sweep's own lines (Hydra's, the summary) do not; joblib's repr line is gone; the
    accelerator banner is printed once per worker process, not once per job."""
    study, out = sweep
    own = ("[20", "nsae: sweep:", "nsae: report:")  # Hydra's timestamped lines, the summary
    lines = [line for line in out.splitlines() if line.strip()]
    tagged = [line for line in lines if line.startswith("[job ")]
    assert all(line.startswith(("[job ", *own)) for line in lines), lines
    for num in range(16):
        mine = [line for line in tagged if line.startswith(f"[job {num}] ")]
        assert any(line.startswith(f"[job {num}] run dir: {study}/{num}_") for line in mine)
        assert f"[job {num}] nsae: note: a debug preset's run" in "\n".join(mine)
    assert "Joblib.Parallel(" not in out
    assert sum("GPU available:" in line for line in lines) <= 2  # two worker processes
    assert lines[-1] == f"nsae: report: python -m nsae.report {study}"


def test_the_report_renders_every_section_from_the_runs(study: Path) -> None:
    proc = report(study)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (study / "report.md").read_text()
    for title in SECTIONS:
        assert title in md, title
    for claim in CLAIMS:
        assert re.search(rf"^#### {claim}: ({VERDICT})$", md, re.M)
    # an alpha-only grid holds no beta: claims about beta are not judged, the others are
    assert re.search(r"^#### cross_layer_cv: NOT JUDGED$", md, re.M)
    assert re.search(r"^#### on_par: (SUPPORTED|BETTER|CONTRADICTED|INCONCLUSIVE)$", md, re.M)
    html = (study / "report.html").read_text()
    assert "report_files/" not in html and "data:image/png;base64," in html
    for png in (study / "report_files").glob("*.png"):
        assert png.stat().st_size > 1000, png.name
    record = json.loads((study / "report.json").read_text())
    (section,) = record["sections"]
    by_dir = {p.parent.name: json.loads(p.read_text()) for p in study.glob("*/metrics.json")}
    traced = 0
    for cell in section["cells"]:
        assert len(cell["sources"]) == 3  # three seeds behind every cell
        l0s = [by_dir[src]["metrics"]["l0"]["mean"] for src in cell["sources"]]
        assert cell["metrics"]["l0"]["n"] == 3
        assert cell["metrics"]["l0"]["mean"] == pytest.approx(sum(l0s) / 3)
        traced += 1
    assert traced == 4
    doubling = section["doubling"]  # each condition's scale-2 cell, 8 -> 16 steps, seeds 0, 1
    assert set(doubling) == {"standard SAE, plain loss, alpha", "Normalized SAE, plain loss, alpha"}
    for entry in doubling.values():
        assert entry["steps"] == [8, 16] and entry["seeds"] == [0, 1]
        base = [by_dir[s] for s in entry["sources"] if by_dir[s]["steps"] == 8]
        twice = [by_dir[s] for s in entry["sources"] if by_dir[s]["steps"] == 16]
        l0 = [sum(r["metrics"]["l0"]["mean"] for r in rs) / 2 for rs in (base, twice)]
        assert entry["changes"]["l0"] == pytest.approx((l0[1] - l0[0]) / abs(l0[0]))
