"""Where a model's offset on the independent validation set comes from: three controlled experiments.

Usage:  python benchmarks/offset_sources.py [--run RUN] [--galaxies 180] [--samples 200] [--stated]
                                            [--name offset_sources]

1. Observer fractions, in distribution: fresh galaxies of the model's own suite recipes (drawn from data seed
   12345, not the training seed), observed by the training pipeline (``observe_particles``: footprint, targeting,
   errors, clipping, recentring) at N★ = 100 and 1000 on 4 lines of sight, (a) clean: no unresolved binaries, no
   foreground stars, as the independent set; (b) the training mix of both fractions; (c) 50 % binaries, no
   foreground.
2. Velocity distributions and light profiles: the same galaxies with Baes & van Hese anisotropy and flattening
   turned off, made isotropic or Osipkov–Merritt, with the light profile's transition α = 2 (as every training
   galaxy of the shipped recipes) or 1 (as every independent galaxy: Hernquist, Dehnen), observed as the
   independent set is (clean, a fixed footprint and error; N★ = 1000), with the same stars and velocities either
   Jeans-Gaussian (as most training galaxies) or drawn from the equilibrium distribution function (as every
   independent galaxy); kept only where the DF is non-negative.
3. Binaries in the independent set: its catalogues (galpy DFs) at N★ = 100 and 1000 with unresolved binaries added
   to 0 / 25 / 50 % of the stars (``galmass.mocks.binaries``, as in training).
4. Footprint: clean isotropic galaxies of section 2 (alpha = 2, Gaussian velocities) observed by the training
   pipeline at N★ = 1000 with every star inside 4, 10, 20 or 100 R_h (training footprints: 4-10 R_h).
A model with ``model.observer_inputs`` is told the fractions with --stated (the drawn or added ones), else not.
Bias = mean of (posterior median − true log10 M) [dex] and 68 % coverage at 0.6 / 1 / 1.8 R_h, ± the standard
error of a bootstrap over galaxies (a galaxy's lines of sight are not independent). Without --run: the shipped
model. Writes benchmarks/results/<name>.md with the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402

from galmass.config import DataConfig, build_dataclass, recipe_contents  # noqa: E402
from galmass.maps import observation_to_sample  # noqa: E402
from galmass.mocks import galaxy as mock_galaxy  # noqa: E402
from galmass.mocks.binaries import binary_velocities  # noqa: E402
from galmass.mocks.generate import galaxy_seed  # noqa: E402
from galmass.mocks.observe import observe_particles  # noqa: E402
from galmass.mocks.suites import load_feedback, load_suite  # noqa: E402
from galmass.observer import with_observer  # noqa: E402
from galmass.physics.constants import RADII_FACTORS  # noqa: E402
from galmass.predict import load_model  # noqa: E402
from galmass.validate import model_samples, run_observer  # noqa: E402
from galmass.validation.generator import Catalogue, get_set  # noqa: E402

NAME, DATA_SEED, PROJECTIONS = "offset_sources", 12345, 4
COLUMNS = [int(np.argmin(np.abs(RADII_FACTORS - f))) for f in (0.6, 1.0, 1.8)]


@dataclasses.dataclass
class Scored:
    """Per-catalogue residuals (posterior median − truth) [n, 10], 68 % hits [n, 10] and galaxy ids [n]."""

    residual: np.ndarray
    hit: np.ndarray
    galaxy: np.ndarray


def score(model, inputs: dict[str, np.ndarray], truth: np.ndarray, galaxy: np.ndarray, samples: int) -> Scored:
    draws = model_samples(model, inputs, samples, 0)
    lo, med, hi = np.percentile(draws, [16, 50, 84], axis=0)
    return Scored(med - truth, (truth >= lo) & (truth <= hi), galaxy)


def cells(s: Scored, rng: np.random.Generator, n_boot: int = 300) -> str:
    """'bias ± se | coverage ± se' at 0.6 / 1 / 1.8 R_h, errors from a bootstrap over galaxies."""
    ids = np.unique(s.galaxy)
    rows = [np.flatnonzero(s.galaxy == g) for g in ids]
    boot = [np.concatenate([rows[k] for k in rng.integers(0, ids.size, ids.size)]) for _ in range(n_boot)]
    out = []
    for what in (s.residual, s.hit.astype(np.float64)):
        mean = what.mean(axis=0)
        se = np.std([what[b].mean(axis=0) for b in boot], axis=0)
        out.append(" / ".join(f"{mean[j]:+.3f} ± {se[j]:.3f}" if what is s.residual else f"{mean[j]:.2f} ± {se[j]:.2f}"
                              for j in COLUMNS))
    return " | ".join(out)


def model_inputs(model, samples: list[dict], stated: list | None) -> dict[str, np.ndarray]:
    """Stacked inputs; the observer input (models that take it) stated per catalogue or hidden (NaN)."""
    if "observer" in model.input_keys:
        samples = [with_observer([s], st if stated is not None else (None, None))[0]
                   for s, st in zip(samples, stated or [None] * len(samples))]
    return {k: np.stack([np.asarray(s[k]) for s in samples]).astype(np.float32) for k in model.input_keys}


def _galaxies(dc: DataConfig, n: int, edit: Callable | None = None):
    """(index, galaxy, rng) for n fresh galaxies cycling over the model's suites × feedbacks; ``edit`` may change a
    galaxy or return None to skip it."""
    cells_ = [(s, f) for s in dc.suites for f in dc.feedbacks]
    i = used = 0
    while used < n:
        s, f = cells_[i % len(cells_)]
        draw, observe = galaxy_seed(DATA_SEED, s, f, i).spawn(2)
        g = mock_galaxy.draw_galaxy(load_suite(s), load_feedback(f), draw)
        i += 1
        g = edit(g) if edit else g
        if g is not None:
            used += 1
            yield used, g, np.random.default_rng(observe)


def observed_scores(model, dc: DataConfig, cfg: DataConfig, args, n_galaxies: int, edit: Callable | None = None,
                    equilibrium_df: bool | None = None) -> Scored:
    """The model on ``n_galaxies`` fresh galaxies observed by the training pipeline with ``cfg``, told the drawn
    fractions with --stated. ``equilibrium_df`` (True / False) sets the velocity draw and takes the stars and the
    observing from two fixed children of the galaxy's stream, so both draws see the same stars."""
    parts, truth, gal, stated = [], [], [], []
    for k, g, rng in _galaxies(dc, n_galaxies, edit):
        star_rng = rng
        if equilibrium_df is not None:
            star_seed, observe_seed = rng.integers(0, 2**63, 2)
            g = dataclasses.replace(g, equilibrium_df=equilibrium_df)
            star_rng, rng = np.random.default_rng(star_seed), np.random.default_rng(observe_seed)
        pos, vel = mock_galaxy.sample_stars(g, cfg.star_pool, star_rng)
        out = observe_particles(pos, vel, None, g.mass, cfg, rng, field_rh_kpc=g.a)
        parts += [{key: out[key][p] for key in out} for p in range(PROJECTIONS)]
        truth.append(out["labels"])
        gal += [k] * PROJECTIONS
        stated += [tuple(float(x) for x in o) for o in out["observer"]]
    return score(model, model_inputs(model, parts, stated if args.stated else None), np.concatenate(truth),
                 np.array(gal), args.samples)


