"""Domain adaptation: the MMD two-sample distance and training with an unlabelled target domain."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import TINY_DATA, TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
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
