"""galmass sweep: grid expansion and validation, the cross-suite matrices, a local (in-process) sweep, and a real
SLURM sweep of 2 tracers × 2 suites with one cell requeued mid-run, then a relaunch that submits nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY_DATA, TINY_MODEL, TINY_TRAIN, run_cmd
from galmass.config import ConfigError
from slurm_cluster import job_info, release_requeued, slurm, wait_for_file  # noqa: F401

# Tiny cells: 2 optimiser steps per epoch; 40 posterior samples per projection.
CELL = TINY_DATA + TINY_MODEL + TINY_TRAIN + ["--train.max_steps_per_epoch=2", "--evaluate.posterior_samples=40",
                                              "--evaluate.batch_size=16"]


def _spec(tmp_path: Path, axes: dict, epochs: int = 2, **extra) -> Path:
    body = {"name": "t", "out": str(tmp_path / "sweep"), "overrides": CELL + [f"--train.epochs={epochs}"],
            "axes": axes, "slurm": {"time_min": 10, "cpus_per_task": 1}, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_grid_expansion_aliases_and_datasets(tmp_path):
    from galmass.sweep import load_sweep, plan_sweep

    spec = load_sweep(_spec(tmp_path, {"tracer": ["stars", "gas+stars"], "suite": ["compact", "extended"],
                                       "train.lr": [1e-3, 3e-4]}))
    plan = plan_sweep(spec)
    assert len(plan.cells) == 2 * 2 * 2 and len(plan.datasets) == 2  # the lr axis does not change the data
    assert len({c.run_dir for c in plan.cells}) == 8
    cell = plan.cells[0]
    assert cell.values == {"model.tracer": "stars", "data.suites": ["compact"], "train.lr": 1e-3}
    cfg = plan._configs[cell.name]
    assert cfg.model.tracer == "stars" and cfg.data.suites == ["compact"] and cfg.train.lr == 1e-3
    assert cfg.train.run_dir == cell.run_dir and cfg.data.path == plan.dataset(cell.dataset).path
    assert cfg.train.epochs == 2 and cfg.data.npix == 16  # the common overrides reach every cell
    by_suite = {tuple(d.suites): d for d in plan.datasets}
    assert set(by_suite) == {("compact",), ("extended",)}


def test_bad_sweeps_fail_before_submitting(tmp_path):
    from galmass.sweep import load_sweep, plan_sweep

    with pytest.raises(ConfigError, match="Did you mean 'axes'"):
        load_sweep(_spec(tmp_path, {"tracer": ["stars"]}, axis={"x": [1]}))
    with pytest.raises(ConfigError, match="cell tracer-star.*expected one of"):
        plan_sweep(load_sweep(_spec(tmp_path, {"tracer": ["star"]})))
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        plan_sweep(load_sweep(_spec(tmp_path, {"train.epoch": [1, 2]})))
    with pytest.raises(ConfigError, match="non-empty list"):
        load_sweep(_spec(tmp_path, {"tracer": []}))
    with pytest.raises(ConfigError, match="each training process needs one GPU"):
        load_sweep(_spec(tmp_path, {"tracer": ["stars"]}, slurm={"gpus_per_node": 4, "tasks_per_node": 1}))


def test_dry_run_writes_nothing_and_changed_config_is_refused(tmp_path):
    from galmass.sweep import launch, load_sweep, write_plan, plan_sweep

    path = _spec(tmp_path, {"tracer": ["stars", "gas"]})
    res = launch(load_sweep(path), dry_run=True, executor="slurm", log=lambda *a: None)
    assert res["submitted"] == {"datasets": [], "train": [], "evaluate": []}
    assert not (tmp_path / "sweep").exists()
    write_plan(plan_sweep(load_sweep(path)))  # as a launch does: each cell's config.yaml
    changed = _spec(tmp_path, {"tracer": ["stars", "gas"]}, epochs=3)
    with pytest.raises(ConfigError, match=r"different config \(train.epochs: 2 → 3\)"):
        plan_sweep(load_sweep(changed))


def _fake_run(bias: list[float], scatter: list[float], cov: np.ndarray):
    from galmass.report import RunResult

    levels = np.linspace(0.05, 0.95, 19)
    m = {"cnn": {"bias": bias, "scatter": scatter}, "coverage": {"levels": levels.tolist(),
                                                                 "per_radius": cov.tolist()}}
    return RunResult("x", Path("."), m, {})


def test_cross_suite_matrices_are_radius_means():
    from galmass.report import cross_suite_matrices

    rng = np.random.default_rng(1)
    entries, truth = [], {}
    for g in ("tracer=stars", "tracer=gas"):
        for tr in ("A", "B"):
            for te in ("A", "B"):
                b, s, c = rng.normal(0, 0.1, 10), rng.uniform(0.05, 0.2, 10), rng.uniform(0, 1, (10, 19))
                entries.append((g, tr, te, _fake_run(b.tolist(), s.tolist(), c)))
                # level 0.70 is column 13 of 0.05…0.95 (the level nearest 0.68)
                truth[g, tr, te] = (sum(b) / 10, sum(s) / 10, sum(c[:, 13]) / 10)
    entries = entries[:-1]  # one evaluation missing → NaN, not a crash
    m = cross_suite_matrices(entries)
    assert m["groups"] == ["tracer=stars", "tracer=gas"] and m["train"] == ["A", "B"] and m["test"] == ["A", "B"]
    assert m["level"] == pytest.approx(0.70)
    for (g, tr, te), (b, s, c) in truth.items():
        i, j, k = m["groups"].index(g), m["train"].index(tr), m["test"].index(te)
        if (g, tr, te) == ("tracer=gas", "B", "B"):
            assert np.isnan(m["bias"][i, j, k])
            continue
        assert m["bias"][i, j, k] == pytest.approx(b) and m["scatter"][i, j, k] == pytest.approx(s)
        assert m["coverage"][i, j, k] == pytest.approx(c)


def test_debug_executor_sweep_end_to_end(tmp_path):
    """No SLURM needed: one cell trained, evaluated on both datasets' test splits, report written."""
    from galmass.sweep import launch, load_sweep

    path = _spec(tmp_path, {"suite": ["compact"], "feedback": ["cusp", "core"]}, epochs=1)
    res = launch(load_sweep(path), executor="debug", log=lambda *a: None)
    plan = res["plan"]
    assert len(plan.cells) == 2 and len(plan.datasets) == 2
    text = Path(res["report"]).read_text()
    for cell in plan.cells:
        assert (Path(cell.run_dir) / "done.json").exists()
        for ds in plan.datasets:
            m = json.loads((Path(cell.run_dir) / f"eval-{ds.name}" / "metrics.json").read_text())
            assert m["suites"] == ds.suites and m["feedbacks"] == ds.feedbacks
    assert "## Cross-suite matrices" in text and (Path(res["report"]).parent / "cross_suite.png").exists()
    again = launch(load_sweep(path), executor="debug", log=lambda *a: None)
    assert again["submitted"] == {"datasets": [], "train": [], "evaluate": []}


