"""The observer input: binary and foreground fractions recorded per catalogue, fed to a model, stated or marginalised
at prediction, and refused where a model cannot take them."""

from __future__ import annotations

import json
import shutil
import sys

import h5py
import numpy as np
import pytest
import torch

from galmass.config import Config, ConfigError, DataConfig, ModelConfig, config_diffs, load_config
from galmass.datasets.reader import DatasetError, ShardedDataset
from galmass.mocks.observe import draw_catalogue
from galmass.models import MassPosterior
from galmass.observer import check_stated, describe, with_observer

from conftest import TINY_DATA, TINY_MODEL, TINY_TRAIN, run_cmd
from test_models import NORM, batch

DC = {"binary_fraction": 0.5, "contamination_fraction": 0.1, "vary_fractions": True}


def _pool(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.normal(0, 8.0, n)


def test_draw_catalogue_returns_the_fractions_it_drew():
    x, y, v = _pool()
    varied = DataConfig(binary_fraction=0.5, contamination_fraction=0.1, vary_fractions=True)
    rng = np.random.default_rng(1)
    f = np.array([draw_catalogue(x, y, v, varied, rng, 0.2)[4] for _ in range(200)])
    assert np.all((f >= 0) & (f <= [0.5, 0.1])) and f[:, 0].std() > 0.1 and f[:, 1].max() > 0.08
    fixed = DataConfig(binary_fraction=0.3, contamination_fraction=0.05)
    assert draw_catalogue(x, y, v, fixed, rng, 0.2)[4] == (0.3, 0.05)
    # Same seed → same catalogue and fractions (the fractions are drawn where they always were in the stream).
    a, b = (draw_catalogue(x, y, v, varied, np.random.default_rng(7), 0.2) for _ in range(2))
    assert all(np.array_equal(p, q) for p, q in zip(a[:4], b[:4])) and a[4] == b[4]


def test_dataset_records_the_observer_and_its_statistics(tiny_dataset):
    ds = ShardedDataset(tiny_dataset, "train", ("observer",))
    obs = ds.read_all("observer")
    assert obs.shape == (len(ds), 2) and np.all(obs == 0)  # the tiny data have no binaries and no foreground
    with h5py.File(tiny_dataset / ds.shards[0]["file"], "r") as fh:
        assert list(fh["observer"].attrs["names"]) == ["binary_fraction", "foreground_fraction"]
    stats = json.loads((tiny_dataset / "manifest.json").read_text())["normalisation"]["observer"]
    assert stats["max"] == [0.0, 0.0]


def test_a_shard_without_the_observer_is_refused_with_a_hint(tiny_dataset, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_dataset, old)
    for shard in old.glob("shard-*.h5"):
        with h5py.File(shard, "a") as fh:
            del fh["observer"]
    ShardedDataset(old, "train", ("scalars",), verify=False)  # a model that does not read it still works
    with pytest.raises(DatasetError, match=r"no dataset \['observer'\].*older galmass.*regenerate"):
        ShardedDataset(old, "train", ("scalars", "observer"), verify=False)


def test_stated_fractions_are_copied_and_unstated_ones_are_nan():
    draws = [{"scalars": np.full(4, i)} for i in range(3)]  # membership/distance realisations
    stated = with_observer(draws, (0.0, 0.02))
    assert [s["observer"].tolist() for s in stated] == [[0.0, np.float32(0.02)]] * 3
    assert stated[1]["scalars"] is draws[1]["scalars"]  # maps shared, not copied
    half = with_observer(draws, (None, 0.0))[0]["observer"]
    assert np.isnan(half[0]) and half[1] == 0.0 and half.dtype == np.float32
    assert describe((0.0, None), DC) == {"binary_fraction": 0.0,
                                         "foreground_fraction": "not stated (the training range was [0, 0.1])"}


def test_training_hides_each_fraction_deterministically():
    """Conditional dropout in the loader: NaN with the configured rate, the same for any rank count and on resume."""
    from hpc.augment import hide_mask
    from hpc.dali_loader import BatchSource

    class Data:
        def __len__(self):
            return 64

        def get_batch(self, idx):
            return {"observer": np.tile([[0.3, 0.05]], (len(idx), 1)).astype(np.float32),
                    "labels": np.zeros((len(idx), 10), np.float32)}

    one = BatchSource(Data(), ("observer", "labels"), 32, 0, 1, seed=5, hide_key="observer", hide_rate=0.5)
    two = [BatchSource(Data(), ("observer", "labels"), 32, r, 2, seed=5, hide_key="observer", hide_rate=0.5)
           for r in range(2)]
    full = one.raw(1, 1)["observer"]
    halves = np.concatenate([b.raw(1, 1)["observer"] for b in two])
    np.testing.assert_array_equal(np.isnan(full), np.isnan(halves))
    np.testing.assert_array_equal(np.isnan(full), hide_mask(5, 1, 1, 32, 2, 0.5))
    kept = ~np.isnan(full)
    assert 0.3 < np.isnan(full).mean() < 0.7
    np.testing.assert_array_equal(full[kept], np.tile(np.float32([0.3, 0.05]), (32, 1))[kept])
    assert not np.array_equal(np.isnan(full), np.isnan(one.raw(1, 0)["observer"]))  # a new draw every step
    with pytest.raises(ValueError, match="hide_rate"):
        BatchSource(Data(), ("labels",), 32, 0, 1, seed=5, hide_key="observer", hide_rate=0.5)


def test_fractions_a_model_cannot_take_are_errors():
    assert check_stated((None, None), DC, True, "m") == []
    assert check_stated((0.0, 0.1), DC, True, "m") == []
    errs = check_stated((0.7, -0.1), DC, True, "m")
    assert "--binary-fraction 0.7 lies above the training range [0, 0.5]" in errs[0] and "[0, 1]" in errs[1]
    (err,) = check_stated((0.0, None), DC, False, "run r")
    assert "run r was not trained with model.observer_inputs" in err and "--binary-fraction" in err


def test_config_needs_varied_fractions_and_old_runs_resume_without_the_key():
    with pytest.raises(ConfigError, match="model.observer_inputs needs data.vary_fractions"):
        Config(model=ModelConfig(observer_inputs=True))
    Config(data=DataConfig(binary_fraction=0.5, vary_fractions=True), model=ModelConfig(observer_inputs=True))
    with pytest.raises(ConfigError, match="model.observer_hidden must be in"):
        ModelConfig(observer_hidden=1.0)
    new = {"model": {"observer_inputs": False, "ensemble": 1}}
    assert config_diffs({"model": {"ensemble": 1}}, new) == []
    assert config_diffs({"model": {"ensemble": 1}}, {"model": {"observer_inputs": True}}) == \
        ["model.observer_inputs: False → True"]


def test_the_network_is_conditioned_on_the_observer():
    norm = {**NORM, "observer": {"mean": [0.25, 0.05], "std": [0.14, 0.03]}}
    cfg = ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[8], observer_inputs=True)
    torch.manual_seed(0)
    net = MassPosterior(cfg, 16, norm)
    assert net.input_keys[-1] == "observer" and "o_mean" in net.state_dict()
    b = batch()
    b["observer"] = torch.zeros(3, 2)
    clean = net.context(b)
    b["observer"] = torch.tensor([[0.5, 0.1]] * 3)
    assert net(b).shape == (3,) and not torch.allclose(clean, net.context(b))
    b["observer"] = torch.full((3, 2), float("nan"))  # not stated: finite, and unlike any stated value
    unstated = net.context(b)
    assert torch.all(torch.isfinite(unstated)) and torch.all(torch.isfinite(net(b)))
    b["observer"] = torch.tensor([[0.25, 0.05]] * 3)  # the training means: standardised to 0, as NaN's value
    assert not torch.allclose(unstated, net.context(b))  # the stated flag tells them apart
    plain = MassPosterior(ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[8]), 16, norm)
    assert "observer" not in plain.input_keys and "o_mean" not in plain.state_dict()  # old model files still load
    with pytest.raises(ValueError, match="no 'observer' statistics"):
        MassPosterior(cfg, 16, NORM)


