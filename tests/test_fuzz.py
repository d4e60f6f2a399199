"""Property-based bad input (hypothesis): any wrong type, out-of-range value or bad
combination on any config key stops with exit 2, exactly one `nsae: error:` line, no
traceback, and writes nothing (no run directory, no cache entry)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
