"""Tests of galmass.report: files written, numbers in the markdown equal those in metrics.json, valid PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from galmass.metrics import ESTIMATORS, LABEL_RADII_FACTORS, compute_metrics
from galmass.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _make_eval_dir(root: Path, run: str, tracer: str, noise_dex: float, seed: int, dataset: str = "data/mockA"):
    """A synthetic evaluation directory: power-law truths, posterior = truth + offset + noise."""
    rng = np.random.default_rng(seed)
    s, n = 60, 150
    f = np.asarray(LABEL_RADII_FACTORS)
    slope = rng.uniform(1.0, 2.0, size=(n, 1))
    base = rng.normal(7.5, 0.4, size=(n, 1))
    truth = base + slope * np.log10(f)
    est_f = np.array([e.radius_factor for e in ESTIMATORS])
    true_est = base + slope * np.log10(est_f)
    centre = truth + rng.normal(0.0, noise_dex, size=(n, 10))
    samples = centre[None] + rng.normal(0.0, noise_dex, size=(s, n, 10))
    rh = rng.uniform(0.1, 1.0, size=n)
    # σ such that Wolf's estimator is unbiased with 0.05 dex scatter in σ (a realistic-looking figure).
    wolf = [e.name for e in ESTIMATORS].index("Wolf2010")
    sigma = np.sqrt(10 ** true_est[:, wolf] * 4.30092e-6 / (4.0 * rh)) * 10 ** rng.normal(0, 0.05, size=n)
    metrics, arrays = compute_metrics(samples, truth, sigma, rh, true_est, rng)
    metrics.update(
        run=run, tracer=tracer, dataset=dataset, split="test", n_galaxies=n // 10, seed=seed, model_nll=-3.25 - seed
    )
    d = root / run
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    np.savez(d / "residuals.npz", **arrays)
    return d


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evals")
    dirs = [
        _make_eval_dir(root, "stars-run", "stars", 0.15, 1),
        _make_eval_dir(root, "gas-run", "gas", 0.25, 2),
        _make_eval_dir(root, "combined-run", "gas+stars", 0.08, 3),
    ]
    out = root / "report"
    path = write_report(dirs, out, title="Synthetic report")
    return dirs, out, path


def _metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


def _section(md: str, heading: str) -> str:
    start = md.index(heading)
    end = md.find("\n## ", start + len(heading))
    return md[start : end if end >= 0 else None]


def _row(section: str, first_cell: str) -> list[str]:
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_report_files_exist_and_pngs_are_valid(three_runs):
    _, out, path = three_runs
    assert path == out / "report.md" and path.is_file()
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 * 2 + 1  # mass ratio + calibration per run, one tracer comparison
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert np.ptp(img[..., :3]) > 0  # not a blank canvas
    md = path.read_text()
    for p in pngs:
        assert f"]({p.name})" in md
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_report_numbers_match_metrics_json(three_runs):
    dirs, _, path = three_runs
    md = path.read_text()
    for d in dirs:
        m = _metrics(d)
        sec = _section(md, f"## Run `{m['run']}`")
        assert f"Dataset: `{m['dataset']}`" in sec and f"seed {m['seed']}" in sec
        for k, f in enumerate(m["radii_factors"]):
            cells = _row(sec, f"{f:.2f}")
            got = [float(c) for c in cells[1:4]]
            want = [m["cnn"]["bias"][k], m["cnn"]["scatter"][k], m["cnn"]["frac_within_0p1"][k]]
            np.testing.assert_allclose(got, want, atol=5.01e-4)  # 3-decimal rounding
            assert cells[1] == f"{want[0]:+.3f}"
        for name, e in m["estimators"].items():
            cells = _row(sec, name)
            assert float(cells[1]) == pytest.approx(e["radius_factor"], abs=5.01e-3)
            assert float(cells[2]) == pytest.approx(e["coefficient"])
            got = [float(c) for c in cells[3:9]]
            want = [e["estimator"]["scatter"], e["cnn"]["scatter"], e["estimator"]["bias"], e["cnn"]["bias"],
                    e["estimator"]["frac_within_0p1"], e["cnn"]["frac_within_0p1"]]
            np.testing.assert_allclose(got, want, atol=5.01e-4)
        assert f"{m['coverage']['max_abs_error']:.3f}" in sec
        assert f"{m['tarp']['max_abs_error']:.3f}" in sec
    assert "least certain" in md  # Campbell+17 is flagged


def test_report_run_table_and_tracer_ratio(three_runs):
    dirs, _, path = three_runs
    md = path.read_text()
    runs_sec = _section(md, "## Runs")
    for d in dirs:
        m = _metrics(d)
        cells = _row(runs_sec, f"`{m['run']}`")
        assert cells[1] == m["tracer"] and cells[2] == f"`{m['dataset']}`" and cells[4] == str(m["seed"])
        assert float(cells[7]) == pytest.approx(m["model_nll"])
    tracer = _section(md, "## Tracer comparison")
    stars, gas, comb = (_metrics(d) for d in dirs)
    for k, f in enumerate(comb["radii_factors"]):
        cells = _row(tracer.split("Scatter ratio")[1], f"{f:.2f}")
        denom = comb["cnn"]["scatter"][k]
        want = [stars["cnn"]["scatter"][k] / denom, gas["cnn"]["scatter"][k] / denom]
        np.testing.assert_allclose([float(c) for c in cells[1:3]], want, atol=5.01e-3)
    # The synthetic gas run is noisier than the combined one: ratios clearly above 1.
    assert all(float(_row(tracer.split("Scatter ratio")[1], f"{f:.2f}")[2]) > 1.5 for f in comb["radii_factors"])


def test_single_run_has_no_tracer_comparison(tmp_path):
    d = _make_eval_dir(tmp_path, "only", "stars", 0.1, 4)
    path = write_report([d], tmp_path / "rep")
    md = path.read_text()
    assert "## Tracer comparison" not in md
    assert not (tmp_path / "rep" / "tracer_comparison.png").exists()
    assert md.startswith("# galmass report")


def test_missing_files_raise_with_hint(tmp_path):
    with pytest.raises(ValueError, match="HINT"):
        write_report([tmp_path / "nope"], tmp_path / "rep")
    with pytest.raises(ValueError, match="HINT"):
        write_report([], tmp_path / "rep")
    d = _make_eval_dir(tmp_path, "broken", "stars", 0.1, 5)
    m = _metrics(d)
    del m["tarp"]
    (d / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="tarp"):
        write_report([d], tmp_path / "rep")
