"""Markdown + PNG report of one or more evaluated runs (``galmass report``).

Each evaluation directory holds

- ``metrics.json``: the schema of :func:`galmass.metrics.compute_metrics` plus the top-level keys ``run``,
  ``tracer``, ``dataset``, ``split``, ``n_galaxies``, ``seed`` and optionally ``model_nll``;
- ``residuals.npz``: the ``arrays`` of :func:`galmass.metrics.compute_metrics`.

The report (``report.md``) states each run's dataset and seed and shows, per run, a table of bias / scatter /
fraction within 0.1 dex at every radius, a table of the CNN against each literature estimator at the estimator's
radius, and the calibration numbers; figures are the papers' mass-ratio figure (M_pred/M_true vs r/R_h), the
coverage and TARP curves (with rank histograms), and — when runs with different tracers are given — the scatter
per tracer and the ratio scatter(single tracer) / scatter(gas+stars) (paper B).

Every number is read from the files, never typed. Number formats: bias ``+0.000`` (signed, 3 decimals, dex),
scatter ``0.000`` (dex), fractions ``0.000``, r/R_h ``0.00``, scatter ratios ``0.00``. All files are written
atomically (a temporary file in the same directory, then ``os.replace``), so a crash never leaves half a report.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import galmass

__all__ = ["RunResult", "load_run", "write_report"]

_REQUIRED_METRICS = ("n_projections", "radii_factors", "cnn", "estimators", "coverage", "tarp")
_REQUIRED_ARRAYS = ("cnn_residual", "estimator_residual", "estimator_names")
_META_KEYS = ("run", "tracer", "dataset", "split", "n_galaxies", "seed", "model_nll")
_COMBINED_TRACER = "gas+stars"
_NOT_RECORDED = "not recorded"


@dataclass
class RunResult:
    """One evaluated run as read from its directory."""

    name: str
    """Run name (``metrics["run"]``, else the directory name)."""
    directory: Path
    """The evaluation directory."""
    metrics: dict[str, Any]
    """Parsed metrics.json."""
    arrays: dict[str, np.ndarray]
    """Arrays of residuals.npz."""

    def meta(self, key: str) -> str:
        """A top-level metadata value as text, or "not recorded"."""
        value = self.metrics.get(key)
        if value is None:
            return _NOT_RECORDED
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)


def load_run(eval_dir: Path | str) -> RunResult:
    """Read metrics.json and residuals.npz of one evaluation directory, checking the keys the report needs."""
    d = Path(eval_dir)
    mpath, apath = d / "metrics.json", d / "residuals.npz"
    for p in (mpath, apath):
        if not p.is_file():
            raise ValueError(
                f"{p} does not exist. HINT: pass directories written by `galmass evaluate` "
                "(each holds metrics.json and residuals.npz)"
            )
    with open(mpath, encoding="utf-8") as fh:
        metrics = json.load(fh)
    missing = [k for k in _REQUIRED_METRICS if k not in metrics]
    if missing:
        raise ValueError(f"{mpath} lacks keys {missing}. HINT: re-run `galmass evaluate` with this version")
    with np.load(apath, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    missing = [k for k in _REQUIRED_ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{apath} lacks arrays {missing}. HINT: re-run `galmass evaluate` with this version")
    k = len(metrics["radii_factors"])
    if arrays["cnn_residual"].ndim != 2 or arrays["cnn_residual"].shape[1] != k:
        raise ValueError(
            f"{apath}: cnn_residual has shape {arrays['cnn_residual'].shape}, expected [N, {k}] to match "
            f"radii_factors in {mpath}. HINT: the two files come from different evaluations"
        )
    name = str(metrics.get("run") or d.resolve().name)
    return RunResult(name=name, directory=d, metrics=metrics, arrays=arrays)


# ------------------------------------------------------------------------------------------------ file output


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    # Temp file in the same directory so os.replace is a same-filesystem atomic rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _save_figure(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)  # attach an Agg canvas: no pyplot, no global backend state
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    _atomic_write_bytes(path, buf.getvalue())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


# ------------------------------------------------------------------------------------------------ figures


def _plot_mass_ratio(run: RunResult, path: Path) -> None:
    """The papers' main figure: M_pred/M_true vs r/R_h with a 16–84 % band, estimators as points."""
    f = np.asarray(run.metrics["radii_factors"], dtype=float)
    ratio = 10.0 ** np.asarray(run.arrays["cnn_residual"], dtype=float)
    p16, p50, p84 = np.percentile(ratio, [16, 50, 84], axis=0)
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    ax.fill_between(f, p16, p84, color="C0", alpha=0.25, label="CNN 16–84 %")
    ax.plot(f, p50, "o-", color="C0", label="CNN median")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    names = [str(n) for n in run.arrays["estimator_names"]]
    est_res = 10.0 ** np.asarray(run.arrays["estimator_residual"], dtype=float)
    seen: dict[float, int] = {}
    for j, name in enumerate(names):
        entry = run.metrics["estimators"].get(name, {})
        fe = float(entry.get("radius_factor", np.nan))
        # Estimators sharing a radius (Campbell and Errani at 1.8) are nudged apart so both stay visible.
        offset = 0.025 * seen.get(fe, 0)
        seen[fe] = seen.get(fe, 0) + 1
        q16, q50, q84 = np.percentile(est_res[:, j], [16, 50, 84])
        hollow = bool(entry.get("note", "")) and "least certain" in entry.get("note", "")
        ax.errorbar(
            fe + offset,
            q50,
            yerr=[[q50 - q16], [q84 - q50]],
            fmt="s",
            color=f"C{j + 1}",
            mfc="none" if hollow else f"C{j + 1}",
            capsize=3,
            label=name + (" (least certain)" if hollow else ""),
        )
    ax.set_xlabel("r / R_h")
    ax.set_ylabel("M_pred / M_true")
    ax.set_title(f"{run.name} ({run.meta('tracer')})")
    ax.legend(fontsize=7, ncol=2)
    _save_figure(fig, path)


