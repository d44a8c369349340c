"""End to end through the CLI on a tiny dataset: train → evaluate → report → predict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from galmass.predict import read_samples

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


def _catalogue(tmp_path: Path, n: int, scale: float = 1.0, columns: str = "xy", seed: int = 11) -> Path:
    from galmass.mocks.galaxy import draw_galaxy, sample_stars
    from galmass.mocks.projection import project
    from galmass.mocks.suites import load_feedback, load_suite

    rng = np.random.default_rng(5)
    gal = draw_galaxy(load_suite("compact"), load_feedback("cusp"), seed)
    pos, vel = sample_stars(gal, n, rng)
    x, y, v = project(pos, vel, np.array([0.0, 0.0, 1.0]), 0.3)
    v = (v + rng.normal(0, 2.0, n)) * scale
    path = tmp_path / f"stars_{n}_{columns}_{seed}.csv"
    if columns == "xy":
        rows = np.column_stack([x, y, v, np.full(n, 2.0)])
        header = "x_kpc,y_kpc,v_los_kms,v_err_kms"
    else:
        rows = np.column_stack([np.hypot(x, y), v])
        header = "R_kpc,v_los_kms"
    np.savetxt(path, rows, delimiter=",", header=header, comments="")
    return path


def _posterior(out: Path, cat: Path) -> dict:
    return json.loads((out / cat.stem / "posterior.json").read_text())


def test_predict_on_a_catalogue(trained, tmp_path):
    cat = _catalogue(tmp_path, 120)
    out = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(cat), "--samples", "300",
                             "--out", str(tmp_path / "p")])
    assert "M(<" in out.stdout
    post = _posterior(tmp_path / "p", cat)
    assert "Wolf2010" in post["estimators"] and (tmp_path / "p" / cat.stem / "profile.png").stat().st_size > 1000
    data = np.loadtxt(cat, delimiter=",", skiprows=1)
    # R_h of the members about the stars' own centre (the tiny model's data recentre, as an observer does)
    centre = np.array(post["centre_offset_kpc"])
    rh = np.median(np.hypot(data[:, 0] - centre[0], data[:, 1] - centre[1]))
    assert post["n_members"] <= 120
    if post["n_members"] == 120:
        np.testing.assert_allclose(post["radii_kpc"], np.array(post["radii_factors"]) * rh, rtol=1e-9)
    assert np.all(np.array(post["log10_mass_p16"]) <= np.array(post["log10_mass_median"]))
    assert np.all(np.array(post["log10_mass_median"]) <= np.array(post["log10_mass_p84"]))
    samples = np.load(tmp_path / "p" / cat.stem / "samples.npz")["log10_mass_samples"]
    assert samples.shape == (300, 10)
    # same seed → same answer
    run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(cat), "--samples", "300",
                       "--out", str(tmp_path / "p2")])
    assert np.array_equal(samples, np.load(tmp_path / "p2" / cat.stem / "samples.npz")["log10_mass_samples"])


def test_predict_many_galaxies_on_the_sky_with_uncertain_distance_and_membership(trained, tmp_path):
    """One file, two galaxies in RA/Dec with a distance error and membership probabilities: both propagated."""
    from galmass.catalogue import tangent_plane_kpc

    rows, d_kpc = [], 80.0
    for name, seed in (("Draco-like", 11), ("Sextans-like", 12)):
        data = np.loadtxt(_catalogue(tmp_path, 150, seed=seed), delimiter=",", skiprows=1)
        # small-angle sky positions about (RA, Dec) = (260, 57) deg; the reader projects them back exactly
        dec = 57.0 + np.degrees(data[:, 1] / d_kpc)
        ra = 260.0 + np.degrees(data[:, 0] / d_kpc) / np.cos(np.radians(57.0))
        p = np.where(np.arange(len(data)) % 5 == 0, 0.5, 1.0)
        rows += [f"{name},{a:.8f},{b:.8f},{v:.4f},2.0,{q}" for a, b, v, q in zip(ra, dec, data[:, 2], p)]
    cat = tmp_path / "field.csv"
    cat.write_text("galaxy,ra_deg,dec_deg,v_los_kms,v_err_kms,p_member\n" + "\n".join(rows) + "\n")
    base = GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(cat), "--samples", "400"]
    bad = run_cmd(base, check=False)
    assert bad.returncode == 2 and "need a distance" in bad.stderr and "field.csv" in bad.stderr
    out = tmp_path / "sky"
    run_cmd(base + ["--distance-kpc", str(d_kpc), "--distance-err-kpc", "30", "--out", str(out)])
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("galaxy,n_members") and [r.split(",")[0] for r in summary[1:]] == \
        ["Draco-like", "Sextans-like"]
    post = json.loads((out / "Draco-like" / "posterior.json").read_text())
    assert post["realisations"] == 16 and post["distance_err_kpc"] == 30.0
    both = json.loads((out / "summary.json").read_text())  # every galaxy's posterior.json, in catalogue order
    assert both["galaxies"] == ["Draco-like", "Sextans-like"] and both["results"][0] == post
    # Without the distance error (0.16 dex, M ∝ R_h at fixed σ) and with certain members the posterior is
    # narrower: the uncertainty is propagated (in quadrature: ~0.35 → ~0.39 dex for the tiny model).
    certain = tmp_path / "certain.csv"
    certain.write_text("\n".join(ln.rsplit(",", 1)[0] for ln in cat.read_text().splitlines()) + "\n")
    run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(certain), "--samples", "400",
                       "--distance-kpc", str(d_kpc), "--out", str(tmp_path / "certain")])
    sharp = json.loads((tmp_path / "certain" / "Draco-like" / "posterior.json").read_text())
    width = np.subtract(post["log10_mass_p84"], post["log10_mass_p16"]).mean()
    assert width > 1.05 * np.subtract(sharp["log10_mass_p84"], sharp["log10_mass_p16"]).mean()
    # Batched with another galaxy or alone: the same posterior for a galaxy up to Monte Carlo noise.
    alone = tmp_path / "alone.csv"
    alone.write_text("\n".join(ln for ln in certain.read_text().splitlines() if not ln.startswith("Sextans")) + "\n")
    run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(alone), "--samples", "400",
                       "--distance-kpc", str(d_kpc), "--out", str(tmp_path / "alone")])
    solo = json.loads((tmp_path / "alone" / "Draco-like" / "posterior.json").read_text())
    np.testing.assert_allclose(solo["log10_mass_median"], sharp["log10_mass_median"], atol=0.1)
    x, _ = tangent_plane_kpc(np.array([260.0 + 1.0]), np.array([0.0]), 260.0, 0.0, d_kpc)
    np.testing.assert_allclose(x, np.tan(np.radians(1.0)) * d_kpc, rtol=1e-12)


def test_predict_workers_give_the_draws_of_one_process(trained, tmp_path):
    """140 galaxies (two network calls of certain ones, one of an uncertain one) in 1 and in 2 forked workers."""
    data = np.loadtxt(_catalogue(tmp_path, 600), delimiter=",", skiprows=1)
    rng = np.random.default_rng(3)
    rows = []
    for g in range(140):
        pick = rng.choice(len(data), 100, replace=False)
        rows += [f"g{g:03d},{a:.5f},{b:.5f},{v:.3f},2.0,{0.7 if g == 5 and k % 4 == 0 else 1.0}"
                 for k, (a, b, v, _) in enumerate(data[pick])]
    cat = tmp_path / "many.csv"
    cat.write_text("galaxy,x_kpc,y_kpc,v_los_kms,v_err_kms,p_member\n" + "\n".join(rows) + "\n")
    results = []
    for workers, single in ((1, False), (2, False), (2, True)):
        out = tmp_path / f"w{workers}{single}"
        run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(cat), "--samples", "200",
                           "--no-plot", "--workers", str(workers), "--out", str(out)]
                + (["--single-file"] if single else []))
        summary = json.loads((out / "summary.json").read_text())
        assert summary["galaxies"] == [f"g{g:03d}" for g in range(140)]
        results.append(summary["results"])
        assert summary["results"][5]["realisations"] == 16
        if single:  # three files, not three per galaxy
            assert sorted(p.name for p in out.iterdir()) == ["samples.h5", "summary.csv", "summary.json"]
        else:
            assert len(list(out.iterdir())) == 140 + 2
    # One seed per network call, fixed by the catalogues: the same posteriors whatever the number of workers
    # (up to float rounding of a matrix product split over other thread counts).
    for one, two in zip(*results[:2]):
        assert one["galaxy"] == two["galaxy"] and one["n_members"] == two["n_members"]
        np.testing.assert_allclose(one["log10_mass_median"], two["log10_mass_median"], atol=1e-5)
        np.testing.assert_allclose(one["log10_mass_p84"], two["log10_mass_p84"], atol=1e-5)
    # --single-file: the same computation, only stored otherwise; draws in catalogue order, read from either layout
    assert results[1] == results[2]
    per_galaxy, single = read_samples(tmp_path / "w2False"), read_samples(tmp_path / "w2True")
    assert list(single) == [f"g{g:03d}" for g in range(140)] == list(per_galaxy)
    assert all(np.array_equal(per_galaxy[g], single[g]) and single[g].shape == (200, 10) for g in single)
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(cat), "--workers", "0"],
                  check=False)
    assert bad.returncode == 2 and "--workers" in bad.stderr and "Traceback" not in bad.stderr


def test_predict_refuses_bad_catalogues(trained, tmp_path):
    few = _catalogue(tmp_path, 6)
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(few)], check=False)
    assert bad.returncode == 2 and "only 6 member stars" in bad.stderr

    hot = _catalogue(tmp_path, 120, scale=30.0)  # σ far above anything in training
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(hot)], check=False)
    assert bad.returncode == 2 and "outside the training range" in bad.stderr and "σ" in bad.stderr
    assert "nothing written" in bad.stderr and not Path(f"predict-{hot.stem}").exists()
    forced = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(hot), "--force",
                                "--out", str(tmp_path / "forced")])
    assert "outside the training range" in forced.stderr  # a warning, never a silent number
    assert _posterior(tmp_path / "forced", hot)["forced_errors"]

    radial = _catalogue(tmp_path, 120, columns="R")
    ok = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(radial), "--out",
                            str(tmp_path / "radial")])
    assert "circularised" in ok.stderr

    for text, expect in (("x_kpc,v_los_kms\n0.1,3\n", "y_kpc"),
                         ("x_kpc,y_kpc,v_los_kms,verr\n0.1,0.2,3,1\n", "unknown column(s) ['verr']"),
                         ("x_kpc,y_kpc,v_los_kms,p_member\n0.1,0.2,3,80\n", "p_member")):
        broken = tmp_path / "broken.csv"
        broken.write_text(text)
        bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(broken)], check=False)
        assert bad.returncode == 2 and "broken.csv" in bad.stderr and expect in bad.stderr, bad.stderr

    twice = tmp_path / "twice.csv"  # one name in two separate blocks: two galaxies given one name
    lines = _catalogue(tmp_path, 40).read_text().splitlines()
    twice.write_text("galaxy," + lines[0] + "\n" + "\n".join(f"{g},{ln}" for g, ln in
                                                            zip(["A"] * 15 + ["B"] * 10 + ["A"] * 15, lines[1:])))
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(twice)], check=False)
    assert bad.returncode == 2 and "twice.csv" in bad.stderr and "'A' appears in separate blocks" in bad.stderr
    many = tmp_path / "many"  # a directory of catalogues, a name in two files
    many.mkdir()
    (many / "a.csv").write_text("galaxy," + lines[0] + "\n" + "\n".join(f"{g},{ln}" for g, ln in
                                                                     zip(["A"] * 20 + ["C"] * 20, lines[1:])))
    (many / "b.csv").write_text("galaxy," + lines[0] + "\n" + "\n".join(f"C,{ln}" for ln in lines[1:]))
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(many)], check=False)
    assert bad.returncode == 2 and "b.csv" in bad.stderr and "also in" in bad.stderr

    big = _catalogue(tmp_path, 3200)  # above the trained maximum N★ (data.n_stars = [20, 3000])
    bad = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(big)], check=False)
    assert bad.returncode == 2 and "trained on catalogues of 20–3000 stars" in bad.stderr

    again = run_cmd(GALMASS + ["predict", "--run", str(trained["stars"]), "--stars", str(radial), "--out",
                               str(tmp_path / "radial")], check=False)  # never overwritten silently
    assert again.returncode == 2 and "not empty" in again.stderr

    gas_needed = run_cmd(GALMASS + ["predict", "--run", str(trained["gas+stars"]), "--stars", str(radial)],
                         check=False)
    assert gas_needed.returncode == 2 and "--gas" in gas_needed.stderr
