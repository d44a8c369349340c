"""Cross-suite transfer of a finished sweep: train cell × test cell matrices per radius, with bootstrap errors.

Usage:  python benchmarks/transfer_report.py runs/sweeps/transfer [--out benchmarks/results/transfer] [--boot 300]

For every trained cell and every dataset of the sweep (``cells/<cell>/eval-<dataset>/residuals.npz``, written by
the sweep's evaluation job) and every radius f R_h: bias (median of log10 M_pred/M_true), scatter ((p84 − p16)/2
of it) and the 68 % coverage (truth inside the posterior's 16–84 % interval), each with a bootstrap standard
error over *galaxies* (projections of one galaxy are resampled together: they are not independent). The
in-suite numbers are the diagonal (a cell on its own test split); the cross-suite gap is each off-diagonal entry
minus the diagonal entry of its test cell (the same test galaxies, a model trained elsewhere), with the
bootstrap error of the difference (paired: the same galaxy resamples for both). Writes ``transfer.md`` and one
heatmap PNG per tracer and metric at three radii into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np
from _common import load_average, machine  # noqa: E402  (puts the repository on sys.path)

from hpc.atomic import atomic_write_text  # noqa: E402

RADII_SHOWN = (0, 2, 6)
"""Indices of f = 0.6, 1.0 and 1.8 in the label grid (inner, half-light, Errani/A&E radius)."""
METRICS = ("bias", "scatter", "cov68")


def _bias_scatter_coverage(res: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """[3, K]: bias, scatter, coverage of residuals [N, K] and in-interval flags [N, K]."""
    p16, p50, p84 = np.percentile(res, [16, 50, 84], axis=0)
    return np.stack([p50, (p84 - p16) / 2, inside.mean(axis=0)])


def load_eval(path: Path) -> dict[str, np.ndarray]:
    z = np.load(path)
    inside = (z["truth"] >= z["post_p16"]) & (z["truth"] <= z["post_p84"])
    return {"res": z["cnn_residual"], "inside": inside, "galaxy": z["galaxy_id"]}


def bootstrap(evals: list[dict[str, np.ndarray]], n_boot: int, seed: int,
              stats: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Point values [E, 3, K] and bootstrap draws [B, E, 3, K] of several evaluations on THE SAME test galaxies,
    resampling galaxies jointly (paired differences then have the right errors). ``stats(res, inside)`` -> [3, K]
    (default: bias, scatter, 68 % coverage)."""
    stat = stats or _bias_scatter_coverage
    galaxies = np.unique(evals[0]["galaxy"])
    rows = [{g: np.flatnonzero(e["galaxy"] == g) for g in galaxies} for e in evals]
    point = np.stack([stat(e["res"], e["inside"]) for e in evals])
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot,) + point.shape)
    for b in range(n_boot):
        pick = rng.choice(galaxies, len(galaxies), replace=True)
        for j, e in enumerate(evals):
            idx = np.concatenate([rows[j][g] for g in pick])
            draws[b, j] = stat(e["res"][idx], e["inside"][idx])
    return point, draws


def matrices(plan: dict, root: Path, tracer: str, n_boot: int) -> dict[str, np.ndarray]:
    """For one tracer: value [T, T, 3, K] and error [T, T, 3, K] (train cell × test dataset), gap and its error."""
    cells = [c for c in plan["cells"] if c["values"]["model.tracer"] == tracer]
    datasets = [d["name"] for d in plan["datasets"]]
    by_ds = {c["dataset"]: c for c in cells}
    order = [by_ds[d] for d in datasets]
    T = len(order)
    K = 10
    val, err = np.full((T, T, 3, K), np.nan), np.full((T, T, 3, K), np.nan)
    gap, gap_err = np.full((T, T, 3, K), np.nan), np.full((T, T, 3, K), np.nan)
    for j, ds in enumerate(datasets):
        paths = [Path(c["run_dir"]) / f"eval-{ds}" / "residuals.npz" for c in order]
        if not all(p.exists() for p in paths):
            continue
        point, draws = bootstrap([load_eval(p) for p in paths], n_boot, seed=j)
        val[:, j], err[:, j] = point, draws.std(axis=0)
        gap[:, j] = point - point[j]
        gap_err[:, j] = (draws - draws[:, j:j + 1]).std(axis=0)
    return {"val": val, "err": err, "gap": gap, "gap_err": gap_err, "names": [c["values"] for c in order]}


def _label(values: dict) -> str:
    return f"{values['data.suites'][0]}/{values['data.feedbacks'][0]}"


