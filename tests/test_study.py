"""The study preset end to end, shrunk by `debug=study`: a real sweep of 3 seeds x 5
coefficient scales x 2 SAE types, and a report that renders every section from it, each
number traced to the metrics.json it came from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_grid_report import report, run_sweep

pytestmark = pytest.mark.slow
SECTIONS = (
    "### Premise",
    "### Results",
    "### Claims",
    "### Matched L0",
    "### Per norm decile",
    "### Training curves",
    "### Train versus eval L0",
    "### Dictionary",
)
CLAIMS = ("feature_suppression", "norm_l0_across_layers", "cross_layer_cv", "l1_l0", "on_par")
VERDICT = "SUPPORTED|BETTER|CONTRADICTED|INCONCLUSIVE|NOT JUDGED"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("study")
    run_sweep(
        base / "sweep",
        "experiment=nsae_study",
        "debug=study",
        "normalization_method=none",  # narrows the preset's grid to 2 x 5 x 3 = 30 jobs
        "coeff=alpha",
        "logger=csv",
        f"data.cache_dir={base / 'cache'}",
    )
    return base / "sweep"


def test_the_study_sweep_has_every_seed_and_scale(study: Path) -> None:
    summaries = [json.loads(p.read_text()) for p in study.glob("*/metrics.json")]
    assert len(summaries) == 30
    cells = {(s["condition"]["sae_type"], s["condition"]["scale"]) for s in summaries}
    assert len(cells) == 10
    assert {s["seed"] for s in summaries} == {0, 1, 2}
    assert all(s["provenance"]["epochs"] <= 2 for s in summaries)  # no token seen > twice


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
    assert traced == 10
