"""Property-based bad input (hypothesis): any wrong type, out-of-range value or bad
combination on any config key stops with exit 2, exactly one `nsae: error:` line, no
traceback, and writes nothing (no run directory, no cache entry)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CHEAP

pytestmark = pytest.mark.slow

NOT_A_NUMBER = st.sampled_from(["abc", "[1,2]", "{a:1}", "true", "''", "1e", "--1"])
NEGATIVE = st.floats(min_value=-1e6, max_value=-1e-6).map(lambda v: f"{v:.6g}")
NOT_POSITIVE_INT = st.integers(min_value=-(10**6), max_value=0).map(str)
NOT_AN_INT = st.sampled_from(["1.5", "abc", "[3]", "2e-3"])
BAD_NAME = st.from_regex(r"[a-z]{3,8}_x", fullmatch=True)

# key -> values that are wrong for it (types, ranges, enums)
BAD_VALUES = {
    "coeff.alpha": NOT_A_NUMBER | NEGATIVE,
    "optim.lr": NOT_A_NUMBER | NEGATIVE | st.just("0"),
    "sae.expansion_factor": NOT_POSITIVE_INT | NOT_AN_INT,
    "trainer.max_steps": NOT_POSITIVE_INT | NOT_AN_INT,
    "data.batch_size": NOT_POSITIVE_INT | NOT_AN_INT,
    "data.context_size": NOT_POSITIVE_INT | st.integers(129, 10**6).map(str),
    "data.n_eval_tokens": NOT_POSITIVE_INT,
    "data.buffer_tokens": NOT_POSITIVE_INT | st.just("100"),  # < 2 x batch_size
    "source.layers": st.integers(4, 100).map(lambda i: f"[{i}]") | BAD_NAME,
    "source.hook_site": BAD_NAME,
    "sae.init_b_dec": BAD_NAME,
    "sae_type": BAD_NAME,
    "normalization_method": BAD_NAME,
    "coeff": BAD_NAME,
    "trainer.accelerator": BAD_NAME,
    "optim.decay": BAD_NAME,
}


@st.composite
def bad_overrides(draw: st.DrawFn) -> list[str]:
    """One to three overrides, at least one of them wrong."""
    keys = draw(st.lists(st.sampled_from(sorted(BAD_VALUES)), min_size=1, max_size=3, unique=True))
    return [f"{key}={draw(BAD_VALUES[key])}" for key in keys]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(overrides=bad_overrides())
def test_any_bad_override_is_one_line_and_writes_nothing(cli, tmp_path: Path, overrides) -> None:
    out = tmp_path / "fuzz"
    out.mkdir(exist_ok=True)
    before = sorted(out.rglob("*"))
    proc = cli(*overrides, f"hydra.run.dir={out / 'run'}", f"data.cache_dir={out / 'cache'}")
    assert proc.returncode == 2, (overrides, proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr + proc.stdout, overrides
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("nsae: error: "), (overrides, errors)
    assert sorted(out.rglob("*")) == before, overrides


# -- widened: group choices, key paths, data files, run-directory states -------------------
# Every example ends in exit 0 or one `nsae: error:` line (exit 2), never a traceback, and no
# file of an earlier run changes. Strategies almost always hold one element that is wrong
# for sure (refused at preflight, in about a second); a command that may be valid trains a
# tiny run (CHEAP), at most VALID_RUNS of them per test, so the file stays within minutes.

PROTECTED = {"debug", "logger", "trainer", "metrics", "data", "hydra", "experiment", "source"}
VALID_RUNS = 2
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
CHEAP_OPTIONS = {  # group -> options that train a tiny run as fast as the default
    "sae_type": ["none", "normalized_sae", "relu", "topk", "jumprelu", "gated", "batchtopk"],
    "normalization_method": ["none", "input_norm", "input_norm_squared"],
    "coeff": ["alpha", "beta"],
    "logger": ["csv", "none"],
    "source": ["kjv_gpt2"],
    "data": ["kjv"],
    "trainer": ["default"],
}
GOOD_VALUES = {
    "seed": "1",
    "coeff.alpha": "0.5",
    "optim.lr": "0.001",
    "optim.decay": "cosine",
    "sae.expansion_factor": "2",
    "sae.init_b_dec": "geometric_median",
    "console.progress_every_s": "5",
    "resume": "false",
}


def groups() -> list[str]:
    from nsae.constants import CONF_DIR

    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")


def misspelt(word: str) -> st.SearchStrategy[str]:
    """`word` with one character dropped, doubled or replaced."""
    at = st.integers(0, len(word) - 1)
    return st.one_of(
        at.map(lambda i: word[:i] + word[i + 1 :]),
        at.map(lambda i: word[:i] + word[i] + word[i:]),
        st.tuples(at, st.sampled_from("xqz_")).map(
            lambda t: word[: t[0]] + t[1] + word[t[0] + 1 :]
        ),
    )


@st.composite
def element(draw: st.DrawFn) -> tuple[str, bool]:
    """One override and whether it is wrong for sure."""
    from nsae.config import group_options
    from nsae.hints import known_keys

    known = known_keys()
    kind = draw(st.sampled_from(["group", "bad_group", "key", "bad_key", "plus", "tilde"]))
    if kind == "group":
        group = draw(st.sampled_from(sorted(CHEAP_OPTIONS)))
        return f"{group}={draw(st.sampled_from(CHEAP_OPTIONS[group]))}", False
    if kind == "bad_group":
        group = draw(st.sampled_from(groups()))
        options = group_options(group)
        bad = draw(misspelt(draw(st.sampled_from(options))).filter(lambda o: o not in options))
        return f"{group}={bad or 'x'}", True
    if kind == "key":
        key = draw(st.sampled_from(sorted(GOOD_VALUES)))
        return f"{key}={GOOD_VALUES[key]}", False
    if kind == "bad_key":
        key = draw(misspelt(draw(st.sampled_from(known))).filter(lambda k: k not in known))
        return f"{key.strip('.') or 'x'}=1", True
    if kind == "plus":
        name = draw(st.from_regex(r"[a-z]{2,6}(\.[a-z]{2,6})?", fullmatch=True))
        if draw(st.booleans()):
            return f"++{name}=1", False  # any key, for one's own config
        return (f"+{name}=1", True) if name not in known else (f"++{name}=1", False)
    removable = [k for k in known if k.split(".")[0] not in PROTECTED]
    key = draw(st.sampled_from(["sae_type", *removable]))
    return f"~{key}", key == "sae_type"


def tree(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
        # a cache entry's last use and lock; the memo of data files' content hashes
        if not p.name.endswith((".used", ".lock", "file_digests.json"))
    }


def check_outcome(proc, label: object) -> None:
    """Exit 0, or exit 2 with one `nsae: error:` line (the last one), no traceback, and no
    `did you mean X?` naming the very thing it refuses."""
    import re

    assert "Traceback" not in proc.stderr + proc.stdout, (label, proc.stderr[-3000:])
    assert proc.returncode in (0, 2), (label, proc.returncode, proc.stderr[-3000:])
    if proc.returncode == 0:
        return
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("nsae: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], (label, lines[-5:])
    named = errors[0].split()[2].lstrip("+~").rstrip(":")
    hint = re.search(r"\(did you mean (\S+)\?\)", errors[0])
    assert not hint or hint.group(1) not in (named, named.split("=")[-1]), (label, errors[0])


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished tiny run (its fixed inputs stored in a shared cache), and the same run
    made interrupted (killed during the final evaluation: a checkpoint, no metrics.json)."""
    import shutil

    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("earlier")
    cache = root / "cache"
    proc = run_cli(*CHEAP, f"data.cache_dir={cache}", f"hydra.run.dir={root / 'finished'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.copytree(root / "finished", root / "interrupted")
    (root / "interrupted" / "metrics.json").unlink()
    for layer in (root / "interrupted").glob("layer_*"):
        shutil.rmtree(layer)
    return {"root": root, "cache": cache}


class Budget:
    """How many commands that may train each test has run (see VALID_RUNS); an example that
    ran once runs again (hypothesis replays a failing one)."""

    def __init__(self) -> None:
        self.ran: set[str] = set()

    def allow(self, maybe_valid: bool, example: object) -> None:
        from hypothesis import assume

        if maybe_valid and repr(example) not in self.ran:
            assume(len(self.ran) < VALID_RUNS)
            self.ran.add(repr(example))


@settings(SETTINGS, max_examples=16)
@given(items=st.lists(element(), min_size=1, max_size=3))
def test_group_choices_and_key_paths(cli, tmp_path: Path, earlier, items) -> None:
    budget = test_group_choices_and_key_paths.budget  # type: ignore[attr-defined]
    budget.allow(not any(sure for _, sure in items), items)
    overrides = [o for o, _ in items]
    before = tree(earlier["root"])
    run_dir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    proc = cli(*overrides, *CHEAP, f"data.cache_dir={earlier['cache']}", f"hydra.run.dir={run_dir}")
    check_outcome(proc, overrides)
    if any(sure for _, sure in items):
        assert proc.returncode == 2, overrides
        assert not run_dir.exists(), overrides  # refused before anything was written
    after = tree(earlier["root"])
    assert {k: after.get(k) for k in before} == before, overrides


test_group_choices_and_key_paths.budget = Budget()  # type: ignore[attr-defined]


def data_file(kind: str, size: int, where: Path) -> Path:
    """A data file: empty, binary, UTF-8 text cut inside its last character, a directory."""
    from nsae.config import asset

    path = where / kind
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes(bytes(range(128, 256)) * (size // 128 + 1))
    else:  # "truncated": the first `size` bytes of the corpus, then half of a "é"
        text = Path(asset("kjv/train.txt")).read_bytes()[:size]
        path.write_bytes(text + "é".encode()[:1])
    return path


@settings(SETTINGS, max_examples=5)
@given(
    files=st.dictionaries(
        st.sampled_from(["train", "eval"]),
        st.tuples(
            st.sampled_from(["empty", "binary", "truncated", "directory"]),
            st.sampled_from([1000, 200_000]),
        ),
        min_size=1,
    )
)
def test_data_file_contents(cli, tmp_path: Path, earlier, files) -> None:
    budget = test_data_file_contents.budget  # type: ignore[attr-defined]
    budget.allow(all(kind == "truncated" for kind, _ in files.values()), files)
    here = tmp_path / f"ex{len(list(tmp_path.iterdir()))}"
    here.mkdir()
    args = []
    for split, (kind, size) in sorted(files.items()):
        (here / split).mkdir()
        args.append(f"data.data_files.{split}={data_file(kind, size, here / split)}")
    before = tree(earlier["root"])
    proc = cli(*args, *CHEAP, f"data.cache_dir={earlier['cache']}", f"hydra.run.dir={here}/run")
    check_outcome(proc, files)
    if any(kind != "truncated" for kind, _ in files.values()):
        assert proc.returncode == 2 and not (here / "run").exists(), files
    after = tree(earlier["root"])
    assert {k: after.get(k) for k in before} == before, files


test_data_file_contents.budget = Budget()  # type: ignore[attr-defined]
STATES = ["finished", "interrupted", "foreign", "read-only", "file"]


def make_state(state: str, path: Path, earlier: dict[str, Path]) -> None:
    import shutil

    if state in ("finished", "interrupted"):
        shutil.copytree(earlier["root"] / state, path)
    elif state == "file":
        path.write_text("not a directory\n")
    else:  # unrelated files; read-only: the same, unwritable
        (path / "notes").mkdir(parents=True)
        (path / "README.md").write_text("my notes\n")
        (path / "notes" / "data.csv").write_text("a,b\n1,2\n")
        if state == "read-only":
            for p in (path / "notes", path):
                p.chmod(0o555)


@settings(SETTINGS, max_examples=6)
@given(
    state=st.sampled_from(STATES),
    resume=st.sampled_from([None, "true", "false"]),
    extra=st.lists(st.sampled_from(["seed=1", "coeff.alpha=0.5", "console.progress_every_s=5"])),
)
def test_run_directory_states(cli, tmp_path: Path, earlier, state, resume, extra) -> None:
    """hydra.run.dir names an earlier run's directory, or one that is not nsae's."""
    import os

    changes = [e for e in extra if not e.startswith("console")]  # console keys: bookkeeping
    root = os.geteuid() == 0  # root writes into a read-only directory
    maybe_valid = (state == "interrupted" and resume == "true" and not changes) or (
        resume != "true" and (state == "foreign" or (state == "read-only" and root))
    )
    budget = test_run_directory_states.budget  # type: ignore[attr-defined]
    budget.allow(maybe_valid, (state, resume, extra))
    here = tmp_path / f"ex{len(list(tmp_path.iterdir()))}"
    here.mkdir()
    target = here / state
    make_state(state, target, earlier)
    before = tree(here)
    args = [*extra, *([f"resume={resume}"] if resume else [])]
    try:
        proc = cli(*args, *CHEAP, f"data.cache_dir={earlier['cache']}", f"hydra.run.dir={target}")
    finally:
        for p in (target, target / "notes"):
            if p.is_dir():
                p.chmod(0o755)
    label = (state, args)
    check_outcome(proc, label)
    after = tree(here)
    if proc.returncode == 2:
        assert after == before, label  # nothing written, nothing touched
        return
    assert maybe_valid, label
    assert (target / "metrics.json").is_file(), label
    # a resumed run goes on writing its checkpoint and its log
    continued = {"checkpoints/last.ckpt", "train.log"} if state == "interrupted" else set()
    kept = {k: after.get(k) for k in before if k.split("/", 1)[-1] not in continued}
    assert kept == {k: v for k, v in before.items() if k.split("/", 1)[-1] not in continued}


test_run_directory_states.budget = Budget()  # type: ignore[attr-defined]
