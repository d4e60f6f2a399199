"""hydra/launcher=nsae_bank (`nsae.cohort`, `nsae.data.shared`, `nsae.rng`): jobs that see
the same activation stream train in one process from one harvest, and each writes what it
would write alone."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nsae import rng
from nsae.cohort import CohortJob, plan_cohorts, stream_key
from nsae.config import CONF_DIR
from nsae.data.shared import SharedStream
from nsae.errors import NsaeError
from nsae.launchers import job_problem
from nsae.memory import job_bytes, shared_bytes
from nsae.preflight import preflight

FAST = ["debug=fast", "data.cache=false", "logger=csv"]


def cfg_of(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def job(num: int, *overrides: str) -> CohortJob:
    j = CohortJob(num, cfg_of(*overrides), DictConfig({}), Path(f"/x/{num}"), list(overrides))
    j.key = stream_key(j)
    return j


# -- the shared stream -----------------------------------------------------------------------
def test_every_consumer_sees_every_item_and_the_producer_stays_within_its_lead() -> None:
    made: list[int] = []
    lead = 3

    def source():
        for i in range(40):
            made.append(i)
            yield torch.full((2,), float(i))

    stream = SharedStream(source(), ["a", "b", "c"], max_lead=lead)
    seen: dict[str, list[float]] = {}
    worst_lead = 0

    def consume(name: str, n: int, pause: float) -> None:
        nonlocal worst_lead
        it = stream.consumer(name)
        seen[name] = []
        for _ in range(n):
            seen[name].append(next(it)[0].item())
            with stream._cond:
                ahead = stream._made - min(stream.position.values(), default=stream._made)
                worst_lead = max(worst_lead, ahead)
                assert all(i >= min(stream.position.values(), default=0) for i in stream._items)
            time.sleep(pause)
        stream.leave(name)

    threads = [
        threading.Thread(target=consume, args=("a", 30, 0.0)),
        threading.Thread(target=consume, args=("b", 30, 0.002)),
        threading.Thread(target=consume, args=("c", 10, 0.0)),  # leaves early
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert seen["a"] == seen["b"] == [float(i) for i in range(30)]
    assert seen["c"] == [float(i) for i in range(10)]
    assert worst_lead <= lead  # never more than `lead` items past the slowest consumer
    assert len(made) <= 30 + lead
    assert stream._items == {}  # everything taken by everyone is dropped


def test_a_failing_source_fails_every_consumer_with_its_error() -> None:
    def source():
        yield torch.zeros(1)
        raise ValueError("out of memory in the LM")

    stream = SharedStream(source(), ["a"], max_lead=4)
    it = stream.consumer("a")
    next(it)
    with pytest.raises(RuntimeError, match="out of memory in the LM"):
        next(it)


# -- each job's random state --------------------------------------------------------------------
def test_a_bank_job_draws_what_it_would_draw_alone_whatever_other_threads_do() -> None:
    def alone() -> torch.Tensor:
        torch.manual_seed(7)
        torch.randn(5)  # the model's initialisation
        return torch.cat([rng.randn((3,), torch.float32, torch.device("cpu")) for _ in range(4)])

    expected = alone()
    results: dict[int, torch.Tensor] = {}

    def banked(i: int) -> None:
        with rng.job_rng(owned=True):
            torch.manual_seed(7)
            torch.randn(5)
        draws = []
        for _ in range(4):
            # another job's use of the global generator, in between: in a bank every draw
            # from the global generator holds rng.GLOBAL_LOCK (the synthetic source's
            # sampling does), so no draw lands inside another job's seeding block; an
            # unlocked draw here made this test fail about one run in three
            with rng.GLOBAL_LOCK:
                torch.randn(100)
            draws.append(rng.randn((3,), torch.float32, torch.device("cpu")))
            time.sleep(0.001)
        results[i] = torch.cat(draws)
        cpu = torch.device("cpu")  # a checkpoint saves and restores the job's own generator
        state = rng.get_state(cpu)
        after = rng.randn((3,), torch.float32, cpu)
        rng.set_state(state, cpu)
        with rng.GLOBAL_LOCK:
            torch.randn(100)
        assert torch.equal(rng.randn((3,), torch.float32, cpu), after)
        rng.release()

    threads = [threading.Thread(target=banked, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        assert torch.equal(results[i], expected)


# -- grouping and splitting ---------------------------------------------------------------------
def test_jobs_share_a_bank_only_when_they_see_the_same_stream() -> None:
    a = job(0, *FAST, "sae_type=none", "normalization_method=none")
    b = job(1, *FAST, "sae_type=normalized_sae", "normalization_method=input_norm", "coeff=beta")
    c = job(2, *FAST, "sae_type=none", "optim.lr=1e-2", "coeff.alpha=3")
    assert a.key == b.key == c.key  # SAE, loss, coefficient, optimizer: the same stream
    other_seed = job(3, *FAST, "seed=1")
    other_layers = job(4, *FAST, "source.layers=[2]")
    other_steps = job(5, *FAST, "trainer.max_steps=41")
    other_batch = job(6, *FAST, "data.batch_size=128")
    others = [other_seed, other_layers, other_steps, other_batch]
    assert len({a.key, *(o.key for o in others)}) == 5
    resumed = job(7, *FAST)
    resumed.start = 20  # a resumed job starts at its checkpoint's step
    resumed.key = stream_key(resumed)
    assert resumed.key != a.key
    banks, notes = plan_cohorts([a, other_seed, b, c], memory_gb=100)
    assert [[j.num for j in bank] for bank in banks] == [[0, 1, 2], [3]] and notes == []


def test_a_bank_too_big_for_memory_is_split_and_the_split_is_reported() -> None:
    jobs = [job(i, *FAST, f"coeff.alpha={i + 1}") for i in range(5)]
    cfg = jobs[0].cfg
    each, shared = job_bytes(cfg), shared_bytes(cfg)
    # (embedded model: 4 layers, d 128, 1024 features; batch 256)
    params = 4 * (2 * 128 * 1024 + 1024 + 128)
    assert each == 4 * (4 * params + 256 * 4 * (3 * 1024 + 4 * 128))
    assert shared == 2 * 4 * 4096 * 4 * 128  # the buffer, and as much again harvested ahead
    budget_gb = (shared + 2 * each + each // 2) / 2**30  # room for 2 jobs
    banks, notes = plan_cohorts(jobs, memory_gb=budget_gb)
    assert [len(b) for b in banks] == [2, 2, 1]
    assert [j.num for b in banks for j in b] == [0, 1, 2, 3, 4]
    assert len(notes) == 1 and "split into 3 cohorts of 2, 2, 1 jobs" in notes[0]
    assert "jobs 0, 1, 2, 3, 4 share a stream" in notes[0]
    banks, _ = plan_cohorts(jobs, memory_gb=1e-6)  # never less than one job per bank
    assert [len(b) for b in banks] == [1] * 5


def test_jobs_a_bank_cannot_run_are_refused_in_one_line_before_anything_runs(
    tmp_path: Path,
) -> None:
    ddp = cfg_of("trainer=ddp", "trainer.devices=2")
    assert "trainer=ddp" in (job_problem("cohort", ddp) or "")
    assert "W&B" in (job_problem("cohort", cfg_of("logger=wandb")) or "")
    assert job_problem("cohort", cfg_of(*FAST)) is None
    argv = ["-m", "hydra/launcher=nsae_bank", "trainer=ddp", "trainer.devices=2",
            "sae_type=none,topk", f"hydra.sweep.dir={tmp_path}/s"]  # fmt: skip
    with pytest.raises(NsaeError, match=r"nsae_bank: trainer.devices=2.*valid") as err:
        preflight(argv)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "s").exists()


# -- end to end: each banked job writes what it writes alone ------------------------------------
def numbers(obj: object, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        return {k: v for key, o in obj.items() for k, v in numbers(o, f"{prefix}.{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, o in enumerate(obj) for k, v in numbers(o, f"{prefix}[{i}]").items()}
    return {prefix: obj}


def assert_same_run(alone: Path, banked: Path, same_overrides: bool = True) -> int:
    """Every value of metrics.json within 1e-3 relative + 5e-4 (timings aside); the same files.
    A bank multiplies every job's SAE in one batched matmul, whose kernel rounds float32 in
    another order than one SAE's; training amplifies it (seen on an AVX-512 CPU, kernels
    pinned to AVX2: L0 379.96 banked against 380.01 alone; a norm-L0 correlation near 0,
    -0.0444 against -0.0442)."""
    a = numbers(json.loads((alone / "metrics.json").read_text()))
    b = numbers(json.loads((banked / "metrics.json").read_text()))
    assert a.keys() == b.keys()
    compared = 0
    for key, x in a.items():
        y = b[key]
        if key.endswith(("eval_seconds", "built_by_this_job", "git_commit")):
            continue
        loose = key.startswith(".by_") or "histogram" in key  # counts over bins
        if (isinstance(x, float) and isinstance(y, float)) or (loose and x != y):
            # per-bin breakdowns (one position, one decile) count latents over few tokens,
            # where one latent crossing its threshold moves the count by 1 per token
            rel, floor = (2e-2, 2.0) if loose else (1e-3, 5e-4)
            assert abs(x - y) <= rel * max(abs(x), abs(y)) + floor, (key, x, y)
            compared += 1
        else:
            assert x == y, (key, x, y)
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(alone) == files(banked)
    if same_overrides:
        assert (alone / "overrides.yaml").read_text() == (banked / "overrides.yaml").read_text()
    assert (alone / "config.yaml").read_text().replace(str(alone), "") == (
        banked / "config.yaml"
    ).read_text().replace(str(banked), "")
    return compared


@pytest.mark.slow
def test_each_banked_job_equals_the_same_job_run_alone(cli, tmp_path: Path) -> None:
    sweep = [*FAST, "sae_type=none,normalized_sae", "normalization_method=none,input_norm"]
    cache = f"data.cache_dir={tmp_path}/cache"
    alone = cli("-m", *sweep, cache, f"hydra.sweep.dir={tmp_path}/alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    bank = cli("-m", *sweep, cache, "hydra/launcher=nsae_bank", f"hydra.sweep.dir={tmp_path}/bank")
    assert bank.returncode == 0, bank.stderr[-3000:]
    assert "nsae: cohort 1/1 (4 jobs): jobs 0, 1, 2, 3" in bank.stdout
    assert "nsae: sweep: 4 finished, 0 skipped, 0 failed" in bank.stdout
    # each job's lines (its own prints and its log records) start with its job number
    for num in range(4):
        assert re.search(rf"^\[job {num}\] run dir: {tmp_path}/bank/{num}_", bank.stdout, re.M)
        assert re.search(rf"^\[job {num}\] .*final evaluation: ", bank.stdout, re.M)
    assert not re.search(r"^(run dir:|l0=)", bank.stdout, re.M)  # none untagged
    runs = sorted(p.name for p in (tmp_path / "alone").iterdir() if p.is_dir())
    assert len(runs) == 4
    assert runs == sorted(p.name for p in (tmp_path / "bank").iterdir() if p.is_dir())
    for name in runs:
        assert assert_same_run(tmp_path / "alone" / name, tmp_path / "bank" / name) > 100
        log = (tmp_path / "bank" / name / "train.log").read_text()
        assert log.count("final evaluation") == 1  # its own job's lines only
    # split into banks of one job each (a budget below one job): the same results again
    split = cli(
        "-m", *sweep[:-1], cache, "hydra/launcher=nsae_bank", "hydra.launcher.memory_gb=1e-6",
        f"hydra.sweep.dir={tmp_path}/split",
    )  # fmt: skip
    assert split.returncode == 0, split.stderr[-3000:]
    assert "split into 2 cohorts of 1, 1 jobs" in split.stdout
    by_condition = {name.split("_", 1)[1]: name for name in runs}
    for run in (p for p in (tmp_path / "split").iterdir() if p.is_dir()):
        assert_same_run(tmp_path / "alone" / by_condition[run.name.split("_", 1)[1]], run, False)
    # a re-run of the finished bank sweep skips every job and rewrites nothing
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "bank").rglob("metrics.json")}
    again = cli("-m", *sweep, cache, "hydra/launcher=nsae_bank", f"hydra.sweep.dir={tmp_path}/bank")
    assert again.returncode == 0 and "0 finished, 4 skipped" in again.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "bank").rglob("metrics.json")}


@pytest.mark.slow
def test_ctrl_c_stops_every_banked_job_at_its_step_and_a_rerun_finishes_them(
    tmp_path: Path,
) -> None:
    from tests.conftest import ctrl_c, run_cli

    sweep = tmp_path / "sweep"
    args = [
        "-m", "hydra/launcher=nsae_bank", *FAST, "coeff.alpha=1,3", "trainer.max_steps=400",
        "trainer.val_check_interval=20", "metrics.splice=false", "logger=none",
        f"hydra.sweep.dir={sweep}", f"data.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    code, out, err = ctrl_c(args, lambda: len(list(sweep.glob("*/norm_stats.json"))) >= 2, 4.0)
    assert code == 130, err[-3000:]
    assert "re-run the same command to continue" in err
    assert "0 finished, 0 skipped, 0 failed, 2 unfinished" in out
    runs = [d for d in sweep.iterdir() if d.is_dir()]
    assert len(runs) == 2
    for d in runs:
        assert (d / "checkpoints" / "last.ckpt").is_file() and not (d / "metrics.json").exists()
        step = torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        assert 0 < step < 400
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 finished, 0 skipped, 0 failed" in again.stdout
    for d in runs:
        assert json.loads((d / "metrics.json").read_text())["steps"] == 400


@pytest.mark.slow
def test_a_synthetic_source_banks_exactly_too(cli, tmp_path: Path) -> None:
    """The synthetic source reseeds the global generator to sample (under `rng.GLOBAL_LOCK`
    in a bank), while each job draws its noise from its own generator."""
    sweep = ["debug=fast", "source=synthetic", "logger=csv", "sae_type=none,normalized_sae"]
    alone = cli("-m", *sweep, f"hydra.sweep.dir={tmp_path}/alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    bank = cli("-m", *sweep, "hydra/launcher=nsae_bank", f"hydra.sweep.dir={tmp_path}/bank")
    assert bank.returncode == 0, bank.stderr[-3000:]
    assert "cohort 1/1 (2 jobs)" in bank.stdout
    runs = [p.name for p in (tmp_path / "alone").iterdir() if p.is_dir()]
    assert len(runs) == 2
    for name in runs:
        assert assert_same_run(tmp_path / "alone" / name, tmp_path / "bank" / name) > 100