def _plot_calibration(run: RunResult, path: Path) -> None:
    """Coverage per radius against the nominal level, the TARP curve, and rank histograms when present."""
    cov = run.metrics["coverage"]
    levels = np.asarray(cov["levels"], dtype=float)
    per_radius = np.asarray(cov["per_radius"], dtype=float)  # [K, L]
    f = np.asarray(run.metrics["radii_factors"], dtype=float)
    has_ranks = "rank_counts" in run.arrays
    fig = Figure(figsize=(13.5 if has_ranks else 9.0, 4.0))
    axes = fig.subplots(1, 3 if has_ranks else 2)
    cmap = colormaps["viridis"]
    for k in range(per_radius.shape[0]):
        axes[0].plot(levels, per_radius[k], color=cmap(k / max(1, per_radius.shape[0] - 1)), label=f"{f[k]:.1f}")
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].set_xlabel("nominal credible level")
    axes[0].set_ylabel("empirical coverage")
    axes[0].set_title("marginal coverage per r/R_h")
    axes[0].legend(fontsize=6, ncol=2, title="r/R_h", title_fontsize=7)
    alpha = np.asarray(run.metrics["tarp"]["alpha"], dtype=float)
    ecp = np.asarray(run.metrics["tarp"]["ecp"], dtype=float)
    axes[1].plot(alpha, ecp, color="C3", label="TARP")
    axes[1].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[1].set_xlabel("credibility level α")
    axes[1].set_ylabel("expected coverage")
    axes[1].set_title("TARP (joint, all radii)")
    if has_ranks:
        counts = np.asarray(run.arrays["rank_counts"], dtype=float)  # [B, K]
        edges = np.linspace(0.0, 1.0, counts.shape[0] + 1)
        for k in range(counts.shape[1]):
            axes[2].stairs(counts[:, k], edges, color=cmap(k / max(1, counts.shape[1] - 1)))
        axes[2].axhline(counts[:, 0].sum() / counts.shape[0], color="k", ls="--", lw=0.8)
        axes[2].set_xlabel("normalised rank of truth")
        axes[2].set_ylabel("projections")
        axes[2].set_title("rank histograms")
    fig.suptitle(run.name, y=1.03)
    _save_figure(fig, path)