def heatmap(m: dict, metric: int, radius: int, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    v, e = m["val"][:, :, metric, radius], m["err"][:, :, metric, radius]
    fig = Figure(figsize=(7, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = "RdBu_r" if metric == 0 else "viridis"
    lim = np.nanmax(np.abs(v)) if metric == 0 else None
    im = ax.imshow(v, cmap=cmap, vmin=-lim if lim else None, vmax=lim)
    labels = [_label(n) for n in m["names"]]
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            ax.text(j, i, f"{v[i, j]:.2f}\n±{e[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if metric != 0 and v[i, j] < np.nanmean(v) else "black")
    ax.set_xlabel("test cell (suite/feedback)")
    ax.set_ylabel("trained on")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def _gap(m: dict, q: int, k: int, mask: np.ndarray) -> tuple[float, float, float, float]:
    """Diagonal mean, masked off-diagonal mean, mean paired gap stat(cross_ij) − stat(in_jj) (stat = |·| for the
    bias) and the error of that mean (entries treated as independent, each with its paired bootstrap error)."""
    v = np.abs(m["val"][:, :, q, k]) if q == 0 else m["val"][:, :, q, k]
    diag = np.diagonal(v)
    gap = (v - diag[None, :])[mask]
    err = np.sqrt(np.nansum(m["gap_err"][:, :, q, k][mask] ** 2)) / mask.sum()
    return float(np.nanmean(diag)), float(np.nanmean(v[mask])), float(np.nanmean(gap)), float(err)


def summary_rows(m: dict, factors: list[float]) -> list[str]:
    """Per radius: in-suite (diagonal) and cross-suite (all off-diagonal) bias, scatter, coverage and their gap."""
    off = ~np.eye(m["val"].shape[0], dtype=bool)
    rows = []
    for k, f in enumerate(factors):
        cells = [_gap(m, q, k, off) for q in range(3)]
        rows.append(f"| {f:.1f} | " + " | ".join(f"{d:.3f} | {c:.3f} | {g:+.3f} ± {e:.3f}" for d, c, g, e in cells)
                    + " |")
    return rows


def breakdown_rows(m: dict, factors: list[float]) -> list[str]:
    """Per radius: the gaps of the off-diagonal entries split by what differs between train and test cell — the
    suite only (same feedback model), the feedback model only (same suite), or both."""
    suite = np.array([n["data.suites"][0] for n in m["names"]])
    fb = np.array([n["data.feedbacks"][0] for n in m["names"]])
    same_s, same_f = suite[:, None] == suite[None, :], fb[:, None] == fb[None, :]
    masks = (~same_s & same_f, same_s & ~same_f, ~same_s & ~same_f)
    rows = []
    for k, f in enumerate(factors):
        cells = [_gap(m, q, k, mask)[2:] for q in range(3) for mask in masks]
        rows.append(f"| {f:.1f} | " + " | ".join(f"{g:+.3f} ± {e:.3f}" for g, e in cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="sweep output directory (holds sweep.json)")
    parser.add_argument("--out", default="benchmarks/results/transfer")
    parser.add_argument("--boot", type=int, default=300)
    args = parser.parse_args()
    root, out = Path(args.sweep), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = json.loads((root / "sweep.json").read_text())
    missing = [f"{c['run_dir']}/eval-{d['name']}" for c in plan["cells"] for d in plan["datasets"]
               if not (Path(c["run_dir"]) / f"eval-{d['name']}" / "residuals.npz").exists()]
    if missing:  # a matrix with holes would print NaN gaps as if measured
        raise SystemExit(f"transfer_report: {len(missing)} evaluation(s) missing, e.g. {missing[0]}/residuals.npz "
                         f"(cells that failed to train have no done.json). HINT: rerun `galmass sweep "
                         f"<sweep.yaml> --wait` (it resumes the missing cells), then this report")
    factors = [0.6 + 0.2 * i for i in range(10)]
    lines = ["# Cross-suite transfer: train cell × test cell", "", f"Machine: {machine()}; load {load_average()}", "",
             f"Sweep `{root}` ({len(plan['cells'])} cells, {len(plan['datasets'])} test sets). Errors: bootstrap "
             f"over test galaxies ({args.boot} resamples). Reproduce: `galmass sweep slurm/sweep_transfer.yaml "
             f"--wait` then `python benchmarks/transfer_report.py {root}`.", ""]
    for tracer in plan["axes"]["model.tracer"]:
        m = matrices(plan, root, tracer, args.boot)
        lines += [f"## {tracer}", "", "In-suite = diagonal (a cell's model on its own test galaxies); cross = "
                  "off-diagonal mean; gap = cross − in-suite on the same test galaxies (paired bootstrap error of "
                  "the mean). |bias| for bias.", "",
                  "| r/R_h | |bias| in | |bias| cross | gap | scatter in | scatter cross | gap | 68 % cov in | "
                  "68 % cov cross | gap |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += summary_rows(m, factors)
        lines += ["", "Gap by what differs between the training and the test cell (same columns, gap only): the "
                  "suite only (same feedback model), the feedback model only (same suite), or both.", "",
                  "| r/R_h | |bias| gap: suite | feedback | both | scatter gap: suite | feedback | both | "
                  "68 % cov gap: suite | feedback | both |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += breakdown_rows(m, factors)
        lines.append("")
        for q, metric in enumerate(METRICS):
            for k in RADII_SHOWN:
                name = f"{tracer.replace('+', '_')}_{metric}_r{factors[k]:.1f}.png"
                heatmap(m, q, k, f"{tracer}: {metric} at {factors[k]:.1f} R_h", out / name)
                lines.append(f"![{tracer} {metric} {factors[k]:.1f} R_h]({name})")
        lines.append("")
    atomic_write_text(out / "transfer.md", "\n".join(lines) + "\n")
    print(f"wrote {out / 'transfer.md'}")


if __name__ == "__main__":
    main()
