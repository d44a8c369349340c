"""galmass sweep: grid expansion and validation, the cross-suite matrices, a local (in-process) sweep, and a real
SLURM sweep of 2 tracers × 2 suites with one cell requeued mid-run, then a relaunch that submits nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, TINY_DATA, TINY_MODEL, TINY_TRAIN, run_cmd
from galmass.config import ConfigError
from slurm_cluster import (TERMINAL, job_info, node_cpus, release_requeued, slurm, wait_for_file,  # noqa: F401
                           wait_for_state)

# Tiny cells: 2 optimiser steps per epoch; 40 posterior samples per projection.
CELL = TINY_DATA + TINY_MODEL + TINY_TRAIN + ["--train.max_steps_per_epoch=2", "--evaluate.posterior_samples=40",
                                              "--evaluate.batch_size=16"]


def _spec(tmp_path: Path, axes: dict, epochs: int = 2, cell_overrides: tuple[str, ...] = (), **extra) -> Path:
    body = {"name": "t", "out": str(tmp_path / "sweep"),
            "overrides": CELL + [f"--train.epochs={epochs}", *cell_overrides],
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


def test_slug_is_the_one_name_rule():
    from galmass.naming import slug

    assert slug("gas+stars") == "gas_stars" and slug(["compact", "extended"]) == "compact,extended"
    assert slug("lr=1e-3") == "lr=1e-3" and slug("a / b") == "a_b" and slug("configs/suites/x.yaml") == \
        "configs_suites_x.yaml"
    assert slug("+++") == "x" and slug("", empty="run") == "run"


def test_sweep_file_is_read_strictly(tmp_path):
    from galmass.sweep import load_sweep

    path = tmp_path / "dup.yaml"
    path.write_text("name: a\naxes: {tracer: [stars]}\nname: b\n")  # a duplicate key is an error, not "b"
    with pytest.raises(ConfigError, match="(?i)duplicate"):
        load_sweep(path)
    with pytest.raises(ConfigError, match="sweep file not found"):
        load_sweep(tmp_path / "missing.yaml")


def test_dataset_directories_are_named_by_data_hash(tmp_path):
    from galmass.config import data_hash
    from galmass.sweep import load_sweep, plan_sweep

    plan = plan_sweep(load_sweep(_spec(tmp_path, {"suite": ["compact"], "feedback": ["cusp", "core"]})))
    for ds in plan.datasets:
        cfg = next(plan._configs[c.name] for c in plan.cells if c.dataset == ds.name)
        assert ds.name == f"compact_{ds.feedbacks[0]}_{data_hash(cfg.data)}"
    assert len({d.name.rsplit("_", 1)[1] for d in plan.datasets}) == 2  # different samples, different hashes


def _partition(cpus: int = 2, gpus: int = 0, nodes: int = 1):
    from hpc.slurm_resources import parse_sinfo

    return lambda name: parse_sinfo(f"debug*|{cpus}|19284|{'gpu:%d' % gpus if gpus else '(null)'}|{nodes}|"
                                    "infinite|1-infinite\n")["debug"]


def test_request_is_checked_against_the_partition(tmp_path, monkeypatch):
    import galmass.sweep as sweep
    from hpc.slurm_resources import SlurmResourceError, UnknownPartition

    spec = sweep.load_sweep(_spec(tmp_path, {"tracer": ["stars"]}, slurm={"cpus_per_task": 4, "time_min": 10}))
    notes = []
    with pytest.raises(ConfigError) as err:
        sweep.fit_partition(spec, notes.append, read=_partition(cpus=2))
    msg = str(err.value)
    assert str(tmp_path / "sweep.yaml") in msg and "slurm.tasks_per_node × slurm.cpus_per_task" in msg
    assert "4 CPUs per node" in msg and "1 node(s) × 2 CPUs" in msg and "HINT: slurm.cpus_per_task: 2" in msg
    assert sweep.fit_partition(spec, notes.append, read=_partition(cpus=4)) is spec.slurm and not notes
    with pytest.raises(ConfigError, match=r"slurm.gpus_per_node: 1 GPUs per node, but the largest node has 0"):
        sweep.fit_partition(sweep.load_sweep(_spec(tmp_path, {"tracer": ["stars"]}, slurm={
            "gpus_per_node": 1, "tasks_per_node": 1})), notes.append, read=_partition(cpus=8))
    with pytest.raises(ConfigError, match=r"slurm.nodes: 2 nodes, but the partition has 1"):
        sweep.fit_partition(sweep.load_sweep(_spec(tmp_path, {"tracer": ["stars"]}, slurm={"nodes": 2})),
                            notes.append, read=_partition())

    fit = sweep.load_sweep(_spec(tmp_path, {"tracer": ["stars"]}, slurm={"cpus_per_task": 4, "fit_to_node": True}))
    assert sweep.fit_partition(fit, notes.append, read=_partition(cpus=2)).cpus_per_task == 2
    assert "cpus_per_task 4 → 2" in notes[-1]

    def unknown(name):
        raise UnknownPartition("partition 'gpu' does not exist (sinfo lists: debug*). HINT: name one of these")

    def down(name):
        raise SlurmResourceError("sinfo failed (1): Unable to contact slurm controller")

    with pytest.raises(ConfigError, match="slurm.partition: partition 'gpu' does not exist"):
        sweep.fit_partition(spec, notes.append, read=unknown)
    assert sweep.fit_partition(spec, notes.append, read=down) is spec.slurm and "not checked" in notes[-1]

    # launch checks before anything is written or submitted; the debug executor is not checked
    monkeypatch.setattr(sweep, "read_partition", _partition(cpus=2))
    with pytest.raises(ConfigError, match="could ever start"):
        sweep.launch(spec, executor="slurm", log=lambda *a: None)
    assert not (tmp_path / "sweep").exists()
    dry: list[str] = []
    sweep.launch(fit, executor="slurm", dry_run=True, log=dry.append)
    assert "cpus_per_task 4 → 2" in dry[0] and not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_request_checked_against_the_real_partition(slurm, tmp_path):
    """On the local cluster (sinfo): too many CPUs per cell is refused before anything is queued; the README's
    example sweep fits (fit_to_node) and its dry run says what it lowered."""
    from galmass.sweep import launch, load_sweep

    cpus = node_cpus()
    queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    path = _spec(tmp_path, {"tracer": ["stars"]}, slurm={"cpus_per_task": cpus + 1, "time_min": 10})
    with pytest.raises(ConfigError, match=rf"{cpus + 1} CPUs per node .*largest node has {cpus}\. HINT: "
                                          rf"slurm.cpus_per_task: {cpus}, or slurm.fit_to_node: true"):
        launch(load_sweep(path), executor="slurm", log=lambda *a: None)
    assert not (tmp_path / "sweep").exists()
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split() == queued

    example = REPO / "slurm" / "sweep_tracer_suite.yaml"
    notes: list[str] = []
    res = launch(load_sweep(example), example.parent, executor="slurm", dry_run=True, log=notes.append)
    assert len(res["plan"].cells) == 12
    if cpus < 4:  # the file asks for 4 CPUs per cell
        assert f"cpus_per_task 4 → {cpus}" in notes[0], notes


def test_preemption_is_handed_to_submitits_own_handler(tmp_path):
    """TrainCell gives the signal galmass caught to the handler submitit installed (a real submitit SignalHandler,
    as process_job sets it up): USR2 → checkpoint pickle + requeue + exit, or given up once max_num_timeout is
    spent; SIGTERM → bypassed (returns: training goes on); no submitit handler → Preempted re-raised."""
    import signal

    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths, UncompletedJobError
    from submitit.local.debug import DebugJobEnvironment

    from galmass.sweep import TrainCell, _caught_signal, _hand_over
    from galmass.train import Preempted

    usr2 = Preempted("SIGUSR2 received: checkpoint written at step 3 of epoch 1; requeueing left to the caller")
    term = Preempted("SIGTERM received: checkpoint written at the end of the epoch; requeueing left to the caller")
    assert _caught_signal(usr2) == signal.SIGUSR2 and _caught_signal(term) == signal.SIGTERM
    assert _caught_signal(Preempted("no signal received: ...")) is None
    with pytest.raises(Preempted):  # nobody to requeue (a plain call): the caller reruns to resume
        _hand_over(usr2)

    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    paths = JobPaths(tmp_path, job_id="7", task_id=0)
    try:
        for max_num_timeout in (1, 0):
            delayed = DelayedSubmission(TrainCell(), "cell/config.yaml", 1)
            delayed.set_timeout(10, max_num_timeout)  # time_min 10: submitit counts every USR2 as a timeout
            handler = SignalHandler(DebugJobEnvironment(), paths, delayed)
            signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
            signal.signal(signal.SIGTERM, handler.bypass)
            _hand_over(term)  # submitit ignores SIGTERM: returns
            if max_num_timeout:
                with pytest.raises(SystemExit):  # checkpointed, requeued, exits
                    _hand_over(usr2)
                again = DelayedSubmission.load(paths.submitted_pickle)
                assert isinstance(again.function, TrainCell) and again.args == ("cell/config.yaml", 1)
                assert again._timeout_countdown == 0  # one timeout used
            else:
                with pytest.raises(UncompletedJobError, match="timed-out too many times"):
                    _hand_over(usr2)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


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

    # Every epoch's checkpoint kept: with the default 3, ckpt-000000 lived ~0.6 s on a fast machine and a loaded
    # CI runner's poll could miss it (then the cell finished before the signal).
    path = _spec(tmp_path, {"tracer": ["stars", "gas+stars"], "suite": ["compact", "extended"]}, epochs=20,
                 cell_overrides=("--train.keep_checkpoints=25",))
    res = launch(load_sweep(path), executor="slurm", log=lambda *a: None)
    plan, sub = res["plan"], res["submitted"]
    assert len(sub["datasets"]) == 2 and len(sub["train"]) == 4 and len(sub["evaluate"]) == 1
    assert len({j.split("_")[0] for j in sub["train"]}) == 1  # one SLURM array
    with pytest.raises(ConfigError, match="still has jobs in the queue"):  # no double submission meanwhile
        launch(load_sweep(path), executor="slurm", log=lambda *a: None)

    # Interrupt cell 0 after its first epoch, as SLURM does before a time limit (timeout-style USR2).
    cell, task = plan.cells[0], sub["train"][0]
    # The dataset jobs run first (two suites); a loaded 2-core CI machine needs minutes for them.
    wait_for_file(Path(cell.run_dir) / "checkpoints" / "ckpt-000000.pt", timeout=420)
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
    # Same thread count as the cell (cpus_per_task: 1): float sums differ in the last bit between thread counts.
    ref_cfg = load_config(cell.config, [f"--train.run_dir={tmp_path / 'ref'}", "--train.threads=1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(ref_cfg)
    finally:
        torch.set_num_threads(threads)
    got = torch.load(Path(cell.run_dir) / "last.pt", weights_only=False)["model"]
    ref = torch.load(tmp_path / "ref" / "last.pt", weights_only=False)["model"]
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    log = next((Path(plan.out) / "submitit").glob(f"{task}/*_log.out")).read_text()
    # galmass checkpointed and handed the signal over; submitit (not galmass) requeued the task
    assert "handing SIGUSR2 to submitit" in log and "requeueing left to the caller" in log, log
    assert re.search(rf"Requeued job {task} \(\d+ remaining timeouts\)", log), log
    assert _resume_matches_checkpoint(log)

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


def _resume_matches_checkpoint(log: str) -> tuple[int, int]:
    """(epoch, step) where the requeued run resumed, checked against where the preempted run checkpointed."""
    wrote = re.search(r"checkpoint written (?:at step (\d+) of epoch (\d+)|at the end of the epoch)", log)
    resumed = re.search(r"resuming \S+ from ckpt-\d+\.pt \(epoch (\d+), step (\d+)\)", log)
    assert wrote and resumed, log
    epoch, step = int(resumed.group(1)), int(resumed.group(2))
    if wrote.group(1) is not None:  # mid-epoch: the very step after the last one done
        assert (epoch, step) == (int(wrote.group(2)), int(wrote.group(1))), log
    else:  # on an epoch boundary: the next epoch from its start
        assert step == 0, log
    return epoch, step


def _from_line_of(text: str, marker: str) -> str:
    """``text`` from the start of the (first) line holding ``marker``."""
    return text[text.rfind("\n", 0, text.index(marker)) + 1:]


def _signal(job: str, sig: str) -> None:
    # scancel retries for ~90 s while the job is being requeued ("can not be altered now"): the signal was
    # delivered by then, so do not wait for it.
    try:
        out = subprocess.run(["scancel", f"--signal={sig}", job], capture_output=True, text=True, timeout=3)
    except subprocess.TimeoutExpired:
        return
    assert out.returncode == 0, out.stderr


def _wait_for_text(path_glob, pattern: str, timeout: float = 120, after: int = 0) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for path in path_glob():
            text = path.read_text()
            if re.search(pattern, text[after:]):
                return text
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} did not appear in {[str(p) for p in path_glob()]} in {timeout} s")


@pytest.mark.slow
def test_slurm_submitit_owns_requeue_and_max_num_timeout(slurm, tmp_path):
    """One cell on the real cluster. SIGTERM: galmass checkpoints, submitit ignores it, training goes on (no
    requeue). USR2: checkpoint, submitit requeues (a timeout: submitit counts every USR2 of a job with
    time_min <= 10 as one) and the task resumes where it stopped. A second USR2 exceeds max_num_timeout=1:
    submitit gives the cell up (FAILED, not requeued again)."""
    from galmass.sweep import launch, load_sweep

    # 128 training projections / batch 2 = 64 steps per epoch: a signal lands mid-epoch almost always.
    path = _spec(tmp_path, {"tracer": ["stars"]}, epochs=1000,
                 slurm={"time_min": 10, "cpus_per_task": 1, "max_num_timeout": 1})
    body = yaml.safe_load(path.read_text())
    body["overrides"] = [o for o in body["overrides"] if "max_steps_per_epoch" not in o] + ["--train.batch_size=2"]
    path.write_text(yaml.safe_dump(body))
    res = launch(load_sweep(path), executor="slurm", log=lambda *a: None)
    plan, task = res["plan"], res["submitted"]["train"][0]
    run_dir, folder = Path(plan.cells[0].run_dir), Path(plan.out) / "submitit"
    logs = lambda: list(folder.glob(f"{task}/*_log.out"))  # noqa: E731
    trained = r"(?s)resuming .*epoch +\d+ +train NLL"  # resumed, then a whole epoch more
    try:
        wait_for_file(run_dir / "checkpoints" / "ckpt-000000.pt", timeout=150)
        _signal(task, "TERM")
        text = _wait_for_text(logs, "submitit ignores SIGTERM here: training goes on")
        term = _from_line_of(text, "submitit ignores SIGTERM")
        text = _wait_for_text(logs, trained, after=len(text) - len(term))
        _resume_matches_checkpoint(_from_line_of(text, "submitit ignores SIGTERM"))
        info = job_info(task)
        assert info["JobState"] == "RUNNING" and info.get("Restarts", "0") == "0", info
        assert "Bypassing signal SIGTERM" in text

        _signal(task, "USR2")
        release_requeued(task)
        text = _wait_for_text(logs, "handing SIGUSR2 to submitit")
        usr2 = _from_line_of(text, "handing SIGUSR2")
        text = _wait_for_text(logs, trained, after=len(text) - len(usr2))
        assert re.search(rf"Requeued job {task} \(0 remaining timeouts\)", text), text
        _resume_matches_checkpoint(_from_line_of(text, "handing SIGUSR2"))
        assert job_info(task)["Restarts"] == "1"

        _signal(task, "USR2")
        info = wait_for_state(task, TERMINAL, timeout=60)
        text = logs()[0].read_text()
        assert info["JobState"] == "FAILED" and info["Restarts"] == "1", info
        assert "Job not requeued because: timed-out too many times" in text, text
        assert text.count("handing SIGUSR2 to submitit") == 2 and not (run_dir / "done.json").exists()
    finally:
        subprocess.run(["scancel", str(task).split("_")[0]], capture_output=True)
        subprocess.run(["scancel", *res["submitted"]["evaluate"]], capture_output=True)


def test_seed_sweep_trains_ensemble_members_on_one_dataset():
    """slurm/sweep_seeds.yaml: one cell per training seed, all on one dataset, configs differing only in the seed
    (and the run directory), which is what `galmass ensemble` accepts."""
    from galmass.config import config_to_dict
    from galmass.sweep import load_sweep, plan_sweep

    example = REPO / "slurm" / "sweep_seeds.yaml"
    plan = plan_sweep(load_sweep(example), example.parent)
    assert [c.name for c in plan.cells] == ["seed-0", "seed-1", "seed-2"] and len(plan.datasets) == 1
    configs = [config_to_dict(plan._configs[c.name]) for c in plan.cells]
    for cfg in configs:
        assert cfg["model"] == configs[0]["model"] and cfg["data"] == configs[0]["data"]
    assert [c["train"]["seed"] for c in configs] == [0, 1, 2]
