"""``galmass calibrate``: tempered flows (draws and an exact, normalised density), the N★ polynomial and its floor,
the calibration error, and the command on a tiny run (a new run directory; refusals before anything is written)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import zuko

import galmass.calibrate as calibrate
from conftest import run_cmd
from galmass.calibrate import CalibrationError, calibrate_run, calibration_error
from galmass.datasets import scalar_index
from galmass.datasets.integrity import sha256_file
from galmass.models.combine import EnsembleError, combine_runs
from galmass.models.io import load_trained
from galmass.models.sampling import sample_flow, tempered_log_prob


def _flow(features: int = 3) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    flow = zuko.flows.MAF(features=features, context=4, transforms=2, hidden_features=(16, 16), passes=2)
    with torch.no_grad():  # a non-trivial transform (zuko starts near the identity)
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow, torch.randn(5, 4)


def test_tempered_draws_are_the_flow_of_scaled_base_noise():
    flow, c = _flow()
    torch.manual_seed(1)
    plain = sample_flow(flow, c, 64)
    torch.manual_seed(1)
    assert torch.equal(sample_flow(flow, c, 64, torch.ones(5)), plain)  # s = 1 is the trained model, bit for bit
    scale = torch.tensor([0.7, 1.0, 1.3, 2.0, 1.1])
    torch.manual_seed(1)
    z = flow(c).base.rsample((64,))
    torch.manual_seed(1)
    tempered = sample_flow(flow, c, 64, scale)
    torch.testing.assert_close(tempered, flow(c).transform.inv(z * scale[:, None]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("s", [0.8, 1.25])
def test_tempered_density_is_normalised_and_matches_the_draws(s):
    """∫ q_s = 1 by importance sampling from the trained flow (E_q1[q_s / q_1] = 1, finite variance for
    s² < 2), and the draws of the tempered sampler have a larger / smaller spread as s says."""
    flow, c = _flow(2)
    c = c[:1].expand(200_000, -1)
    scale = torch.full((len(c),), s)
    with torch.no_grad():
        y = flow(c).sample()
        ratio = torch.exp(tempered_log_prob(flow(c), y, scale) - flow(c).log_prob(y))
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.02)
    torch.manual_seed(2)
    wide = sample_flow(flow, c[:1], 20_000, scale[:1])[:, 0]
    torch.manual_seed(2)
    base = sample_flow(flow, c[:1], 20_000)[:, 0]
    spread = (wide.std(0) / base.std(0)).numpy()
    assert np.all(spread > 1.05) if s > 1 else np.all(spread < 0.95)
    assert torch.equal(tempered_log_prob(flow(c[:3]), y[:3], None), flow(c[:3]).log_prob(y[:3]))


def test_calibration_error_of_calibrated_and_overconfident_ranks():
    rng = np.random.default_rng(0)
    assert calibration_error(rng.random((20_000, 10))) < 0.01  # uniform ranks: every central level holds
    narrow = 0.5 + 1.6 * (rng.random((20_000, 10)) - 0.5)  # too many truths in the tails
    assert calibration_error(np.clip(narrow, 0, 1)) > 0.05


@pytest.fixture
def tiny_run(tiny_stars_run):
    return tiny_stars_run


def test_temper_scale_is_the_polynomial_with_its_floor(tiny_run):
    model, _, _ = load_trained(tiny_run)
    assert model.temper_scale(torch.zeros(2, 16)) is None
    scalars = torch.zeros(3, max(16, scalar_index("log10_n_stars") + 1))
    scalars[:, scalar_index("log10_n_stars")] = torch.tensor([1.3, 2.0, 3.4])
    model.temperature = (0.02, -0.06, 0.025)
    x = np.array([-0.7, 0.0, 1.4])
    expect = 10 ** (0.02 - 0.06 * x + 0.025 * x**2)
    np.testing.assert_allclose(model.temper_scale(scalars).numpy(), expect, rtol=1e-6)
    model.temper_min = 1.0
    np.testing.assert_allclose(model.temper_scale(scalars).numpy(), np.maximum(expect, 1.0), rtol=1e-6)


def test_calibrate_writes_a_new_run_and_refuses_what_it_cannot_do(tiny_run, tmp_path, monkeypatch):
    digest = sha256_file(tiny_run / "best.pt")
    # the tiny dataset has too few validation catalogues for 3 bins of 50: a clear refusal, nothing written
    r = run_cmd([sys.executable, "-m", "galmass", "calibrate", str(tiny_run), "--out", str(tmp_path / "no")],
                check=False)
    assert r.returncode == 2 and "N★ bins" in r.stderr and "HINT" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "no").exists()
    monkeypatch.setattr(calibrate, "MIN_BIN", 4)
    monkeypatch.setattr(calibrate, "N_BINS", 3)
    fit = calibrate_run(tiny_run, tmp_path / "cal", draws=20)
    assert len(fit["temperature"]) == 3 and fit["min_scale"] == 1.0 and fit["split"] == "val"
    assert sha256_file(tiny_run / "best.pt") == digest  # the original run is never modified
    model, _, blob = load_trained(tmp_path / "cal")
    assert model.temperature == tuple(fit["temperature"]) and model.temper_min == 1.0
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["temperature"] == fit["temperature"]
    assert "widen only" in (tmp_path / "cal" / "calibration.md").read_text()
    plain, _, _ = load_trained(tiny_run)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values()))
    with pytest.raises(CalibrationError, match="already calibrated"):
        calibrate_run(tmp_path / "cal", tmp_path / "again", draws=20)
    with pytest.raises(CalibrationError, match="not empty"):
        calibrate_run(tiny_run, tmp_path / "cal", draws=20)
    narrow = calibrate_run(tiny_run, tmp_path / "cal_narrow", draws=20, narrow=True)
    assert narrow["min_scale"] == 0.0
    with pytest.raises(EnsembleError, match="calibrated"):  # merging would drop the tempering
        combine_runs([tiny_run, tmp_path / "cal"], tmp_path / "ens")
    assert not (tmp_path / "ens").exists()
