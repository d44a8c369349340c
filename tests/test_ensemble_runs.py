"""`galmass ensemble`: separately trained runs as one mixture model, and every way a user can combine wrongly."""

from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch

import galmass.pretrained as pretrained
from conftest import TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from galmass.datasets.reader import ShardedDataset
from galmass.models.combine import EnsembleError, combine_runs
from galmass.models.io import load_trained, to_torch
from galmass.pretrained.ship import ship_model


def _train(dataset, run, seed: int, extra: tuple[str, ...] = ()) -> None:
    run_cmd([sys.executable, "-m", "galmass.train", *tiny_data_args(dataset), f"--train.run_dir={run}", *TINY_MODEL,
             *TINY_TRAIN, "--train.epochs=1", "--train.max_steps_per_epoch=2", f"--train.seed={seed}", *extra],
            env_extra={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def two_runs(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    for seed in (0, 1):
        _train(tiny_dataset, root / f"seed{seed}", seed)
    return root


@pytest.mark.slow
def test_combined_runs_are_their_mixture_and_ship(two_runs, tiny_dataset, tmp_path, monkeypatch):
    runs = [two_runs / "seed0", two_runs / "seed1"]
    run_cmd([sys.executable, "-m", "galmass", "ensemble", *map(str, runs), "--out", str(tmp_path / "ens")])
    model, cfg, blob = load_trained(tmp_path / "ens")
    assert cfg.model.ensemble == 2 and len(model.members) == 2
    prov = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert [m["train_seed"] for m in prov["members"]] == [0, 1] and prov["members"][0]["training"]["epochs_run"] == 1
    # The mixture density is the mean of the members' densities, on real test samples.
    data = ShardedDataset(tiny_dataset, "test")
    raw = data.get_batch(np.arange(8))
    batch = to_torch({k: raw[k] for k in model.input_keys + ("labels",)}, torch.device("cpu"))
    singles = [load_trained(r)[0] for r in runs]
    with torch.no_grad():
        lp = torch.stack([m.log_prob(batch) for m in singles])
        torch.testing.assert_close(model.log_prob(batch), torch.logsumexp(lp, 0) - math.log(2))
    # The combined directory is a run like any other for evaluate.
    run_cmd([sys.executable, "-m", "galmass", "evaluate", "--run", str(tmp_path / "ens"), "--samples", "20"])
    assert (tmp_path / "ens" / "eval-test" / "metrics.json").exists()
    # ... and for ship: the card sums the members' training and lists them.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    monkeypatch.setattr(pretrained, "MODEL_DIR", pkg)
    card = json.loads(ship_model(tmp_path / "ens", "ens", out_dir=pkg).read_text())
    assert len(card["training"]["ensemble_of"]) == 2
    assert card["training"]["seconds"] == pytest.approx(sum(m["training"]["seconds"] for m in prov["members"]))
    assert len(pretrained.load_pretrained("ens")[0].members) == 2
    shipped = pretrained.load_pretrained("ens")[2]["prior_labels"]  # the prior `galmass population` re-weights
    train = ShardedDataset(tiny_dataset, "train", ("labels",), valid_only=True).read_all("labels")
    assert len(shipped) == min(len(train), 8192) and np.isin(shipped[:, 0], train[:, 0]).all()
    assert card["prior_sample"]["n_labels"] == len(shipped)


@pytest.mark.slow
def test_refuses_what_is_not_one_ensemble(two_runs, tiny_dataset, tmp_path):
    a, b = two_runs / "seed0", two_runs / "seed1"
    with pytest.raises(EnsembleError, match="at least 2 runs"):
        combine_runs([a], tmp_path / "one")
    with pytest.raises(EnsembleError, match="same weights"):
        combine_runs([a, a], tmp_path / "twice")
    other = tmp_path / "other"  # a member whose model section differs (the label jitter changes the whitening)
    shutil.copytree(b, other)
    text = (other / "config.yaml").read_text()
    assert "label_noise_dex: 0.01" in text
    (other / "config.yaml").write_text(text.replace("label_noise_dex: 0.01", "label_noise_dex: 0.02"))
    with pytest.raises(EnsembleError, match="model.label_noise_dex"):
        combine_runs([a, other], tmp_path / "mixed")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(b, unfinished)
    (unfinished / "done.json").unlink()
    with pytest.raises(EnsembleError, match="training has not finished"):
        combine_runs([a, unfinished], tmp_path / "early")
    foreign = tmp_path / "foreign"  # a member trained on another dataset
    shutil.copytree(b, foreign)
    blob = torch.load(foreign / "best.pt", weights_only=False)
    blob["data_hash"] = "0" * 16
    torch.save(blob, foreign / "best.pt")
    with pytest.raises(EnsembleError, match="members must share the dataset"):
        combine_runs([a, foreign], tmp_path / "foreign-ens")
    for name in ("one", "twice", "mixed", "early", "foreign-ens"):
        assert not (tmp_path / name / "best.pt").exists()  # nothing written on any refusal
    rc = run_cmd([sys.executable, "-m", "galmass", "ensemble", str(a), str(a), "--out", str(tmp_path / "cli")],
                 check=False)
    assert rc.returncode == 2 and "same weights" in rc.stderr and "Traceback" not in rc.stderr
