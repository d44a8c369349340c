"""The in-project peer: sbi's NPE (MAF) on hand-made summary statistics, against a trained galmass run.

Usage:  python benchmarks/npe_peer.py --run RUN [--samples 400] [--seed 0] [--epochs-max 300] [--n-stars lo,hi]
        [--validation]

What a user would pick instead of galmass: a plain neural posterior estimator (sbi, Papamakarios & Murray 2016;
MAF density estimator) on 13 summaries of the same catalogues — log10 R_h, log10 σ★, log10 N★ and the members'
summary statistics stored in every shard (σ in the four radius quartiles ÷ σ★, radii enclosing 25/75/90 % ÷ R_h,
kurtosis, mean error ÷ σ★, ellipticity). Its target is the same scale-free label as galmass's,
log10 M(<f R_h) − log10(σ★² R_h / G), so both learn the same thing from the same training catalogues (the run's
own dataset, train split). Both are scored on the run's held-out test split, per radius: RMS, bias, scatter
((p84 − p16)/2) and 68 % coverage of log10 M, and TARP max |ECP − α| (joint); with ``--n-stars`` only test
catalogues with N★ in that range are scored (e.g. 50,200 and 500,3000). Written to
benchmarks/results/npe_peer.md (or ``--name``) with the machine. With ``--validation`` both are also graded on the
independent validation sets (``galmass.validation``: galpy DF galaxies outside the training recipes; the
default and the sealed set).

The NPE is trained with sbi's defaults (batch 200, lr 5e-4, early stopping after 20 epochs without improvement
on a 10 % validation split).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import load_average, machine, write_result  # noqa: E402  (puts the repository on sys.path)

from galmass.datasets import ShardedDataset, scalar_index  # noqa: E402
from galmass.metrics.calibration import coverage, tarp_ecp, tarp_fractions  # noqa: E402
from galmass.models.io import load_trained, to_torch  # noqa: E402
from galmass.models.network import LOG10_G  # noqa: E402
from galmass.validation.generator import NAMED_SETS  # noqa: E402

SCALARS = ("log10_rh_kpc", "log10_sigma_stars_kms", "log10_n_stars")


def features(data: ShardedDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x [N, 13], scale-free labels [N, 10], mass offset log10(σ² R_h / G) [N]) of a split."""
    s = data.read_all("scalars").astype(np.float64)
    u = data.read_all("summary_stars").astype(np.float64)
    offset = 2 * s[:, scalar_index("log10_sigma_stars_kms")] + s[:, scalar_index("log10_rh_kpc")] - LOG10_G
    x = np.column_stack([s[:, [scalar_index(n) for n in SCALARS]], u])
    return x, data.read_all("labels").astype(np.float64) - offset[:, None], offset


def train_npe(x: np.ndarray, y: np.ndarray, seed: int, max_epochs: int):
    import tempfile

    from sbi.inference import NPE
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(seed)
    # sbi would otherwise write TensorBoard logs to ./sbi-logs
    writer = SummaryWriter(tempfile.mkdtemp(prefix="npe-peer-"))
    inference = NPE(density_estimator="maf", show_progress_bars=False, summary_writer=writer)
    inference.append_simulations(torch.as_tensor(y, dtype=torch.float32), torch.as_tensor(x, dtype=torch.float32))
    inference.train(max_num_epochs=max_epochs)
    return inference.build_posterior()