def _tracer_pairs(runs: Sequence[RunResult]) -> list[tuple[RunResult, RunResult]]:
    """(single-tracer run, gas+stars run) pairs: same dataset preferred, else the only gas+stars run."""
    combined = [r for r in runs if r.metrics.get("tracer") == _COMBINED_TRACER]
    pairs = []
    for r in runs:
        if r.metrics.get("tracer") in (None, _COMBINED_TRACER) or not combined:
            continue
        same = [c for c in combined if c.metrics.get("dataset") == r.metrics.get("dataset")]
        partner = same[0] if same else (combined[0] if len(combined) == 1 else None)
        if partner is not None and len(partner.metrics["radii_factors"]) == len(r.metrics["radii_factors"]):
            pairs.append((r, partner))
    return pairs


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _plot_tracers(runs: Sequence[RunResult], pairs: list[tuple[RunResult, RunResult]], path: Path) -> None:
    fig = Figure(figsize=(11.0 if pairs else 6.0, 4.0))
    axes = fig.subplots(1, 2 if pairs else 1)
    ax0 = axes[0] if pairs else axes
    for i, r in enumerate(runs):
        ax0.plot(r.metrics["radii_factors"], r.metrics["cnn"]["scatter"], "o-", color=f"C{i}",
                 label=f"{r.name} ({r.meta('tracer')})")
    ax0.set_xlabel("r / R_h")
    ax0.set_ylabel("scatter [dex]")
    ax0.set_title("CNN scatter per tracer")
    ax0.legend(fontsize=7)
    if pairs:
        for i, (single, comb) in enumerate(pairs):
            ratio = [_ratio(a, b) for a, b in zip(single.metrics["cnn"]["scatter"], comb.metrics["cnn"]["scatter"])]
            axes[1].plot(single.metrics["radii_factors"], ratio, "o-", color=f"C{i}",
                         label=f"{single.name} / {comb.name}")
        axes[1].axhline(1.0, color="k", ls="--", lw=0.8)
        axes[1].set_xlabel("r / R_h")
        axes[1].set_ylabel("scatter(single) / scatter(gas+stars)")
        axes[1].set_title("tracer gain (paper B)")
        axes[1].legend(fontsize=7)
    _save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ markdown


def _b(x: float) -> str:
    return f"{x:+.3f}"


def _s(x: float) -> str:
    return f"{x:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _run_section(run: RunResult, ratio_png: str, calib_png: str) -> list[str]:
    m = run.metrics
    out = [
        f"## Run `{run.name}`",
        "",
        f"Tracer: {run.meta('tracer')}. Dataset: `{run.meta('dataset')}`, split {run.meta('split')}, "
        f"seed {run.meta('seed')}; {run.meta('n_galaxies')} galaxies, {m['n_projections']} projections. "
        f"Source: `{run.directory}`.",
        "",
        "### Residuals per radius (CNN posterior median)",
        "",
    ]
    cnn = m["cnn"]
    rows = [
        [f"{f:.2f}", _b(cnn["bias"][k]), _s(cnn["scatter"][k]), _s(cnn["frac_within_0p1"][k])]
        for k, f in enumerate(m["radii_factors"])
    ]
    out += _table(["r/R_h", "bias [dex]", "scatter [dex]", "frac. within 0.1 dex"], rows)
    out += ["", "### CNN vs estimators at each estimator's radius", ""]
    rows = []
    for name, e in m["estimators"].items():
        rows.append([
            name,
            f"{e['radius_factor']:.2f}",
            f"{e['coefficient']:g}",
            _s(e["estimator"]["scatter"]),
            _s(e["cnn"]["scatter"]),
            _b(e["estimator"]["bias"]),
            _b(e["cnn"]["bias"]),
            _s(e["estimator"]["frac_within_0p1"]),
            _s(e["cnn"]["frac_within_0p1"]),
            e.get("note", ""),
        ])
    out += _table(
        ["estimator", "r/R_h", "C", "estimator scatter [dex]", "CNN scatter [dex]", "estimator bias [dex]",
         "CNN bias [dex]", "estimator frac. within 0.1 dex", "CNN frac. within 0.1 dex", "note"],
        rows,
    )
    n_levels = len(m["coverage"]["levels"])
    out += [
        "",
        "The CNN column interpolates its posterior samples in (log M, log r) to the estimator's radius.",
        "",
        "### Calibration",
        "",
        f"- max |coverage − level| over {n_levels} levels × {len(m['radii_factors'])} radii: "
        f"{_s(m['coverage']['max_abs_error'])}",
        f"- TARP max |ECP − α|: {_s(m['tarp']['max_abs_error'])}",
    ]
    if m.get("model_nll") is not None:
        out.append(f"- model NLL on this split: {run.meta('model_nll')}")
    out += ["", f"![M_pred/M_true vs r/R_h]({ratio_png})", "", f"![calibration]({calib_png})", ""]
    return out


