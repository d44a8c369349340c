"""Which observed dwarfs a model accepts: predict's checks over a grid of N★, σ★ and R_h, and posterior widths.

Usage:  python benchmarks/acceptance.py [--run RUN] [--name acceptance]

For every (N★, σ★, R_h) on a grid spanning what spectroscopic surveys of Local Group dwarfs give (N★ 20–3000,
σ★ 3–40 km/s, R_h 0.03–2 kpc) it makes a catalogue (Plummer positions, Gaussian velocities with 2 km/s errors,
centred) and runs `galmass predict`'s own checks (galmass.predict.assess): accepted, accepted with warnings, or
refused (and why). Combinations far off the σ★–R_h relation of real dwarfs (e.g. R_h = 2 kpc at σ★ = 3 km/s) are
listed but flagged as implausible: the joint check is meant to refuse those. Then, on the plausible ones, the
posterior 16–84 % width of log10 M(<R_h) at N★ ≈ 1000 ÷ that at N★ ≈ 100 (same galaxy scale). Writes
benchmarks/results/<name>.md with the machine.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
from _common import load_average, machine, write_result  # noqa: E402  (puts the repository on sys.path)

from galmass.catalogue import Catalogue  # noqa: E402
from galmass.observer import with_observer  # noqa: E402
from galmass.predict import _posteriors, assess, load_model  # noqa: E402

N_STARS = (20, 100, 1000, 3000)
SIGMAS = (3.0, 10.0, 40.0)
RH = (0.03, 0.3, 2.0)


def plausible(sigma: float, rh: float) -> bool:
    """Within ~1 dex of the dwarfs' σ★–R_h relation (Wolf mass-to-light ratios 1–10^4 for M★ 10^2–10^8)."""
    # M(<R_h) ~ 930 σ² R_h /G-ish; real dwarfs follow log σ ≈ 1.0 + 0.35 log(R_h / 0.3 kpc) with ~0.3 dex spread.
    return abs(np.log10(sigma) - (1.0 + 0.35 * np.log10(rh / 0.3))) < 0.7


def catalogue(n: int, sigma: float, rh: float, seed: int) -> Catalogue:
    """Plummer sky positions with projected half-number radius rh [kpc]; Gaussian v_los [km/s], 2 km/s errors."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0, 1, n)
    R = rh * np.sqrt(u / (1 - u))
    phi = rng.uniform(0, 2 * np.pi, n)
    v = rng.normal(0, sigma, n) + rng.normal(0, 2.0, n)
    return Catalogue(f"n{n}-s{sigma:g}-r{rh:g}", R * np.cos(phi), R * np.sin(phi), v, np.full(n, 2.0), np.ones(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--name", default="acceptance")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model, cfg, blob, described = load_model(a.run, None)
    rows, widths = [], {}
    for (n, sigma, rh), seed in zip(itertools.product(N_STARS, SIGMAS, RH), itertools.count()):
        t = assess(catalogue(n, sigma, rh, seed), None, blob, need_gas=False)
        verdict = "refused" if t.errors else ("warned" if t.warnings else "accepted")
        rows.append((n, sigma, rh, plausible(sigma, rh), verdict, "; ".join(t.errors or t.warnings)))
        if not t.errors and plausible(sigma, rh) and n in (100, 1000):
            widths[(n, sigma, rh)] = t
    ratios = []
    torch.manual_seed(a.seed)  # the widths are Monte Carlo estimates: seeded, so the table reproduces
    for (n, sigma, rh), t in widths.items():
        if n == 100 and (1000, sigma, rh) in widths:
            # The synthetic catalogues have no binaries and no foreground: a model with observer inputs is told so.
            pair = [with_observer([x.nominal], (0.0, 0.0)) if "observer" in model.input_keys else [x.nominal]
                    for x in (t, widths[(1000, sigma, rh)])]
            w = [np.subtract(*np.percentile(s[:, 2], [84, 16])) for s in _posteriors(model, pair, a.samples)]
            ratios.append((sigma, rh, w[0], w[1], w[1] / w[0]))
    plaus = [r for r in rows if r[3]]
    n_ok = sum(r[4] != "refused" for r in plaus)
    lines = ["# Which dwarfs a model accepts (`galmass predict`'s checks)", "",
             f"Machine: {machine()}; load {load_average()}", "",
             f"Model: {described}; trained on N★ {blob['data_config'].get('n_stars')}, suites "
             f"{cfg.data.suites}, feedbacks {cfg.data.feedbacks}.", "",
             f"Plausible combinations accepted (with or without warnings): **{n_ok} / {len(plaus)}**.", "",
             "| N★ | σ★ [km/s] | R_h [kpc] | plausible dwarf | verdict | reason |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {s:g} | {r:g} | {'yes' if p else 'no'} | {v} | {why} |" for n, s, r, p, v, why in rows]
    lines += ["", "Posterior 16–84 % width of log10 M(<R_h) [dex] (the same galaxy scale at N★ 100 and 1000):", "",
              "| σ★ | R_h | width N★=100 | width N★=1000 | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {s:g} | {r:g} | {w1:.3f} | {w2:.3f} | {q:.2f} |" for s, r, w1, w2, q in ratios]
    if ratios:
        lines += ["", f"Median ratio: **{np.median([q[-1] for q in ratios]):.2f}**."]
    lines += ["", f"Reproduce: `python benchmarks/acceptance.py" + (f" --run {a.run}" if a.run else "") + f" --seed {a.seed}`."]
    write_result(a.name, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
