"""Shipped pretrained models: a card per model, weights checked against it, loadable without training code."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import galmass.pretrained as pretrained
from conftest import TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from galmass.models.io import ModelFileError


@pytest.mark.slow
def test_ship_then_load_and_refuse_tampered_weights(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_cmd([sys.executable, "-m", "galmass.train", *tiny_data_args(tiny_dataset), f"--train.run_dir={run}",
             *TINY_MODEL, *TINY_TRAIN, "--train.epochs=1", "--train.max_steps_per_epoch=2"],
            env_extra={"OMP_NUM_THREADS": "1"})
    run_cmd([sys.executable, "-m", "galmass", "evaluate", "--run", str(run), "--samples", "20"])
    shipped = tmp_path / "pkg"
    shipped.mkdir()
    monkeypatch.setattr(pretrained, "MODEL_DIR", shipped)
    from galmass.pretrained.ship import ship_model

    card_path = ship_model(run, "tiny", out_dir=shipped)
    card = json.loads(card_path.read_text())
    assert card["dataset"]["data_hash"] and card["training"]["epochs_run"] == 1 and card["eval_test"]["bias"]
    assert pretrained.available() == ["tiny"]
    model, cfg, blob = pretrained.load_pretrained("tiny")  # no config.yaml: the config comes from the file
    assert blob["card"]["weights_sha256"] == card["weights_sha256"] and cfg.model.tracer == "stars"
    raw = bytearray((shipped / "tiny.pt").read_bytes())
    raw[-10] ^= 0xFF
    (shipped / "tiny.pt").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="does not match its model card"):
        pretrained.load_pretrained("tiny")
    with pytest.raises(ModelFileError, match="no shipped model 'other'"):
        pretrained.load_pretrained("other")


@pytest.mark.skipif(not pretrained.available(), reason="no pretrained model shipped in this checkout")
def test_shipped_default_model_matches_its_card_and_predicts():
    from galmass.maps import observation_to_sample
    from galmass.models.io import to_torch

    model, cfg, blob = pretrained.load_default()
    card = blob["card"]
    assert card["dataset"]["data_hash"] == blob["data_hash"] and card["eval_test"] is not None
    rng = np.random.default_rng(0)
    x, y, v = rng.normal(0, 0.3, (3, 200)) * np.array([[1], [1], [30]])
    d = cfg.data
    s = observation_to_sample(x, y, v, 2.0, npix=d.npix, extent_rh=d.extent_rh, vmax_sigma=d.vmax_sigma,
                              membership_clip=d.membership_clip, recentre=d.recentre)
    s["observer"] = np.zeros(2, dtype=np.float32)  # a cleaned sample, for a model conditioned on it
    batch = to_torch({k: np.asarray(s[k])[None] for k in model.input_keys}, __import__("torch").device("cpu"))
    samples = model.sample(batch, 200).numpy()
    assert samples.shape == (200, 1, 10) and np.all(np.isfinite(samples))
    assert np.all(np.diff(np.median(samples[:, 0], axis=0)) > 0)  # enclosed mass grows with radius


@pytest.mark.skipif(not pretrained.available(), reason="no pretrained model shipped in this checkout")
@pytest.mark.parametrize("n_stars", [20, 3000])
def test_predict_without_run_uses_the_shipped_model(tmp_path, n_stars):
    """`galmass predict --stars cat.csv` on a fresh install: no training, catalogues of 20 and 3000 stars."""
    rng = np.random.default_rng(n_stars)
    u = rng.uniform(0.02, 0.98, n_stars)
    R = 0.3 * np.sqrt(u / (1 - u))  # Plummer, R_h = 0.3 kpc; σ★ = 10 km/s: a classical dSph
    phi = rng.uniform(0, 2 * np.pi, n_stars)
    cat = tmp_path / "dsph.csv"
    np.savetxt(cat, np.column_stack([R * np.cos(phi), R * np.sin(phi), rng.normal(0, 10, n_stars),
                                     np.full(n_stars, 2.0)]),
               delimiter=",", header="x_kpc,y_kpc,v_los_kms,v_err_kms", comments="")
    out = run_cmd([sys.executable, "-m", "galmass", "predict", "--stars", str(cat), "--out", str(tmp_path / "p"),
                   "--samples", "300"])
    post = json.loads((tmp_path / "p" / "dsph" / "posterior.json").read_text())
    assert "shipped model" in post["model"] and post["n_members"] >= 0.95 * n_stars, out.stderr
    card = json.loads((pretrained.MODEL_DIR / "stars.card.json").read_text())
    assert post["calibration"] == (card["calibration"] and {  # the shipped tempering is recorded with the draws
        "log10_scale_coefficients": card["calibration"]["temperature"], "min_scale": card["calibration"]["min_scale"]})
    assert 6.0 < post["log10_mass_median"][2] < 8.5  # M(<R_h) of a 10 km/s, 0.3 kpc dwarf: ~10^7 Msun
