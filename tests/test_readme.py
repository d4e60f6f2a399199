"""The README's set-up commands (CPU-only, GPU, tests), and .ci/run running the test command
verbatim."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import import_script

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


CPU_TORCH = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && "


def test_readme_has_a_cpu_a_gpu_and_a_test_command() -> None:
    cpu, gpu, test = readme_commands()
    assert cpu == CPU_TORCH + "pip install -e . && python -m nsae.train"
    assert gpu == "pip install torch==2.13.0 -e . && python -m nsae.train"
    assert test.startswith(CPU_TORCH) and test.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[2] in ci


def test_readme_bad_input_examples_print_what_readme_says(cli) -> None:
    """Each `$ python -m nsae.train ...` example of README's Bad input section prints the
    line README shows under it, and nothing else on stderr."""
    import shlex

    section = (ROOT / "README.md").read_text().split("## Bad input", 1)[1]
    examples = re.findall(r"^\$ python -m nsae\.train (.+)\n(nsae: error: .+)$", section, re.M)
    assert len(examples) >= 3
    for args, expected in examples:
        proc = cli(*shlex.split(args))
        assert proc.returncode == 2, args
        assert proc.stderr.strip() == expected, args


def script(name: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """Run scripts/<name> with this interpreter from the repository root."""
    cmd = [sys.executable, f"scripts/{name}", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_readme_default_results_match_a_fresh_run() -> None:
    """README's default-results block is what `scripts/readme_results.py` renders from
    fresh runs of the two README defaults (to within the last shown digit)."""
    proc = script("readme_results.py", "--check", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_readme_and_docs_link_only_to_files_in_the_repository() -> None:
    """Every relative link in README.md and docs/*.md names a file or folder of the repo
    (a clone has nothing else); anchors and web addresses aside."""
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            path = target.split("#", 1)[0]
            if not path or re.match(r"[a-z]+:", path):
                continue
            if not (doc.parent / path).resolve().exists():
                missing.append(f"{doc.name}: {target}")
    assert not missing, missing


def test_published_verdict_table_is_what_the_reports_compute() -> None:
    """docs/results/README.md's verdict table is `scripts/results_verdicts.py`'s rendering of
    the published report.json files: no verdict is typed by hand."""
    proc = script("results_verdicts.py", "--check", timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_moved_lists_exactly_the_verdicts_that_changed() -> None:
    """The "which verdicts moved" table: a changed verdict, one only the new reports have and
    one only the previous had are listed; an unchanged one, and one not counted, are not."""
    moved = import_script("results_verdicts").moved

    def v(claim: str, verdict: str, counted: bool = True) -> dict:
        return {
            "claim": claim,
            "scope": "s",
            "where": "all",
            "verdict": verdict,
            "counted": counted,
        }

    before = {
        "study": {"verdicts": [v("a", "inconclusive"), v("b", "supported"), v("c", "better")]}
    }
    now = {
        "study": {
            "verdicts": [
                v("a", "supported"),
                v("b", "supported"),
                v("d", "on par"),
                v("e", "contradicted", counted=False),
            ]
        }
    }
    rows = moved(before, now)
    assert rows == [
        "| [study](study/report.md) | all | a | s | inconclusive | **supported** |",
        "| [study](study/report.md) | all | d | s | — | **on par** |",
        "| [study](study/report.md) | all | c | s | better | **—** |",
    ]
    assert moved(before, before) == []


def test_a_study_first_published_since_the_previous_one_is_not_listed_as_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A study absent at PREVIOUS (git has the commit, not its report): its verdicts are
    new, not moved; a study whose verdicts stand still: "no verdict moved"."""
    script = import_script("results_verdicts")
    now = json.loads((ROOT / "docs" / "results" / "study" / "report.json").read_text())
    monkeypatch.setattr(script, "STUDIES", ("study", "baselines"))
    monkeypatch.setattr(script, "previous", lambda s: now if s == "study" else {})
    block = script.moved_block()
    assert block is not None and "no verdict moved" in block and "baselines" not in block
    monkeypatch.setattr(script, "previous", lambda s: None)  # a clone without history
    assert script.moved_block() is None