def fractions_rows(model, dc: DataConfig, args) -> list[str]:
    rows = []
    variants = {"clean (no binaries, no foreground)": dict(binary_fraction=0.0, contamination_fraction=0.0,
                                                           vary_fractions=False),
                "training mix": {},
                "50 % binaries, no foreground": dict(binary_fraction=0.5, contamination_fraction=0.0,
                                                     vary_fractions=False)}
    for n_stars in (100, 1000):
        for label, change in variants.items():
            cfg = dataclasses.replace(dc, n_stars=[n_stars, n_stars], projections=PROJECTIONS, **change)
            s = observed_scores(model, dc, cfg, args, args.galaxies)
            rows.append(f"| {n_stars} | {label} | {cells(s, np.random.default_rng(0))} |")
    return rows


def _df_ready(om: bool, light_alpha: float) -> Callable:
    def edit(g):
        g = dataclasses.replace(g, bvh=False, flattened=False, equilibrium_df=False, beta=0.0, om=om,
                                light_alpha=light_alpha)
        try:
            mock_galaxy._stellar_df(g)
        except ValueError:  # a cored light profile in a cusp: no non-negative DF
            return None
        return g
    return edit


def velocity_rows(model, dc: DataConfig, args) -> list[str]:
    """Section 2: observed as the independent set is (clean, 8 R_h footprint, 2 km/s errors); each galaxy's star
    positions, lines of sight and selected stars are the same for both velocity draws."""
    vset = get_set().spec
    cfg = dataclasses.replace(dc, n_stars=[1000, 1000], projections=PROJECTIONS, binary_fraction=0.0,
                              contamination_fraction=0.0, vary_fractions=False,
                              selection_fov_rh=[vset.footprint_rh] * 2, v_err_kms=[vset.v_err_kms] * 2,
                              v_err_scatter_dex=0.0)
    rows = []
    for om, light_alpha in ((False, 2.0), (True, 2.0), (False, 1.0), (True, 1.0)):
        kind = f"{'Osipkov–Merritt' if om else 'isotropic'}, α = {light_alpha:g}"
        scored = {}
        for df in (False, True):
            scored[df] = observed_scores(model, dc, cfg, args, args.galaxies // 2, _df_ready(om, light_alpha), df)
            rows.append(f"| {kind} | {'equilibrium DF' if df else 'Jeans-Gaussian'} | "
                        f"{cells(scored[df], np.random.default_rng(0))} |")
        diff = Scored(scored[True].residual - scored[False].residual, scored[True].hit, scored[True].galaxy)
        rows.append(f"| {kind} | DF − Gaussian, paired | "
                    f"{cells(diff, np.random.default_rng(0)).split(' | ')[0]} | |")
    return rows


def footprint_rows(model, dc: DataConfig, args) -> list[str]:
    """Section 4: clean isotropic galaxies (alpha = 2, Gaussian velocities) at N★ = 1000 with every star inside a
    fixed footprint of F R_h, F from inside the training range (4-10) to far beyond it."""
    rows = []
    for footprint in (4.0, 10.0, 20.0, 100.0):
        cfg = dataclasses.replace(dc, n_stars=[1000, 1000], projections=PROJECTIONS, binary_fraction=0.0,
                                  contamination_fraction=0.0, vary_fractions=False,
                                  selection_fov_rh=[footprint, footprint])
        s = observed_scores(model, dc, cfg, args, args.galaxies // 2, _df_ready(False, 2.0))
        rows.append(f"| {footprint:g} | {cells(s, np.random.default_rng(0))} |")
    return rows


def binary_rows(model, blob, args) -> list[str]:
    vset, rows = get_set(), []
    for n_stars in (100, 1000):
        idx = vset.indices(n_stars)
        galaxy = vset.arrays["cat_galaxy"][idx]
        for fb in (0.0, 0.25, 0.5):
            rng = np.random.default_rng(5)
            samples = []
            for c in idx:
                x, y, v, e = vset.catalogue(int(c))
                v = v.copy()
                is_binary = rng.random(v.size) < fb
                v[is_binary] += binary_velocities(int(is_binary.sum()), rng)
                samples.append(observation_to_sample(*Catalogue(x, y, v, e), **run_observer(blob)))
            rh = np.array([o["rh_kpc"] for o in samples])
            truth = vset.log_mass(galaxy, RADII_FACTORS[None, :] * rh[:, None])
            stated = [(fb, 0.0)] * len(samples)
            s = score(model, model_inputs(model, samples, stated if args.stated else None), truth, galaxy,
                      args.samples)
            rows.append(f"| {n_stars} | {fb:.0%} | {cells(s, np.random.default_rng(0))} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--galaxies", type=int, default=180)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--stated", action="store_true", help="tell an observer-input model the fractions")
    ap.add_argument("--name", default=NAME)
    a = ap.parse_args()
    model, _, blob, described = load_model(a.run, None)
    if a.stated and "observer" not in model.input_keys:
        ap.error(f"{described} has no observer input: --stated would be ignored")
    fields = {k: v for k, v in blob["data_config"].items() if k != "recipes"}
    dc = build_dataclass(DataConfig, fields, "the model's data_config")
    if json.loads(json.dumps(recipe_contents(dc.suites, dc.feedbacks))) != blob["data_config"].get("recipes", {}):
        ap.error(f"{described} was trained on suite recipes that differ from the installed ones")
    told = "stated" if a.stated else ("not stated" if "observer" in model.input_keys else "no observer input")
    head = "| bias 0.6 / 1 / 1.8 R_h [dex] | 68 % coverage 0.6 / 1 / 1.8 R_h |"
    lines = [f"# Where {described}'s offset on the independent set comes from", "", f"Machine: {machine()}", "",
             f"Observer fractions: {told}; {a.samples} posterior draws, seed 0; {a.galaxies} fresh galaxies of the "
             f"model's recipes (data seed {DATA_SEED}) × {PROJECTIONS} lines of sight. Reproduce: `python "
             f"benchmarks/offset_sources.py{' --run ' + a.run if a.run else ''} --galaxies {a.galaxies}"
             f"{' --stated' if a.stated else ''}{'' if a.name == NAME else ' --name ' + a.name}`.", "",
             "## 1. In distribution, by observer fractions", "", "| N★ | catalogues " + head, "|---|---|---|---|",
             *fractions_rows(model, dc, a), "",
             f"## 2. Jeans-Gaussian vs equilibrium-DF velocities, same galaxies and stars (N★ = 1000, "
             f"{a.galaxies // 2} galaxies, observed as the independent set)", "",
             "| anisotropy, light α | velocities " + head, "|---|---|---|---|",
             *velocity_rows(model, dc, a), "",
             f"## 3. Independent set ({get_set().name}) with unresolved binaries added", "",
             "| N★ | binaries " + head, "|---|---|---|---|", *binary_rows(model, blob, a), "",
             f"## 4. Footprint: clean isotropic galaxies at N★ = 1000, every star within F R_h (training: "
             f"{dc.selection_fov_rh[0]:g}–{dc.selection_fov_rh[1]:g})", "", "| F " + head, "|---|---|---|",
             *footprint_rows(model, dc, a)]
    write_result(a.name, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