def test_train_and_predict_with_stated_and_marginalised_fractions(tmp_path):
    """A real (1-epoch) training with observer inputs on mocks with varied fractions, then `galmass predict`."""
    data = tmp_path / "data"
    over = [*TINY_DATA, f"--data.path={data}", "--data.suites=[median]", "--data.feedbacks=[cusp]",
            "--data.binary_fraction=0.5", "--data.contamination_fraction=0.1", "--data.vary_fractions=true"]
    run_cmd([sys.executable, "-m", "galmass", "mock", *over])
    obs = ShardedDataset(data, None, ("observer",)).read_all("observer")
    assert obs[:, 0].max() > 0.3 and obs[:, 0].std() > 0.05 and obs[:, 1].max() <= 0.1
    assert load_config(None, over).data.vary_fractions
    run = tmp_path / "run"
    run_cmd([sys.executable, "-m", "galmass.train", *over, f"--train.run_dir={run}", *TINY_MODEL, *TINY_TRAIN,
             "--model.observer_inputs=true", "--train.epochs=1", "--train.max_steps_per_epoch=2"])
    rng = np.random.default_rng(0)
    cat = tmp_path / "dsph.csv"
    np.savetxt(cat, np.column_stack([rng.normal(0, 0.3, (2, 150)).T, rng.normal(0, 8, 150), np.full(150, 2.0)]),
               delimiter=",", header="x_kpc,y_kpc,v_los_kms,v_err_kms", comments="")
    base = [sys.executable, "-m", "galmass", "predict", "--run", str(run), "--stars", str(cat), "--samples", "64",
            "--no-plot", "--force"]
    run_cmd(base + ["--out", str(tmp_path / "clean"), "--binary-fraction", "0", "--foreground-fraction", "0"])
    run_cmd(base + ["--out", str(tmp_path / "marg")])
    clean, marg = (json.loads((tmp_path / d / "dsph" / "posterior.json").read_text()) for d in ("clean", "marg"))
    assert clean["observer"] == {"binary_fraction": 0.0, "foreground_fraction": 0.0}
    assert marg["observer"]["binary_fraction"] == "not stated (the training range was [0, 0.5])"
    bad = run_cmd(base + ["--out", str(tmp_path / "bad"), "--binary-fraction", "0.9"], check=False)
    assert bad.returncode == 2 and "--binary-fraction 0.9 lies above the training range" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
    # galmass validate: the independent set's fractions stated (0, 0), or left unstated (--marginalise).
    pytest.importorskip("galpy")
    from galmass.validate import validate_run
    from galmass.validation.generator import SetSpec

    spec = SetSpec(n_galaxies=2, projections=1, n_stars=(100,))
    stated = validate_run(run, tmp_path / "set.npz", n_samples=48, spec=spec, workers=1)
    run_cmd([sys.executable, "-m", "galmass", "validate", str(run), "--set", str(tmp_path / "set.npz"), "--samples",
             "48", "--marginalise"])  # the galmass CLI passes the flag through
    marg = json.loads((run / f"validate-{stated['set']['name']}-marginalised" / "metrics.json").read_text())
    marg["out_dir"] = str(run / f"validate-{stated['set']['name']}-marginalised")
    assert stated["observer_inputs"].startswith("stated: binary_fraction 0")
    assert marg["observer_inputs"].startswith("not stated") and marg["out_dir"].endswith("-marginalised")
    p_stated, p_marg = (np.load(f"{m['out_dir']}/posteriors.npz")["n100_p50"] for m in (stated, marg))
    assert p_stated.shape == p_marg.shape == (2, 10) and not np.allclose(p_stated, p_marg)
    assert "Observer inputs" in (tmp_path / "run" / f"validate-{stated['set']['name']}" / "validation.md").read_text()
