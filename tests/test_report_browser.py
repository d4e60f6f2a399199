"""The report as a reader sees it: report.html of a small hand-built sweep opened in headless
Chromium at 1400 x 900. A script added to a copy of the page measures it
(getBoundingClientRect after the load event) and writes the result as JSON into
<pre id="probe">, read back with --dump-dom. Checks: the verdict table (id="verdicts") starts
on the first screen; no image and no table (or the scroll box that holds it) is wider than the
viewport; every image decoded (naturalWidth > 0). A screenshot is left in the test's tmp dir.
Skipped where no chromium (or chromium-browser) is on PATH; .ci/run installs Debian's."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nsae.report.__main__ import build
from tests.test_report_fixture import config, write_run

WIDTH, HEIGHT = 1400, 900
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)

PROBE = """<script>
window.addEventListener("load", () => {
  const vw = document.documentElement.clientWidth;
  const box = (el) => {
    const b = el.getBoundingClientRect();
    return {left: b.left, right: b.right, top: b.top + window.scrollY, width: b.width};
  };
  const scroller = (el) => {  // the nearest ancestor that scrolls sideways, else el
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (["auto", "scroll"].includes(getComputedStyle(p).overflowX)) return p;
    }
    return el;
  };
  const v = document.getElementById("verdicts");
  const out = {
    viewport: vw,
    imgs: [...document.images].map((i) => ({...box(i), natural: i.naturalWidth, alt: i.alt})),
    tables: [...document.querySelectorAll("table")].map((t) => ({
      ...box(scroller(t)), scrolls: scroller(t) !== t, inner: t.getBoundingClientRect().width,
      head: (t.rows[0] ? t.rows[0].textContent : "").slice(0, 60)})),
    verdicts: v ? {...box(v), table: !!(v.tagName === "TABLE" || v.querySelector("table"))}
                : null,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(*args: str, profile: Path) -> str:
    cmd = [
        str(BROWSER),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(screenshot, measurements) of the report of a sweep of 4 conditions x 2 alphas x
    2 seeds, built by nsae.report's build."""
    sweep = tmp_path_factory.mktemp("browser_sweep")
    conds = [("none", "none", "alpha", None), ("none", "input_norm", "beta", 1.0)]
    conds += [("normalized_sae", "none", "alpha", None), ("normalized_sae", "none", "beta", 1.0)]
    for i, (sae, norm, coeff, k) in enumerate(conds):
        for scale, l0 in ((1.0, 10.0 + i), (2.0, 5.0 + i)):
            for seed in range(2):
                vals = {"l0": [l0, 1.2 * l0 + seed], "kl": 1 / l0, "l0_cv": 0.1 + 0.01 * i}
                cfg = config(sae, norm, coeff, scale, seed, k=k)
                write_run(sweep, f"{sae}_{norm}_{coeff}_{scale}_{seed}", cfg, vals)
    build(sweep)
    report = sweep / "report.html"
    probe = sweep / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    profile = tmp_path_factory.mktemp("chromium_profile")
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=profile)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run: {dom[-500:]}"
    shot = tmp_path_factory.mktemp("screenshot") / "report.png"
    chromium(f"--screenshot={shot}", report.as_uri(), profile=profile)
    print(f"screenshot of {report}: {shot}")
    return shot, json.loads(html.unescape(found.group(1)))


def test_screenshot_written(page: tuple[Path, dict[str, Any]]) -> None:
    import matplotlib.image

    shot, _ = page
    assert matplotlib.image.imread(str(shot)).shape[:2] == (HEIGHT, WIDTH)


def test_images_decoded_and_inside_the_viewport(page: tuple[Path, dict[str, Any]]) -> None:
    _, m = page
    assert len(m["imgs"]) >= 10
    for img in m["imgs"]:
        assert img["natural"] > 0, img["alt"]
        assert img["left"] >= 0 and img["right"] <= m["viewport"] + 0.5, img


def test_tables_inside_the_viewport(page: tuple[Path, dict[str, Any]]) -> None:
    _, m = page
    assert m["tables"]
    for t in m["tables"]:
        assert t["left"] >= 0 and t["right"] <= m["viewport"] + 0.5, t


def test_verdict_table_on_the_first_screen(page: tuple[Path, dict[str, Any]]) -> None:
    _, m = page
    assert m["verdicts"] is not None, "no element with id='verdicts'"
    assert m["verdicts"]["table"], "no <table> in #verdicts"
    assert m["verdicts"]["top"] < HEIGHT, m["verdicts"]


ROOT = Path(__file__).resolve().parents[1]


def measure(report: Path, tmp: Path) -> dict[str, Any]:
    probe = tmp / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=tmp)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run: {dom[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_published_synthetic_report_opens_with_its_verdicts(tmp_path: Path) -> None:
    """docs/results/synthetic_study/report.html as a reader opens it: the summary and the
    verdict table on the first screen, every figure decoded and inside the page."""
    m = measure(ROOT / "docs/results/synthetic_study/report.html", tmp_path)
    assert m["verdicts"] is not None and m["verdicts"]["table"]
    assert m["verdicts"]["top"] < HEIGHT / 2, m["verdicts"]
    assert len(m["imgs"]) >= 20
    for img in m["imgs"]:
        assert img["natural"] >= 800 and img["right"] <= m["viewport"] + 0.5, img


@pytest.mark.parametrize("study", ["tuning", "tuning_synthetic"])
def test_a_published_tuning_report_shows_its_choices_whole(study: str, tmp_path: Path) -> None:
    """The choices table, caveats included, fits the viewport without scrolling sideways,
    on the first two screens; the figure decoded."""
    m = measure(ROOT / f"docs/results/{study}/report.html", tmp_path)
    (choices,) = [t for t in m["tables"] if t["head"].startswith("conditionchosen")]
    assert choices["inner"] <= m["viewport"] + 0.5, choices
    assert choices["top"] < 2 * HEIGHT, choices
    (img,) = m["imgs"]
    assert img["natural"] >= 800 and img["right"] <= m["viewport"] + 0.5, img