def npe_samples(posterior, x: np.ndarray, n: int, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    out = posterior.sample_batched((n,), torch.as_tensor(x, dtype=torch.float32), show_progress_bars=False)
    return out.numpy().astype(np.float64)  # [n, N, 10]


def cnn_samples(model, data: ShardedDataset, n: int, seed: int, batch: int = 256) -> np.ndarray:
    keys = model.input_keys
    parts = []
    torch.manual_seed(seed)
    for start in range(0, len(data), batch):
        b = to_torch(data.get_batch(np.arange(start, min(len(data), start + batch))), torch.device("cpu"))
        with torch.inference_mode():
            parts.append(model.sample({k: b[k] for k in keys}, n).numpy())
    return np.concatenate(parts, axis=1).astype(np.float64)


TARP_BOOT = 200
"""Bootstrap resamples of the test galaxies for TARP's sampling spread."""


def _tarp_max(f: np.ndarray) -> float:
    alpha, ecp = tarp_ecp(f)
    return float(np.max(np.abs(ecp - alpha)))


def scores(samples: np.ndarray, truth: np.ndarray, galaxy: np.ndarray, rng: np.random.Generator
           ) -> dict[str, np.ndarray | float]:
    """Per-radius RMS, bias, scatter, 68 % coverage of the posterior median; TARP max |ECP − α| with its 16-84 %
    range over a bootstrap of the test galaxies (each galaxy's lines of sight share its truth, so the catalogues
    are not independent; the references stay fixed) and its value for a perfectly calibrated posterior of the
    same size: the truth replaced by one held-back draw per catalogue (a floor set by the test set's size alone,
    from independent catalogues, hence optimistic)."""
    r = np.median(samples, axis=0) - truth
    p16, p84 = np.percentile(r, [16, 84], axis=0)
    f = tarp_fractions(samples, truth, rng)
    ids, inverse = np.unique(galaxy, return_inverse=True)
    rows = [np.flatnonzero(inverse == g) for g in range(len(ids))]
    boot = [_tarp_max(f[np.concatenate([rows[g] for g in rng.integers(0, len(ids), len(ids))])])
            for _ in range(TARP_BOOT)]
    null = _tarp_max(tarp_fractions(samples[1:], samples[0], rng))
    return {"rms": np.sqrt(np.mean(r**2, axis=0)), "bias": np.median(r, axis=0), "scatter": (p84 - p16) / 2,
            "cov68": coverage(samples, truth, np.array([0.68]))[0], "tarp": _tarp_max(f),
            "tarp_range": tuple(np.percentile(boot, [16, 84])), "tarp_null": null}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs-max", type=int, default=300)
    parser.add_argument("--n-stars", action="append", default=None, help="lo,hi N★ ranges to score separately")
    parser.add_argument("--name", default="npe_peer")
    parser.add_argument("--validation", action="store_true",
                        help="also grade both on the independent validation sets (default and sealed)")
    args = parser.parse_args()
    model, cfg, blob = load_trained(args.run)
    path = blob.get("data_path") or cfg.data.path
    keys = model.input_keys + ("labels",)
    train_set = ShardedDataset(path, "train", ("scalars", "summary_stars", "labels"), valid_only=True)
    test_set = ShardedDataset(path, "test", tuple(dict.fromkeys(keys + ("summary_stars",))), valid_only=True)
    t0 = time.perf_counter()
    x_tr, y_tr, _ = features(train_set)
    posterior = train_npe(x_tr, y_tr, args.seed, args.epochs_max)
    t_train = time.perf_counter() - t0
    x_te, _, off = features(test_set)
    truth = test_set.read_all("labels").astype(np.float64)
    galaxy = test_set.read_all("meta/galaxy_id")
    npe = npe_samples(posterior, x_te, args.samples, args.seed) + off[None, :, None]
    cnn = cnn_samples(model, test_set, args.samples, args.seed)
    n_stars = np.round(10 ** x_te[:, 2]).astype(int)
    ranges = [tuple(int(v) for v in r.split(",")) for r in (args.n_stars or [])] or [(0, 10**9)]
    lines = _header(args, cfg, path, len(x_tr), len(x_te), t_train)
    for lo, hi in ranges:
        sel = (n_stars >= lo) & (n_stars <= hi)
        # The same reference points, bootstrap resamples and held-back draw for both (one seed each)
        lines += _table(f"N★ {lo}–{hi}" if hi < 10**9 else "all test catalogues", int(sel.sum()),
                        scores(cnn[:, sel], truth[sel], galaxy[sel], np.random.default_rng(args.seed)),
                        scores(npe[:, sel], truth[sel], galaxy[sel], np.random.default_rng(args.seed)),
                        blob["radii_factors"])
    if args.validation:
        for set_name in NAMED_SETS:
            lines += _validation_lines(posterior, model, cfg, args, set_name)
    write_result(args.name, "\n".join(lines) + "\n")


def _validation_lines(posterior, model, cfg, args, set_name: str) -> list[str]:
    """Both samplers on one independent validation set (galpy DFs), through galmass.validation."""
    from galmass.maps import observation_to_sample
    from galmass.observer import with_observer
    from galmass.validation import evaluate_sampler, get_set

    d = cfg.data
    geometry = dict(npix=d.npix, extent_rh=d.extent_rh, vmax_sigma=d.vmax_sigma)
    vset = get_set(spec=NAMED_SETS[set_name])

    def npe_sampler(cats):
        # The catalogues are already the members about their centre: no second clipping or recentring.
        obs = [observation_to_sample(c.x_kpc, c.y_kpc, c.v_kms, c.v_err_kms, **geometry) for c in cats]
        s = np.stack([o["scalars"] for o in obs]).astype(np.float64)
        u = np.stack([o["summary_stars"] for o in obs]).astype(np.float64)
        x = np.column_stack([s[:, [scalar_index(n) for n in SCALARS]], u])
        off = 2 * s[:, scalar_index("log10_sigma_stars_kms")] + s[:, scalar_index("log10_rh_kpc")] - LOG10_G
        return npe_samples(posterior, x, args.samples, args.seed) + off[None, :, None]

    def cnn_sampler(cats):
        # The generator makes no binaries and no foreground (as galmass validate states).
        obs = with_observer([observation_to_sample(c.x_kpc, c.y_kpc, c.v_kms, c.v_err_kms, **geometry) for c in cats],
                            (0.0, 0.0))
        batch = {k: torch.as_tensor(np.stack([np.asarray(o[k]) for o in obs])) for k in model.input_keys}
        torch.manual_seed(args.seed)
        with torch.inference_mode():
            return np.concatenate([model.sample({k: v[i:i + 256] for k, v in batch.items()}, args.samples).numpy()
                                   for i in range(0, len(obs), 256)], axis=1).astype(np.float64)

    observer = {"membership_clip": d.membership_clip, "recentre": d.recentre}
    res = {name: evaluate_sampler(f, vset, seed=args.seed, observer=observer)
           for name, f in (("CNN", cnn_sampler), ("NPE", npe_sampler))}
    lines = [f"## Independent validation set '{set_name}' `{vset.name}` (galpy DFs; haloes and tracers outside the "
             "training recipes)", ""]
    for n in res["CNN"]["variants"]:
        c, p = res["CNN"]["variants"][n], res["NPE"]["variants"][n]
        lines += [f"### N★ = {n} ({c['n_catalogues']} catalogues)", "",
                  "| r / R_h | CNN RMS | NPE RMS | CNN bias | NPE bias | CNN 68 % cov | NPE 68 % cov |",
                  "|---|---|---|---|---|---|---|"]
        for i, f in enumerate(c["radii_factors"]):
            lines.append(f"| {f:.1f} | {c['cnn']['rms'][i]:.3f} | {p['cnn']['rms'][i]:.3f} | "
                         f"{c['cnn']['bias'][i]:+.3f} | {p['cnn']['bias'][i]:+.3f} | "
                         f"{c['cnn']['coverage68'][i]:.2f} | {p['cnn']['coverage68'][i]:.2f} |")
        best = c["best_estimator"]
        lines += ["", f"RMS ÷ best estimator ({best}, at its radius): CNN **{c['rms_ratio_vs_best_estimator']:.2f}**,"
                  f" NPE **{p['rms_ratio_vs_best_estimator']:.2f}**; TARP max |ECP − α|: CNN "
                  f"{c['tarp']['max_abs_error']:.3f}, NPE {p['tarp']['max_abs_error']:.3f}.", ""]
    return lines


def _header(args, cfg, path, n_train: int, n_test: int, t_train: float) -> list[str]:
    return ["# In-project peer: sbi NPE on summary statistics vs the galmass CNN", "",
            f"Machine: {machine()}; load {load_average()}", "",
            f"Run `{args.run}` (tracer {cfg.model.tracer}); dataset `{path}` (suites {cfg.data.suites}, feedback "
            f"{cfg.data.feedbacks}, N★ {cfg.data.n_stars}, data seed {cfg.data.seed}). NPE (sbi MAF, 13 summaries) "
            f"trained on the same {n_train} training catalogues in {t_train:.0f} s; both scored on {n_test} held-out "
            f"test catalogues with {args.samples} posterior samples, seed {args.seed}.", "",
            f"Reproduce: `python benchmarks/npe_peer.py --run {args.run} --samples {args.samples}"
            + "".join(f" --n-stars {r}" for r in (args.n_stars or [])) + (" --validation" if args.validation else "")
            + f" --name {args.name}`.", ""]


def _table(title: str, n: int, cnn: dict, npe: dict, factors: list[float]) -> list[str]:
    rows = [f"## {title} ({n} catalogues)", "",
            "| r / R_h | CNN RMS | NPE RMS | CNN bias | NPE bias | CNN scatter | NPE scatter | CNN 68 % cov | NPE 68 % cov |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, f in enumerate(factors):
        rows.append(f"| {f:.1f} | {cnn['rms'][i]:.3f} | {npe['rms'][i]:.3f} | {cnn['bias'][i]:+.3f} | "
                    f"{npe['bias'][i]:+.3f} | {cnn['scatter'][i]:.3f} | {npe['scatter'][i]:.3f} | "
                    f"{cnn['cov68'][i]:.2f} | {npe['cov68'][i]:.2f} |")
    rows += ["", f"TARP max |ECP − α|: CNN {cnn['tarp']:.3f} ({_range(cnn)}), NPE {npe['tarp']:.3f} "
             f"({_range(npe)}); a perfectly calibrated posterior of this size: {cnn['tarp_null']:.3f} (CNN draws), "
             f"{npe['tarp_null']:.3f} (NPE draws).", ""]
    return rows


def _range(s: dict) -> str:
    lo, hi = s["tarp_range"]
    return f"{lo:.3f}–{hi:.3f} over a bootstrap of the test galaxies"


if __name__ == "__main__":
    main()
