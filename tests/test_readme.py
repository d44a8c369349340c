"""The README's commands run as written: `make demo`'s recipe and every line of "The steps one by one", on a tiny
twin of configs/quickstart.yaml (same keys and paths, tiny sizes) in a fresh directory."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, run_cmd

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TINY = {
    "data": {"suites": ["compact"], "feedbacks": ["cusp", "core"], "galaxies_per_cell": 5, "projections": 8,
             "npix": 16, "star_pool": 3000, "gas_cells": 300, "shard_size": 16, "val_fraction": 0.2,
             "test_fraction": 0.2, "n_stars": [40, 400]},
    "model": {"widths": [8, 16], "embed_dim": 16, "flow_transforms": 2, "flow_hidden": [32, 32]},
    "train": {"epochs": 2, "batch_size": 16, "progress": False, "patience": 0},
    "evaluate": {"posterior_samples": 50},
}


def _tiny_twin(tmp: Path) -> None:
    """configs/quickstart.yaml with the tiny sizes, at the same relative path (paths and run dirs kept)."""
    cfg = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    for section, values in TINY.items():
        cfg.setdefault(section, {}).update(values)
    (tmp / "configs").mkdir(parents=True)
    (tmp / "configs" / "quickstart.yaml").write_text(yaml.safe_dump(cfg))


def _block(title: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {title}", 1)[1]
    body = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [ln.split("  #")[0].strip() for ln in body.splitlines() if ln.strip() and not ln.startswith("#")]


def _catalogue(path: Path, manifest: Path) -> None:
    """A dwarf at the centre of the training set's (R_h, σ★) distribution: what predict should accept."""
    st = json.loads(manifest.read_text())["normalisation"]["scalars"]
    rh, sigma = 10 ** st["mean"][0], 10 ** st["mean"][1]
    rng = np.random.default_rng(1)
    n = 150
    r = rh * np.sqrt(rng.uniform(0.05, 0.95, n) / (1 - rng.uniform(0.05, 0.95, n)))  # Plummer-like radii
    phi = rng.uniform(0, 2 * np.pi, n)
    rows = np.column_stack([r * np.cos(phi), r * np.sin(phi), rng.normal(0, sigma, n), np.full(n, 1.0)])
    np.savetxt(path, rows, delimiter=",", header="x_kpc,y_kpc,v_los_kms,v_err_kms", comments="", fmt="%.6f")


def _env() -> dict[str, str]:
    return {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def test_steps_one_by_one_run_as_written(tmp_path):
    _tiny_twin(tmp_path)
    lines = _block("The steps one by one")
    assert [ln.split()[0] + " " + ln.split()[1] for ln in lines][:2] == ["galmass mock", "galmass train"]
    for line in lines:
        if "my_dwarf.csv" in line:
            _catalogue(tmp_path / "my_dwarf.csv", tmp_path / "data" / "quickstart" / "manifest.json")
        run_cmd(shlex.split(line), cwd=tmp_path, env_extra=_env(), timeout=600)
    assert json.loads((tmp_path / "runs" / "gs" / "eval-test" / "metrics.json").read_text())["tracer"] == "gas+stars"
    assert (tmp_path / "runs" / "report" / "report.md").exists()
    post = json.loads((tmp_path / "predict-my_dwarf" / "my_dwarf" / "posterior.json").read_text())
    assert post["n_members"] > 100 and len(post["log10_mass_median"]) == 10


def test_make_demo_recipe_runs_as_written(tmp_path):
    _tiny_twin(tmp_path)
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.M).group(1).replace("$(BIN)/", "")
    out = run_cmd(shlex.split(recipe), cwd=tmp_path, env_extra=_env(), timeout=900)
    assert "runs/quickstart/report/report.md" in out.stdout
    for run in ("stars", "gas", "gas_stars"):  # the run directories the README's table names
        assert (tmp_path / "runs" / "quickstart" / run / "done.json").exists(), run
        assert (tmp_path / "runs" / "quickstart" / run / "eval-test" / "metrics.json").exists(), run
    again = run_cmd(shlex.split(recipe), cwd=tmp_path, env_extra=_env(), timeout=300)  # resumes, skips finished work
    assert "already finished" in again.stdout or "skip" in again.stdout.lower()