@pytest.mark.slow
def test_slurm_sweep_requeue_and_relaunch(slurm, tmp_path):
    import torch

    from galmass.config import load_config
    from galmass.sweep import launch, load_sweep
    from galmass.train import train

    path = _spec(tmp_path, {"tracer": ["stars", "gas+stars"], "suite": ["compact", "extended"]}, epochs=20)
    res = launch(load_sweep(path), executor="slurm", log=lambda *a: None)
    plan, sub = res["plan"], res["submitted"]
    assert len(sub["datasets"]) == 2 and len(sub["train"]) == 4 and len(sub["evaluate"]) == 1
    assert len({j.split("_")[0] for j in sub["train"]}) == 1  # one SLURM array
    with pytest.raises(ConfigError, match="still has jobs in the queue"):  # no double submission meanwhile
        launch(load_sweep(path), executor="slurm", log=lambda *a: None)

    # Interrupt cell 0 after its first epoch, as SLURM does before a time limit (timeout-style USR2).
    cell, task = plan.cells[0], sub["train"][0]
    wait_for_file(Path(cell.run_dir) / "checkpoints" / "ckpt-000000.pt", timeout=150)
    assert not (Path(cell.run_dir) / "done.json").exists()
    # scancel retries for ~90 s when the job is already being requeued ("can not be altered now"): the signal
    # was delivered by then, so do not wait for it.
    try:
        subprocess.run(["scancel", "--signal=USR2", task], capture_output=True, timeout=3)
    except subprocess.TimeoutExpired:
        pass
    release_requeued(task)
    wait_for_file(Path(plan.out) / "report" / "report.md", timeout=240, poll=0.5)
    assert int(job_info(task).get("Restarts", "0")) >= 1

    # The requeued cell ends with the weights of an uninterrupted run of the same config.
    ref_cfg = load_config(cell.config, [f"--train.run_dir={tmp_path / 'ref'}", "--train.threads=1"])
    train(ref_cfg)
    got = torch.load(Path(cell.run_dir) / "last.pt", weights_only=False)["model"]
    ref = torch.load(tmp_path / "ref" / "last.pt", weights_only=False)["model"]
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    log = next((Path(plan.out) / "submitit").glob(f"{task}/*_log.out")).read_text()
    assert "resuming" in log

    # Every cell evaluated on every test dataset; the report's matrix entries are the metrics' radius means.
    text = (Path(plan.out) / "report" / "report.md").read_text()
    for c in plan.cells:
        for ds in plan.datasets:
            m = json.loads((Path(c.run_dir) / f"eval-{ds.name}" / "metrics.json").read_text())
            assert f"{np.mean(m['cnn']['scatter']):.3f}" in text
    assert "tracer=stars: bias" in text and "tracer=gas+stars: coverage" in text and "## Tracer comparison" in text

    # Relaunch: nothing new is submitted, and the queue holds no new job.
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    out = run_cmd([sys.executable, "-m", "galmass", "sweep", str(path)])
    assert "nothing to do" in out.stdout
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert set(after) <= set(before)
