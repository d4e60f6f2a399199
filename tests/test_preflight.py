"""A finished job is never rewritten or passed off as another; bad jobs stop a command
before any job starts (nsae/preflight.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from nsae.errors import NsaeError
from nsae.preflight import compose_jobs, preflight
from nsae.rundir import RunDir, differing_keys, display_path

CFG = {"seed": 0, "optim": {"lr": 0.003}, "data": {"cache_dir": "/a"}, "resume": False}


def write_run(run_dir: Path, cfg: dict, finished: bool, ckpt: bool = False) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    if finished:
        (run_dir / "metrics.json").write_text("{}")
    if ckpt:
        import torch

        (run_dir / "checkpoints").mkdir()
        torch.save({"global_step": 5}, run_dir / "checkpoints" / "last.ckpt")


def test_a_new_directory_is_new(tmp_path: Path) -> None:
    assert RunDir(tmp_path / "run").plan(CFG, multirun=False, resume=False) == "new"
    with pytest.raises(NsaeError, match=r"resume=true but .*last.ckpt does not exist"):
        RunDir(tmp_path / "run").plan(CFG, multirun=False, resume=True)


def test_a_finished_job_is_skipped_only_under_the_same_config(tmp_path: Path) -> None:
    write_run(tmp_path / "run", CFG, finished=True)
    same_but_paths = {**CFG, "data": {"cache_dir": "/elsewhere"}, "resume": True}
    assert RunDir(tmp_path / "run").plan(same_but_paths, multirun=True, resume=False) == "skip"
    other = {**CFG, "optim": {"lr": 0.01}}
    with pytest.raises(NsaeError, match=r"another configuration \(differs in optim.lr\)"):
        RunDir(tmp_path / "run").plan(other, multirun=True, resume=False)
    with pytest.raises(NsaeError, match="already holds a finished run"):
        RunDir(tmp_path / "run").plan(CFG, multirun=False, resume=False)


def test_an_interrupted_job_resumes_in_a_sweep_and_needs_resume_alone(tmp_path: Path) -> None:
    write_run(tmp_path / "run", CFG, finished=False, ckpt=True)
    assert RunDir(tmp_path / "run").plan(CFG, multirun=True, resume=False) == "resume"
    assert RunDir(tmp_path / "run").plan(CFG, multirun=False, resume=True) == "resume"
    with pytest.raises(NsaeError, match="holds an interrupted run; continue it with resume=true"):
        RunDir(tmp_path / "run").plan(CFG, multirun=False, resume=False)
    with pytest.raises(NsaeError, match=r"differs in seed"):
        RunDir(tmp_path / "run").plan({**CFG, "seed": 1}, multirun=True, resume=False)


def test_a_run_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(NsaeError, match="is a file"):
        RunDir(tmp_path / "run").plan(CFG, multirun=False, resume=False)


def test_asset_paths_compare_as_embedded_names() -> None:
    from nsae.config import asset

    assert display_path(asset("kjv-gpt2")) == "embedded:kjv-gpt2"
    a = {"source": {"name": asset("kjv-gpt2")}}
    assert differing_keys(a, {"source": {"name": "embedded:kjv-gpt2"}}) == []
    assert differing_keys(a, {"source": {"name": "gpt2"}}) == ["source.name"]


def test_sweep_jobs_compose_as_hydra_names_them(tmp_path: Path) -> None:
    multirun, jobs, _ = compose_jobs(["-m", "experiment=nsae_grid", f"hydra.sweep.dir={tmp_path}"])
    assert multirun and len(jobs) == 12
    assert jobs[0].run_dir == tmp_path / "0_relu_none_alpha=2.0_seed=0"
    assert jobs[11].run_dir.name.startswith("11_normalized_sae_input_norm_squared_beta-alpha=")


def test_every_bad_job_is_named_before_any_starts(tmp_path: Path) -> None:
    argv = ["-m", "coeff.alpha=1,-1,2,abc", f"hydra.sweep.dir={tmp_path / 's'}"]
    with pytest.raises(NsaeError) as err:
        preflight(argv)
    message = str(err.value)
    assert "2 of 4 jobs cannot run, so none was started" in message
    assert "job 1 (coeff.alpha=-1)" in message and "job 3 (coeff.alpha=abc)" in message
    assert not (tmp_path / "s").exists()


def sha1_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_rerunning_a_sweep_never_touches_a_finished_job(cli, tmp_path: Path) -> None:
    """Same overrides: skipped, byte for byte untouched. A results-changing override: the
    whole re-run is refused before any job starts, and still nothing changes."""
    sweep = tmp_path / "sweep"
    args = ["-m", "debug=tiny", "source.layers=[1]", f"hydra.sweep.dir={sweep}"]
    first = cli(*args, "sae_type=none")
    assert first.returncode == 0, first.stderr[-2000:]
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]
    assert not (job / ".hydra").exists()
    before = sha1_tree(sweep)
    again = cli(*args, "sae_type=none")
    assert again.returncode == 0 and "skipping" in again.stdout
    assert sha1_tree(sweep) == {**before, "multirun.yaml": sha1_tree(sweep)["multirun.yaml"]}
    changed = cli(*args, "sae_type=none", "optim.lr=0.01")
    assert changed.returncode == 2
    errors = [line for line in changed.stderr.splitlines() if line.startswith("nsae: error:")]
    assert len(errors) == 1 and "differs in optim.lr" in errors[0] and job.name in errors[0]
    assert "Traceback" not in changed.stderr
    assert sha1_tree(sweep) == {**before, "multirun.yaml": sha1_tree(sweep)["multirun.yaml"]}
    from nsae.ranks import hydra_quote  # the job's name holds '=': Hydra needs it quoted

    single = cli("debug=tiny", "source.layers=[1]", f"hydra.run.dir={hydra_quote(str(job))}")
    assert single.returncode == 2 and "already holds a finished run" in single.stderr
    assert sha1_tree(sweep) == {**before, "multirun.yaml": sha1_tree(sweep)["multirun.yaml"]}


def test_a_bad_job_in_a_cli_sweep_stops_it_before_anything_is_written(cli, tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    syntaxes = (
        "coeff.alpha=1,-1,2",  # a list with one bad job
        "sae_type=choice(none,foo)",
        "sae_type=glob(zzz*)",  # matches nothing: no job
        "normalization_method=range(1,3)",  # numbers for a group
    )
    for bad in syntaxes:
        proc = cli("-m", bad, f"hydra.sweep.dir={sweep}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("nsae: error: "), lines
        assert not sweep.exists()
    assert "job 1 (coeff.alpha=-1)" in cli("-m", "coeff.alpha=1,-1,2").stderr
    assert "sae_type=foo is not an option" in cli("-m", "sae_type=choice(none,foo)").stderr


def test_two_hydra_modes_are_refused_in_one_line(cli, tmp_path: Path) -> None:
    """`-m --cfg job` (Hydra's own refusal is a traceback): one line naming both modes and
    what to type instead; `--cfg job` alone still prints the job's config."""
    sweep = tmp_path / "s"
    proc = cli("-m", "--cfg", "job", "sae_type=none,normalized_sae", f"hydra.sweep.dir={sweep}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("nsae: error: --multirun and --cfg cannot be combined")
    assert "--cfg job with that job's overrides" in lines[0]
    assert not sweep.exists()
    alone = cli("--cfg", "job", "sae_type=normalized_sae")
    assert alone.returncode == 0 and "type: normalized_sae" in alone.stdout, alone.stderr


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(cli, tmp_path: Path) -> None:
    """The middle job's loss is not finite (c_l x L1 overflows float32): it leaves failed.json,
    the other two finish, the sweep prints a summary and exits 1."""
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m",
        "debug=tiny",
        "source.layers=[0]",
        "metrics.splice=false",
        "coeff.alpha=1,1e38,2",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [(j / "metrics.json").is_file() for j in jobs] == [True, False, True]
    failed = jobs[1] / "failed.json"
    assert "non-finite loss" in failed.read_text()
    assert "nsae: sweep: 2 finished, 0 skipped, 1 failed" in proc.stdout
    assert jobs[1].name in proc.stdout and "Traceback" not in proc.stderr
    from tests.test_grid_report import report

    rendered = report(sweep)  # a one-layer sweep with a failed job still has a report
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    md = (sweep / "report.md").read_text()
    assert "### Results" in md and "FAILED: non-finite loss" in md


def test_the_checked_directory_is_pinned_for_hydra(tmp_path: Path, monkeypatch) -> None:
    """The default directories hold ${now:...}: the command pins the one it checked, so
    Hydra cannot resolve another one seconds later."""
    monkeypatch.chdir(tmp_path)
    checked = preflight(["-m", "debug=tiny", "seed=0,1"])
    key, _, value = checked.pin.partition("=")
    assert key == "hydra.sweep.dir" and value.startswith("'outputs/sweeps/")
    assert {p.parent for p in checked.plans} == {(tmp_path / value.strip("'")).absolute()}
    single = preflight(["debug=tiny", "hydra.run.dir=elsewhere/run"])
    assert single.pin == "hydra.run.dir='elsewhere/run'"
    assert list(single.plans) == [(tmp_path / "elsewhere" / "run").absolute()]


@pytest.mark.slow
def test_a_sweep_in_the_default_directory_reports_its_failed_job(cli, tmp_path: Path) -> None:
    """No hydra.sweep.dir given (the default holds ${now:...}): the summary still reads the
    directories the jobs ran in, names the failed one and exits 1."""
    proc = cli(
        "-m",
        "debug=tiny",
        "source.layers=[0]",
        "metrics.splice=false",
        "coeff.alpha=1,1e38",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "nsae: sweep: 1 finished, 0 skipped, 1 failed" in proc.stdout
    [sweep] = (tmp_path / "outputs" / "sweeps").glob("*/*")
    assert len(list(sweep.glob("*/metrics.json"))) == 1
    assert len(list(sweep.glob("*/failed.json"))) == 1


def test_an_option_the_sae_type_does_not_take_is_refused_naming_its_options() -> None:
    from nsae.saes import check_options

    with pytest.raises(ValueError, match=r"sae\.k is not an option of sae_type=none; valid: "):
        check_options("none", ["k"])
    check_options("topk", ["k"])  # TopK takes k
    check_options("none", [])