def _tracer_section(runs: Sequence[RunResult], pairs: list[tuple[RunResult, RunResult]], png: str) -> list[str]:
    out = ["## Tracer comparison", "", "CNN scatter [dex] per radius:", ""]
    ref = runs[0].metrics["radii_factors"]
    same_grid = all(len(r.metrics["radii_factors"]) == len(ref) for r in runs)
    if same_grid:
        rows = [[f"{f:.2f}"] + [_s(r.metrics["cnn"]["scatter"][k]) for r in runs] for k, f in enumerate(ref)]
        out += _table(["r/R_h"] + [f"{r.name} ({r.meta('tracer')})" for r in runs], rows)
    else:
        out.append("(runs use different radius grids; see the figure)")
    if pairs and same_grid:
        out += ["", "Scatter ratio single tracer ÷ gas+stars per radius (below 1: the single tracer is better):", ""]
        grid = pairs[0][0].metrics["radii_factors"]
        rows = []
        for k, f in enumerate(grid):
            row = [f"{f:.2f}"]
            for single, comb in pairs:
                row.append(f"{_ratio(single.metrics['cnn']['scatter'][k], comb.metrics['cnn']['scatter'][k]):.2f}")
            rows.append(row)
        out += _table(["r/R_h"] + [f"{s.name} / {c.name}" for s, c in pairs], rows)
    elif pairs:
        out += ["", "(scatter ratios: runs use different radius grids; see the figure)"]
    else:
        out += ["", f"(no {_COMBINED_TRACER} run to compare with)"]
    out += ["", f"![tracer comparison]({png})", ""]
    return out


def write_report(eval_dirs: Sequence[Path | str], out_dir: Path | str, title: str = "galmass report") -> Path:
    """Write ``out_dir/report.md`` and its PNG figures from one or more evaluation directories.

    Parameters
    ----------
    eval_dirs : sequence of path
        Directories holding metrics.json and residuals.npz (one per evaluated run).
    out_dir : path
        Where report.md and the figures go (created if needed).
    title : str
        First-level heading of the report.

    Returns
    -------
    Path
        The report.md written.
    """
    if len(eval_dirs) == 0:
        raise ValueError("no evaluation directories given. HINT: pass at least one directory from `galmass evaluate`")
    runs = [load_run(d) for d in eval_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    lines = [
        f"# {title}",
        "",
        f"galmass {galmass.__version__}; {len(runs)} evaluated run(s). Every number is read from each run's "
        "metrics.json / residuals.npz. Residual r = log10(M_pred / M_true) [dex] with M_pred the posterior "
        "median; bias = median(r); scatter = (p84 − p16)/2 of r [dex]; frac. within 0.1 dex = fraction with "
        "|r| < 0.1. Radii r/R_h are in units of the projected half-number radius of the observed stars.",
        "",
        "## Runs",
        "",
    ]
    lines += _table(
        ["run", "tracer", "dataset", "split", "seed", "galaxies", "projections", "model NLL"],
        [[f"`{r.name}`", r.meta("tracer"), f"`{r.meta('dataset')}`", r.meta("split"), r.meta("seed"),
          r.meta("n_galaxies"), str(r.metrics["n_projections"]), r.meta("model_nll")] for r in runs],
    )
    lines.append("")
    for i, run in enumerate(runs):
        stem = f"{i:02d}_{_slug(run.name)}"
        ratio_png, calib_png = f"{stem}_mass_ratio.png", f"{stem}_calibration.png"
        _plot_mass_ratio(run, out / ratio_png)
        _plot_calibration(run, out / calib_png)
        lines += _run_section(run, ratio_png, calib_png)
    tracers = {r.metrics.get("tracer") for r in runs} - {None}
    if len(tracers) > 1:
        pairs = _tracer_pairs(runs)
        _plot_tracers(runs, pairs, out / "tracer_comparison.png")
        lines += _tracer_section(runs, pairs, "tracer_comparison.png")
    report = out / "report.md"
    _atomic_write_bytes(report, ("\n".join(lines) + "\n").encode("utf-8"))
    return report
