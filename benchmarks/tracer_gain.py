"""Does gas help? Scatter of gas+stars ÷ scatter of each single tracer, per radius, with bootstrap errors.

Usage:  python benchmarks/tracer_gain.py runs/quickstart [--boot 500] [--name tracer_gain]

Reads ``<root>/{stars,gas,gas_stars}/eval-test/residuals.npz`` (the demo's three runs, evaluated on the same
held-out galaxies of one dataset) and reports, per radius f R_h, the scatter ((p84 − p16)/2 of log10 M_pred/M_true)
of each tracer mode and the ratios gas+stars ÷ stars and gas+stars ÷ gas, with standard errors from a bootstrap
over test galaxies (projections of one galaxy resampled together, the same resample for all three models).
Paper B (Expósito-Márquez et al. 2026) found combining tracers cut the scatter by up to ~1.5×.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import load_average, machine, write_result  # noqa: E402  (puts the repository on sys.path)
from transfer_report import bootstrap, load_eval  # noqa: E402

MODES = ("stars", "gas", "gas_stars")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--boot", type=int, default=500)
    ap.add_argument("--name", default="tracer_gain")
    a = ap.parse_args()
    root = Path(a.root)
    paths = [root / m / "eval-test" / "residuals.npz" for m in MODES]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        ap.error(f"missing evaluations {missing}. HINT: run `galmass evaluate --run RUN` for each tracer mode")
    hashes = {json.loads((p.parent / "metrics.json").read_text()).get("data_hash") for p in paths}
    if len(hashes) != 1:
        ap.error(f"the three runs were evaluated on different datasets ({hashes}): ratios would mean nothing")
    point, draws = bootstrap([load_eval(p) for p in paths], a.boot, seed=0)  # [3 modes, 3 stats, K]
    s, bs = point[:, 1], draws[:, :, 1]  # scatter [3, K], [B, 3, K]
    r_s, r_g = s[2] / s[0], s[2] / s[1]
    e_s, e_g = (bs[:, 2] / bs[:, 0]).std(0), (bs[:, 2] / bs[:, 1]).std(0)
    factors = [0.6 + 0.2 * k for k in range(s.shape[1])]
    n_gal = len(np.unique(np.load(paths[0])["galaxy_id"]))
    lines = ["# Gas + stars vs single tracers (scatter ratio)", "", f"Machine: {machine()}; load {load_average()}", "",
             f"Runs `{root}/{{stars,gas,gas_stars}}`, test split of one dataset ({n_gal} galaxies); bootstrap over "
             f"galaxies ({a.boot} resamples). Reproduce: `python benchmarks/tracer_gain.py {root}`.", "",
             "| r / R_h | scatter stars | scatter gas | scatter gas+stars | gas+stars ÷ stars | gas+stars ÷ gas |",
             "|---|---|---|---|---|---|"]
    for k, f in enumerate(factors):
        lines.append(f"| {f:.1f} | {s[0, k]:.3f} | {s[1, k]:.3f} | {s[2, k]:.3f} | {r_s[k]:.2f} ± {e_s[k]:.2f} | "
                     f"{r_g[k]:.2f} ± {e_g[k]:.2f} |")
    write_result(a.name, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
