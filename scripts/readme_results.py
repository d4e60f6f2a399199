"""The README's default-results table, generated from real runs (never typed by hand).

    python scripts/readme_results.py            # run both defaults, rewrite the README block
    python scripts/readme_results.py --check    # run both defaults, fail if README differs
    python scripts/readme_results.py --runs DIR_NONE DIR_NORMALIZED   # from finished runs

It trains `python -m nsae.train` and `python -m nsae.train sae_type=normalized_sae` (the
README's defaults) and renders their final evaluation between the README markers
`<!-- default-results:begin -->` and `<!-- default-results:end -->`. The block's first line
states the wall times of those runs; --check compares everything else (the numbers), since
wall time depends on the machine's load.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN, END = "<!-- default-results:begin -->", "<!-- default-results:end -->"
SAE_TYPES = ("none", "normalized_sae")
ROWS = (
    ("l0", "L0 (of {n} features)", "{:.1f}"),
    ("explained_variance", "explained variance", "{:.3f}"),
    ("reconstruction_score", "reconstruction score", "{:.3f}"),
    ("kl", "KL", "{:.3f}"),
    ("feature_suppression", "feature suppression", "{:.3f}"),
)


def train(sae_type: str, out: Path) -> float:
    """Run the README default for one SAE type into `out`; return its wall time (s)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nsae.train", f"sae_type={sae_type}", f"hydra.run.dir={out}"],
        cwd=ROOT,
        check=True,
    )
    return time.perf_counter() - started


def render(summaries: dict[str, dict], seconds: dict[str, float] | None) -> list[str]:
    first = next(iter(summaries.values()))
    layers = first["layers"]
    timing = (
        ", ".join(f"`{t}` {seconds[t] / 60:.1f} min" for t in summaries)
        if seconds
        else "wall times not measured (rendered from existing runs)"
    )
    prov = first["provenance"]
    lines = [
        f"Wall time on this machine, including start-up and the activation cache: {timing}.",
        "",
        f"Final evaluation on {first['eval_tokens']:,} held-out tokens after "
        f"{prov['steps']} steps of {prov['batch_size']} tokens ({prov['epochs']} epochs of the "
        f"{prov['unique_train_tokens']:,} cached training tokens); nsae {prov['nsae_version']}.",
        "",
        "| sae_type | metric | " + " | ".join(f"layer {i}" for i in layers) + " | mean |",
        "|---|---|" + "---|" * (len(layers) + 1),
    ]
    for sae_type, summary in summaries.items():
        for key, name, fmt in ROWS:
            row = summary["metrics"].get(key)
            if row is None:
                continue
            cells = [row[f"layer_{i}"] for i in layers] + [row["mean"]]
            shown = " | ".join("n/a" if v is None else fmt.format(v) for v in cells)
            label = name.format(n=summary["n_features"])
            lines.append(f"| `{sae_type}` | {label} | {shown} |")
    return lines


def replace_block(text: str, lines: list[str]) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail


def current_block(text: str) -> list[str]:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n").splitlines()


def agree(have: list[str], want: list[str]) -> bool:
    """Same lines, numbers equal to within one unit of their last shown digit (a float
    summed in another order may round the other way)."""
    if len(have) != len(want):
        return False
    number = re.compile(r"-?\d+\.\d+")
    for a, b in zip(have, want, strict=True):
        if number.sub("#", a) != number.sub("#", b):
            return False
        for x, y in zip(number.findall(a), number.findall(b), strict=True):
            unit = 10.0 ** -len(x.split(".")[1])
            if abs(float(x) - float(y)) > unit * 1.01:
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README differs")
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("NONE", "NORMALIZED"))
    args = parser.parse_args(argv)
    seconds = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.runs:
            dirs = dict(zip(SAE_TYPES, args.runs, strict=True))
        else:
            dirs = {t: Path(tmp) / t for t in SAE_TYPES}
            seconds = {t: train(t, d) for t, d in dirs.items()}
        summaries = {t: json.loads((d / "metrics.json").read_text()) for t, d in dirs.items()}
    lines = render(summaries, seconds)
    text = README.read_text()
    if args.check:
        have, want = current_block(text)[1:], lines[1:]  # the timing line may differ
        if not agree(have, want):
            diff = difflib.unified_diff(have, want, "README.md", "fresh run", lineterm="")
            print("\n".join(diff))
            print("README's default results differ from a fresh run", file=sys.stderr)
            return 1
        print("README's default results match a fresh run")
        return 0
    README.write_text(replace_block(text, lines))
    print(f"wrote the default-results block of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
