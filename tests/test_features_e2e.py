"""`python -m nsae.features` on a real tiny trained run: the pages are written and
self-contained, their numbers equal a brute force over the run's evaluation tokens, a run
compared with itself pairs every feature with itself, a SAELens-format folder works with
--model, and the index page works in headless Chromium (search, sort). Chromium tests are
skipped where no chromium (or chromium-browser) is on PATH, as in test_report_browser."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import ROOT, run_cli
from tests.test_report_browser import BROWSER, chromium

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def features(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "nsae.features", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def data_of(page: Path) -> dict[str, Any]:
    found = re.search(
        r"<script type='application/json' id='data'>(.*?)</script>", page.read_text(), re.S
    )
    assert found, page
    return json.loads(found.group(1).replace("<\\/", "</"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("features_run") / "run"
    proc = run_cli("debug=tiny", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def pages(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("features_out")
    features(str(run_dir), "--layers", "0,2", "--compare", str(run_dir), "--out", str(out))
    return out


def test_pages_are_written_and_self_contained(pages: Path) -> None:
    names = {p.relative_to(pages).as_posix() for p in pages.rglob("*.html")}
    assert names == {
        "index.html",
        "layer_0.html",
        "layer_2.html",
        "compare_layer_0.html",
        "compare_layer_2.html",
        "other/layer_0.html",
        "other/layer_2.html",
    }
    for page in pages.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", text), page
        assert "<link" not in text and "@import" not in text, page


def brute_force(run_dir: Path, layer: int) -> tuple[torch.Tensor, int]:
    """Firing counts of layer `layer`'s features over the run's evaluation contexts, by
    nsae's own pieces (contexts, harvest, export), all at once."""
    import nsae
    from nsae.data.contexts import spread_contexts
    from nsae.data.source import Harvester, configured_source
    from nsae.features.runs import open_run

    cfg = open_run(run_dir).config
    model, tok = configured_source(cfg.source)
    n = cfg.data.n_eval_tokens // cfg.data.context_size
    ids = torch.stack(list(spread_contexts(cfg.data, cfg.data.eval_split, tok, n, "x")))
    x = Harvester(model, [layer], cfg.source.hook_site)(ids).reshape(-1, 1, model.config.n_embd)
    with torch.no_grad():
        f = nsae.load(run_dir / f"layer_{layer}").encode(x)[:, 0]
    return (f > 0).sum(0), len(f)


def test_numbers_equal_a_brute_force_over_the_eval_tokens(pages: Path, run_dir: Path) -> None:
    view = data_of(pages / "layer_2.html")
    counts, n = brute_force(run_dir, 2)
    assert view["n_tokens"] == n == 512
    assert view["count"] == counts.tolist()
    assert any(view["top"]) and view["up"] and "layer norm" in view["lens"]
    for j, entries in enumerate(view["top"]):
        values = [e[0] for e in entries]
        assert values == sorted(values, reverse=True) and len(entries) <= 10
        assert len(entries) == min(10, counts[j])


def test_self_compare_pairs_every_feature_with_itself(pages: Path) -> None:
    for name in ("layer_2.html", "other/layer_2.html"):
        view = data_of(pages / name)
        assert view["partner"] == list(range(view["n_features"]))
        assert min(view["partner_cos"]) > 1 - 1e-6
    text = (pages / "compare_layer_2.html").read_text()
    assert "0 of 1024 in" in text


