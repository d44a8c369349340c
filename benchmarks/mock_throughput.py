"""Mock generation throughput of `galmass mock`: maps (projections) per second per core.

Usage:  python benchmarks/mock_throughput.py [--galaxies-per-cell 2] [--workers 1,2]

Generates the default map format (64x64, 64 projections, star pool 20000, 2000 gas cells) for 3 suites x 5
feedback models under benchmarks/_work/mock_throughput/ with each worker count (N★ log-uniform in the default
data.n_stars range, binaries and contamination as in configs/production.yaml), plus one-worker runs at fixed
N★ = 100, 1000 and 3000, timing the whole `generate_dataset` call (drawing, Jeans solve, sampling, projections,
maps, HDF5 writing, checksums, manifest). Then, in the same run, the cost of the per-galaxy options:
`observe_galaxy` (sampling, axisymmetric or spherical Jeans solve, all projections and maps) on the same drawn
galaxies, spherical vs flattened (q = 0.7, beta_z = 0.15) vs tidally truncated (r_t = 10 R_h). Writes
benchmarks/results/mock_throughput.md with the machine named.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time

import numpy as np

from _common import ROOT, load_average, machine  # noqa: E402  (puts the repository on sys.path)

from galmass.config import DataConfig  # noqa: E402
from galmass.mocks import galaxy as galaxy_module  # noqa: E402
from galmass.mocks.generate import generate_dataset  # noqa: E402
from galmass.mocks.observe import observe_galaxy  # noqa: E402
from galmass.mocks.suites import load_feedback, load_suite  # noqa: E402

SUITES = ["compact", "median", "extended"]
FEEDBACKS = ["cusp", "mild_core", "core", "dc14", "zhao"]


VARIANTS = {
    "spherical (Jeans-Gaussian)": lambda g: g,
    "flattened (q = 0.7, beta_z = 0.15)":
        lambda g: dataclasses.replace(g, flattened=True, flat_q=0.7, flat_beta_z=0.15),
    "tidally truncated (r_t = 10 R_h)": lambda g: dataclasses.replace(g, tidal=True, tidal_rt=10.0 * g.a),
}
"""The per-galaxy options timed against the same spherical, isolated galaxies."""


def option_cost(n_galaxies: int = 12) -> dict[str, float]:
    """Seconds per galaxy of observe_galaxy (default map format) for each of ``VARIANTS`` of the same galaxies."""
    cfg = DataConfig(binary_fraction=0.3, contamination_fraction=0.05)
    drawn = [galaxy_module.draw_galaxy(load_suite(SUITES[i % 3]), load_feedback(FEEDBACKS[i % 5]), 500 + i)
             for i in range(n_galaxies)]
    base = [dataclasses.replace(g, flattened=False, bvh=False, equilibrium_df=False, tidal=False, tidal_rt=0.0)
            for g in drawn]
    out = {}
    for name, make in VARIANTS.items():
        galaxies = [make(g) for g in base]
        for cached in (galaxy_module.jeans_solution, galaxy_module.axisymmetric_solution, galaxy_module._taper_table):
            cached.cache_clear()
        t0 = time.perf_counter()
        for i, g in enumerate(galaxies):
            observe_galaxy(g, cfg, np.random.default_rng(i))
        out[name] = (time.perf_counter() - t0) / n_galaxies
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies-per-cell", type=int, default=2)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    work = ROOT / "benchmarks" / "_work" / "mock_throughput"
    rows = []
    default = tuple(DataConfig().n_stars)
    runs = [(int(w), default) for w in args.workers.split(",")] + [(1, (n, n)) for n in (100, 1000, 3000)]
    for workers, n_stars in runs:
        path = work / f"w{workers}-n{n_stars[0]}-{n_stars[1]}"
        shutil.rmtree(path, ignore_errors=True)
        # val/test fractions 0 keep every galaxy (a benchmark needs no split).
        cfg = DataConfig(path=str(path), suites=SUITES, feedbacks=FEEDBACKS,
                         galaxies_per_cell=args.galaxies_per_cell, val_fraction=0.0, test_fraction=0.0,
                         n_stars=list(n_stars), binary_fraction=0.3, contamination_fraction=0.05,
                         shard_size=64)
        t0 = time.perf_counter()
        generate_dataset(cfg, workers=workers, progress=False)
        dt = time.perf_counter() - t0
        n_maps = len(SUITES) * len(FEEDBACKS) * args.galaxies_per_cell * cfg.projections
        rows.append((workers, f"{n_stars[0]}–{n_stars[1]}", n_maps, dt, n_maps / dt, n_maps / dt / workers))
        shutil.rmtree(path, ignore_errors=True)
    lines = [
        "# Mock generation throughput (`galmass mock`)",
        "",
        f"Machine: {machine()}; load {load_average()}",
        "",
        f"Default map format: {DataConfig.npix}x{DataConfig.npix} maps, {DataConfig.projections} projections per "
        f"galaxy, star pool {DataConfig.star_pool}, {DataConfig.gas_cells} gas cells; {len(SUITES)} suites x "
        f"{len(FEEDBACKS)} feedback models x {args.galaxies_per_cell} galaxies. Wall time of the whole "
        "`generate_dataset` call (drawing, Jeans solve, sampling, projections, maps, HDF5, checksums, manifest).",
        "",
        "| worker processes | N★ per projection | samples (maps) | wall s | samples/s | samples/s per core |",
        "|---|---|---|---|---|---|",
    ]
    for w, s, n, dt, rate, per in rows:
        lines.append(f"| {w} | {s} | {n} | {dt:.1f} | {rate:.1f} | {per:.1f} |")
    cost = option_cost()
    t_sph = cost[next(iter(VARIANTS))]
    lines += ["", "Per-galaxy options (flattened: axisymmetric Jeans on a 370² grid; tidal: the exp(-r/r_t) halo "
              "taper), one core, the same 12 drawn galaxies, `observe_galaxy` with the default map format:", "",
              "| galaxies | s per galaxy | maps/s | ÷ spherical |", "|---|---|---|---|"]
    lines += [f"| {name} | {t:.3f} | {DataConfig.projections / t:.0f} | {t / t_sph:.2f} |" for name, t in cost.items()]
    lines += ["",
              "Before the issue-9 mocks (commit 3b7c4df: 3 suites x 4 Jeans-Gaussian feedback models, no observer "
              "steps, same map format; Intel Xeon 2-core VM, load ~3): 308 samples/s per core at N★ = 100, 217 at "
              "N★ = 1000 — compare the fixed-N★ rows above."]
    lines += ["", "One sample = one projection: stars and gas sky maps (4 channels each) and phase-space maps.",
              "Reproduce: `python benchmarks/mock_throughput.py`."]
    text = "\n".join(lines) + "\n"
    out = ROOT / "benchmarks" / "results" / "mock_throughput.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
