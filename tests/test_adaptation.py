"""Domain adaptation: the MMD two-sample distance and training with an unlabelled target domain."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import TINY_DATA, TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from galmass.config import ConfigError
from galmass.models.alignment import mmd2


def test_mmd_is_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    same = float(mmd2(a, b))
    assert abs(same) < 0.01  # unbiased estimator: ~0 (either sign) for one distribution
    shifted = [float(mmd2(a, b + d)) for d in (0.25, 0.5, 1.0)]
    assert shifted[0] > 3 * abs(same) and shifted == sorted(shifted)
    x = b.clone().requires_grad_(True)
    mmd2(a, x + 1.0).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="n, m >= 2"):
        mmd2(a[:1], b)


@pytest.mark.slow
def test_training_with_an_unlabelled_target_domain(tiny_dataset, tmp_path):
    target = tmp_path / "target"
    run_cmd([sys.executable, "-m", "galmass", "mock", *TINY_DATA, "--data.seed=9", "--data.suites=[median]",
             f"--data.path={target}", "--workers", "1"])
    run = tmp_path / "run"
    out = run_cmd([sys.executable, "-m", "galmass.train", *tiny_data_args(tiny_dataset), f"--train.run_dir={run}",
                   *TINY_MODEL, *TINY_TRAIN, "--train.epochs=2", "--train.adapt=mmd",
                   f"--train.adapt_target={target}", "--train.adapt_weight=1.0"], env_extra={"OMP_NUM_THREADS": "1"})
    assert (run / "done.json").exists() and "finished" in out.stdout
    bad = run_cmd([sys.executable, "-m", "galmass.train", *tiny_data_args(tiny_dataset),
                   f"--train.run_dir={tmp_path / 'r2'}", "--train.adapt=mmd"], check=False)
    assert bad.returncode == 2 and "adapt_target" in bad.stderr


def _write_dwarfs(path, n_stars=(150, 300, 80), seed=0):
    """Star catalogues of three Plummer dwarfs (R_h 0.1-0.4 kpc, σ 6-12 km/s) in predict's CSV format; the
    third has uncertain members (p_member)."""
    rng = np.random.default_rng(seed)
    rows = ["galaxy,x_kpc,y_kpc,v_los_kms,v_err_kms,p_member"]
    for g, (n, rh, sigma) in enumerate(zip(n_stars, (0.1, 0.4, 0.2), (6.0, 12.0, 8.0))):
        u, phi = rng.random(n), 2 * np.pi * rng.random(n)
        R = rh * np.sqrt(u / (1 - u))
        v = rng.normal(0.0, sigma, n)
        p = np.where(rng.random(n) < 0.3, 0.6, 1.0) if g == 2 else np.ones(n)
        rows += [f"d{g},{r * np.cos(f):.5f},{r * np.sin(f):.5f},{vv:.3f},2.0,{pp}"
                 for r, f, vv, pp in zip(R, phi, v, p)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_catalogue_target_gives_model_inputs_for_every_galaxy(tmp_path):
    from galmass.config import DataConfig, ModelConfig
    from galmass.models.network import input_keys
    from galmass.target_domain import CatalogueMaps, target_data

    keys = input_keys(ModelConfig())
    target = target_data(_write_dwarfs(tmp_path / "dwarfs.csv"), DataConfig(npix=16), keys, min_samples=10)
    assert isinstance(target, CatalogueMaps) and target.names == ["d0", "d1", "d2"] and len(target) == 12
    batch = target.get_batch([0, 5, 11])
    assert set(batch) == set(keys) and batch["maps_stars"].shape[0] == 3 and batch["maps_stars"].shape[-1] == 16
    assert all(np.isfinite(v).all() for v in batch.values())
    sky = target.arrays["maps_stars"]
    assert np.array_equal(sky[0], sky[3]) and not np.array_equal(sky[8], sky[11])  # copies vs membership draws
    (tmp_path / "empty").mkdir()
    for bad in ("missing", "empty"):  # no such path; a directory with neither a manifest nor CSVs
        with pytest.raises(ConfigError, match=f"adapt_target={tmp_path / bad}"):
            target_data(tmp_path / bad, DataConfig(), keys, 10)
    with pytest.raises(ConfigError, match="gas"):
        target_data(_write_dwarfs(tmp_path / "d.csv"), DataConfig(), ("maps_stars", "maps_gas"), 10)


@pytest.mark.slow
def test_training_adapts_to_observed_catalogues(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    out = run_cmd([sys.executable, "-m", "galmass.train", *tiny_data_args(tiny_dataset), f"--train.run_dir={run}",
                   *TINY_MODEL, *TINY_TRAIN, "--train.epochs=1", "--train.adapt=mmd",
                   f"--train.adapt_target={_write_dwarfs(tmp_path / 'dwarfs.csv')}"],
                  env_extra={"OMP_NUM_THREADS": "1"})
    assert (run / "done.json").exists() and "finished" in out.stdout
    (tmp_path / "broken.csv").write_text("galaxy,x_kpc,y_kpc,verr\nd0,0.1,0.1,3\n")
    bad = run_cmd([sys.executable, "-m", "galmass.train", *tiny_data_args(tiny_dataset),
                   f"--train.run_dir={tmp_path / 'r2'}", "--train.adapt=mmd",
                   f"--train.adapt_target={tmp_path / 'broken.csv'}"], check=False)
    assert bad.returncode == 2 and "broken.csv" in bad.stderr and "Traceback" not in bad.stderr