def test_saelens_folder_with_model(run_dir: Path, tmp_path: Path, pages: Path) -> None:
    folder = tmp_path / "lens" / "blocks.2.hook_resid_post"
    shutil.copytree(run_dir / "layer_2", folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    del cfg["nsae"]
    cfg["model_name"] = "some-hub-model"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    model = str(ROOT / "nsae" / "assets" / "kjv-gpt2")
    features(str(folder), "--model", model, "--tokens", "512", "--out", str(out))
    assert data_of(out / "layer_2.html")["count"] == data_of(pages / "layer_2.html")["count"]


PROBE = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
window.addEventListener("load", () => {
  const search = document.getElementById("search");
  search.value = "%s";
  search.dispatchEvent(new Event("input"));
  const results = [...document.querySelectorAll("#results li")].map((li) => li.textContent);
  document.querySelector("#t2 th[data-key='max']").click();
  const rows = [...document.querySelectorAll("#t2 table tr")].slice(1);
  const out = {results, errors: window.__errors,
    header: document.querySelector("#t2 th[data-key='max']").textContent,
    ids: rows.map((r) => r.cells[0].textContent),
    max: rows.map((r) => parseFloat(r.cells[2].textContent))};
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def dump_dom(uri: str, profile: Path) -> str:
    """The page's DOM after its scripts ran (the report's browser test drives Chromium)."""
    return chromium("--virtual-time-budget=10000", "--dump-dom", uri, profile=profile)


@pytest.mark.skipif(
    BROWSER is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)
def test_index_search_and_sort_in_chromium(pages: Path, tmp_path: Path) -> None:
    index = data_of(pages / "index.html")
    layer2 = next(L for L in index["layers"] if L["layer"] == 2)
    sizes = {t: len(fs) for t, fs in layer2["tokens"].items() if len(fs) <= 100}
    token = max(sizes, key=lambda t: sizes[t])  # the search matches case-insensitively
    same = [t for t in layer2["tokens"] if t.lower() == token.lower()]
    want = {f"feature {j}" for t in same for j, _ in layer2["tokens"][t]}
    probe = pages / "probe.html"
    probe.write_text(
        (pages / "index.html").read_text().replace("</body>", PROBE % token + "</body>")
    )
    dom = dump_dom(probe.as_uri(), tmp_path)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-1000:]
    m = json.loads(html.unescape(found.group(1)))
    assert m["errors"] == []
    shown = {re.search(r"feature \d+", r).group(0) for r in m["results"] if "layer 2" in r}
    assert shown == want and token in " ".join(m["results"])
    assert m["header"].startswith("max act") and "\u25bc" in m["header"]
    assert m["max"] == sorted(m["max"], reverse=True) and len(m["max"]) > 10


@pytest.mark.skipif(
    BROWSER is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)
def test_feature_page_renders_its_contexts_in_chromium(pages: Path, tmp_path: Path) -> None:
    view = data_of(pages / "layer_2.html")
    j = max(range(view["n_features"]), key=lambda i: view["count"][i])
    probe = pages / "probe_layer.html"
    script = (
        "<script>window.addEventListener('load', () => { const pre = "
        "document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify("
        "{title: document.querySelector('#card h2').textContent, ctx: document."
        "querySelectorAll('#card .ctx').length, hits: document.querySelectorAll("
        "'#card .ctx .hit').length}); document.body.appendChild(pre); });</script>"
    )
    probe.write_text((pages / "layer_2.html").read_text().replace("</body>", script + "</body>"))
    dom = dump_dom(f"{probe.as_uri()}#{j}", tmp_path)
    m = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))
    assert m["title"].startswith(f"Feature {j}")
    n = len(view["top"][j]) + len(view["samples"][j])
    assert m["ctx"] == n and m["hits"] == n


def test_synthetic_run_matches_true_features(tmp_path: Path) -> None:
    """A synthetic run: statistics on its evaluation stream, each feature's best-matching
    true feature (|cos| as the report's MCC reads it), no contexts, said on the page."""
    pytest.importorskip("sae_lens")
    run = tmp_path / "synthetic_run"
    proc = run_cli("source=synthetic", "source.layers=[0]", "debug=tiny", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    features(str(run), "--out", str(tmp_path / "out"))
    view = data_of(tmp_path / "out" / "layer_0.html")
    assert not view["contexts"] and "up" not in view
    assert len(view["truth"]) == view["n_features"]
    assert all(0 <= c <= 1 + 1e-6 for c in view["truth_cos"])
    from nsae.data.synthetic import SyntheticSource
    from nsae.features.pairing import ground_truth_match
    from nsae.features.runs import open_run

    cfg = open_run(run).config
    truth = SyntheticSource(cfg.source, [0], cfg.seed, "cpu").dict_LFD[0]
    import nsae

    ids, _ = ground_truth_match(nsae.load(run / "layer_0").W_dec_LMD[0].detach(), truth)
    assert view["truth"] == ids.tolist()
    assert "synthetic source" in (tmp_path / "out" / "index.html").read_text()
