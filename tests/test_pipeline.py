"""End to end through the CLI on a tiny dataset: train → evaluate → report → predict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args

pytestmark = pytest.mark.slow
GALMASS = [sys.executable, "-m", "galmass"]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for tracer in ("stars", "gas+stars"):
        run = root / tracer.replace("+", "_")
        run_cmd(GALMASS + ["train", *tiny_data_args(tiny_dataset), f"--train.run_dir={run}",
                           f"--model.tracer={tracer}", "--evaluate.posterior_samples=100", *TINY_MODEL,
                           *TINY_TRAIN], env_extra={"OMP_NUM_THREADS": "1"})
        runs[tracer] = run
    return runs


def test_evaluate_and_report(trained, tmp_path):
    for run in trained.values():
        out = run_cmd(GALMASS + ["evaluate", "--run", str(run)])
        assert "scatter at 4/3 R_h" in out.stdout
    m = json.loads((trained["stars"] / "eval-test" / "metrics.json").read_text())
    assert m["tracer"] == "stars" and m["split"] == "test" and m["n_projections"] == 4 * 8
    assert m["posterior_samples"] == 100 and len(m["cnn"]["scatter"]) == 10
    res = np.load(trained["stars"] / "eval-test" / "residuals.npz")
    assert res["cnn_residual"].shape == (32, 10) and np.all(np.isfinite(res["cnn_residual"]))

    rep = run_cmd(GALMASS + ["report", str(trained["stars"]), str(trained["gas+stars"]), "--out", str(tmp_path / "r")])
    report = Path(rep.stdout.strip().split("report: ")[-1])
    text = report.read_text()
    wolf = m["estimators"]["Wolf2010"]
    # the CNN's scatter at 4/3 R_h next to Wolf's, as computed
    row = next(line for line in text.splitlines() if line.startswith("| Wolf2010"))
    assert f"{wolf['estimator']['scatter']:.3f}" in row and f"{wolf['cnn']['scatter']:.3f}" in row
    assert "gas+stars" in text and any(p.suffix == ".png" for p in report.parent.iterdir())


def _catalogue(tmp_path: Path, n: int, scale: float = 1.0, columns: str = "xy") -> Path:
    from galmass.mocks.galaxy import draw_galaxy, sample_stars
    from galmass.mocks.projection import project
    from galmass.mocks.suites import load_feedback, load_suite

    rng = np.random.default_rng(5)
    gal = draw_galaxy(load_suite("compact"), load_feedback("cusp"), 11)
    pos, vel = sample_stars(gal, n, rng)
    x, y, v = project(pos, vel, np.array([0.0, 0.0, 1.0]), 0.3)
    v = (v + rng.normal(0, 2.0, n)) * scale
    path = tmp_path / f"stars_{n}_{columns}.csv"
    if columns == "xy":
        rows = np.column_stack([x, y, v, np.full(n, 2.0)])
        header = "x_kpc,y_kpc,v_los_kms,v_err_kms"
    else:
        rows = np.column_stack([np.hypot(x, y), v])
        header = "R_kpc,v_los_kms"
    np.savetxt(path, rows, delimiter=",", header=header, comments="")
    return path


def test_predict_on_a_catalogue(trained, tmp_path):
    cat = _catalogue(tmp_path, 120)
    out = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(cat), "--samples", "300",
                             "--out", str(tmp_path / "p")])
    assert "Wolf2010" in out.stdout
    post = json.loads((tmp_path / "p" / "posterior.json").read_text())
    data = np.loadtxt(cat, delimiter=",", skiprows=1)
    rh = np.median(np.hypot(data[:, 0], data[:, 1]))
    np.testing.assert_allclose(post["radii_kpc"], np.array(post["radii_factors"]) * rh, rtol=1e-9)
    assert np.all(np.array(post["log10_mass_p16"]) <= np.array(post["log10_mass_median"]))
    assert np.all(np.array(post["log10_mass_median"]) <= np.array(post["log10_mass_p84"]))
    samples = np.load(tmp_path / "p" / "samples.npz")["log10_mass_samples"]
    assert samples.shape == (300, 10)
    # same seed → same answer
    run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(cat), "--samples", "300",
                       "--out", str(tmp_path / "p2")])
    assert np.array_equal(samples, np.load(tmp_path / "p2" / "samples.npz")["log10_mass_samples"])


def test_predict_refuses_bad_catalogues(trained, tmp_path):
    few = _catalogue(tmp_path, 6)
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(few)], check=False)
    assert bad.returncode == 2 and "only 6 stars" in bad.stderr

    hot = _catalogue(tmp_path, 120, scale=30.0)  # σ far above anything in training
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(hot)], check=False)
    assert bad.returncode == 2 and "outside the training range" in bad.stderr and "σ" in bad.stderr
    forced = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(hot), "--force",
                                "--out", str(tmp_path / "forced")])
    assert "outside the training range" in forced.stderr  # a warning, never a silent number
    assert json.loads((tmp_path / "forced" / "posterior.json").read_text())["warnings"]

    radial = _catalogue(tmp_path, 120, columns="R")
    ok = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(radial), "--out",
                            str(tmp_path / "radial")])
    assert "circularised" in ok.stderr

    broken = tmp_path / "broken.csv"
    broken.write_text("x_kpc,v_los_kms\n0.1,3\n")
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(broken)], check=False)
    assert bad.returncode == 2 and "broken.csv" in bad.stderr and "y_kpc" in bad.stderr

    gas_needed = run_cmd(GALMASS + ["predict", "--run", str(trained["gas+stars"]), "--stars", str(radial)],
                         check=False)
    assert gas_needed.returncode == 2 and "--gas" in gas_needed.stderr
