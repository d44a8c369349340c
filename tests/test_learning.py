"""The model learns: a short training beats the prior-only baseline on held-out galaxies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL

pytestmark = pytest.mark.slow

DATA = ["--data.galaxies_per_cell=12", "--data.projections=16", "--data.npix=16", "--data.star_pool=3000",
        "--data.gas_cells=300", "--data.shard_size=64", "--data.seed=5", "--data.val_fraction=0.17",
        "--data.test_fraction=0.25"]


def test_short_training_beats_the_prior_on_held_out_galaxies(tmp_path):
    from galmass.config import load_config
    from galmass.datasets import ShardedDataset
    from galmass.mocks.generate import generate_dataset
    from galmass.models.io import load_trained, to_torch
    from galmass.train import train

    cfg = load_config(None, DATA + [f"--data.path={tmp_path / 'data'}", f"--train.run_dir={tmp_path / 'run'}",
                                    "--train.epochs=15", "--train.batch_size=32", "--train.lr=2e-3",
                                    "--train.progress=false", "--train.patience=0", "--train.threads=2",
                                    *TINY_MODEL])
    generate_dataset(cfg.data, workers=1, progress=False)
    train(cfg)
    model, _, _ = load_trained(tmp_path / "run")
    keys = model.input_keys + ("labels",)
    train_set, test_set = (ShardedDataset(cfg.data.path, s, keys) for s in ("train", "test"))
    test = to_torch(test_set.get_batch(np.arange(len(test_set))), torch.device("cpu"))
    train_labels = train_set.read_all("labels").astype(np.float64)
    torch.manual_seed(0)
    median = np.median(model.sample(test, 200).numpy(), axis=0)
    truth = test["labels"].numpy().astype(np.float64)

    def rms(pred: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean((pred - truth) ** 2, axis=0))

    # Prior-only: the training galaxies' mean log-mass profile, whatever the observation.
    prior = rms(np.broadcast_to(train_labels.mean(0), truth.shape))
    # Scale-only: the virial scale log10(σ² R_h / G) plus the mean scale-free label (no map information).
    y_train = model.to_y(torch.as_tensor(train_labels, dtype=torch.float32),
                         torch.as_tensor(train_set.read_all("scalars"))).numpy()
    scale_only = model.from_y(torch.as_tensor(y_train.mean(0)), test["scalars"]).numpy()
    model_rms, scale_rms = rms(median), rms(scale_only)
    assert np.all(model_rms < 0.5 * prior), (model_rms, prior)
    assert model_rms[:3].mean() <= 1.02 * scale_rms[:3].mean(), (model_rms, scale_rms)  # not worse than σ, R_h alone
