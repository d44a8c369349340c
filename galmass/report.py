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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import galmass
from galmass.naming import slug
from hpc.atomic import atomic_write_bytes

__all__ = ["RunResult", "load_run", "write_report", "write_sweep_report", "cross_suite_matrices"]

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


def _save_figure(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)  # attach an Agg canvas: no pyplot, no global backend state
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


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
    lines += _runs_body(runs, out)
    report = out / "report.md"
    atomic_write_bytes(report, ("\n".join(lines) + "\n").encode("utf-8"))
    return report


def _runs_body(runs: Sequence[RunResult], out: Path) -> list[str]:
    """Per-run sections (residuals, estimators, calibration + figures) and the tracer comparison."""
    lines: list[str] = []
    for i, run in enumerate(runs):
        stem = f"{i:02d}_{slug(run.name, empty='run')}"
        ratio_png, calib_png = f"{stem}_mass_ratio.png", f"{stem}_calibration.png"
        _plot_mass_ratio(run, out / ratio_png)
        _plot_calibration(run, out / calib_png)
        lines += _run_section(run, ratio_png, calib_png)
    tracers = {r.metrics.get("tracer") for r in runs} - {None}
    if len(tracers) > 1:
        pairs = _tracer_pairs(runs)
        _plot_tracers(runs, pairs, out / "tracer_comparison.png")
        lines += _tracer_section(runs, pairs, "tracer_comparison.png")
    return lines


# ------------------------------------------------------------------------------------------------ sweeps

_COVERAGE_LEVEL = 0.68
"""Nominal level whose coverage the cross-suite matrix shows (the nearest evaluated level is used)."""


def cross_suite_matrices(entries: Sequence[tuple[str, str, str, RunResult]]) -> dict[str, Any]:
    """Train-dataset × test-dataset matrices of radius-averaged bias, scatter and coverage, per group.

    Parameters
    ----------
    entries : sequence of (group, train_dataset, test_dataset, RunResult)
        ``group`` labels the cells that share every non-data axis (e.g. ``tracer=stars``).

    Returns
    -------
    dict
        ``groups``, ``train``, ``test`` (labels in order of first appearance), ``level`` (the coverage level
        used) and per metric (``bias`` [dex], ``scatter`` [dex], ``coverage`` [fraction]) an array
        [groups, train, test] of the mean over the radii of that metric; NaN where no evaluation exists.
    """
    groups = list(dict.fromkeys(e[0] for e in entries))
    train = list(dict.fromkeys(e[1] for e in entries))
    test = list(dict.fromkeys(e[2] for e in entries))
    shape = (len(groups), len(train), len(test))
    mats = {k: np.full(shape, np.nan) for k in ("bias", "scatter", "coverage")}
    level = float("nan")
    for g, tr, te, run in entries:
        i, j, k = groups.index(g), train.index(tr), test.index(te)
        cnn = run.metrics["cnn"]
        mats["bias"][i, j, k] = float(np.mean(cnn["bias"]))
        mats["scatter"][i, j, k] = float(np.mean(cnn["scatter"]))
        levels = np.asarray(run.metrics["coverage"]["levels"], dtype=float)
        li = int(np.argmin(np.abs(levels - _COVERAGE_LEVEL)))
        level = float(levels[li])
        mats["coverage"][i, j, k] = float(np.mean(np.asarray(run.metrics["coverage"]["per_radius"])[:, li]))
    return {"groups": groups, "train": train, "test": test, "level": level, **mats}


def _plot_matrices(m: dict[str, Any], path: Path) -> None:
    """One row of heatmaps (bias, scatter, coverage) per group, values written in the cells."""
    ng = len(m["groups"])
    fig = Figure(figsize=(4.6 * 3, 1.2 + (0.6 * len(m["train"]) + 1.6) * ng), layout="constrained")
    axes = np.atleast_2d(fig.subplots(ng, 3, squeeze=False))
    labels = m.get("labels", {})
    short = lambda names: [labels.get(n, n) for n in names]  # noqa: E731 - figure tick labels only
    specs = [("bias", "bias [dex] (0 is ideal)", "RdBu_r", "+.3f"),
             ("scatter", "scatter [dex]", "viridis", ".3f"),
             ("coverage", f"coverage of the {m['level']:.0%} interval (ideal {m['level']:.2f})", "RdBu_r", ".2f")]
    for gi, group in enumerate(m["groups"]):
        for ci, (key, label, cmap, fmt) in enumerate(specs):
            ax = axes[gi, ci]
            data = m[key][gi]
            finite = data[np.isfinite(data)]
            if key == "bias":
                lim = float(np.max(np.abs(finite))) if finite.size else 1.0
                vmin, vmax = -lim, lim
            elif key == "coverage":
                lim = float(np.max(np.abs(finite - m["level"]))) if finite.size else 0.5
                vmin, vmax = m["level"] - max(lim, 1e-3), m["level"] + max(lim, 1e-3)
            else:
                vmin = vmax = None
            im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            fig.colorbar(im, ax=ax, fraction=0.046)
            for (r, c), v in np.ndenumerate(data):
                ax.text(c, r, "—" if not np.isfinite(v) else format(v, fmt), ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(m["test"])), short(m["test"]), rotation=20, ha="right", fontsize=7)
            ax.set_yticks(range(len(m["train"])), short(m["train"]) if ci == 0 else [], fontsize=7)
            ax.set_xlabel("test dataset")
            if ci == 0:
                ax.set_ylabel("train dataset")
            ax.set_title(f"{group}\n{label}", fontsize=8)
    _save_figure(fig, path)


def write_sweep_report(plan: Any, out_dir: Path | str, title: str | None = None) -> Path:
    """Cross-suite report of a sweep (``galmass sweep``): matrices, tracer comparison, TARP, estimators.

    Parameters
    ----------
    plan : galmass.sweep.Plan
        The expanded sweep; each cell's evaluations are read from ``<run_dir>/eval-<dataset>/``.
    out_dir : path
        Where report.md and its PNGs go.
    title : str, optional
        Heading (default: the sweep's name).

    Returns
    -------
    Path
        The report.md written. Cells without evaluations are listed as missing, never silently dropped.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_axes = {"data.suites", "data.feedbacks"}
    entries, diagonal, missing = [], [], []
    for cell in plan.cells:
        group = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in cell.values.items() if k not in data_axes) or "all"
        found = False
        for ds in plan.datasets:
            d = Path(cell.run_dir) / f"eval-{ds.name}"
            if not (d / "metrics.json").exists():
                continue
            found = True
            run = load_run(d)
            run.name = f"{cell.name} @ {ds.name}"
            entries.append((group, cell.dataset, ds.name, run))
            if ds.name == cell.dataset:
                run_diag = load_run(d)
                run_diag.name = cell.name
                diagonal.append(run_diag)
        if not found:
            missing.append(cell.name)
    if not entries:
        raise ValueError(f"sweep {plan.name}: no cell has an evaluation yet. HINT: wait for the training array")
    m = cross_suite_matrices(entries)
    # Figures label datasets by suite/feedback; the hash (other data settings) only where that is ambiguous.
    brief = {d.name: f"{'+'.join(d.suites)} / {'+'.join(d.feedbacks)}" for d in plan.datasets}
    clash = {v for v in brief.values() if list(brief.values()).count(v) > 1}
    m["labels"] = {k: (k if v in clash else v) for k, v in brief.items()}
    _plot_matrices(m, out / "cross_suite.png")
    lines = [
        f"# {title or f'galmass sweep {plan.name}'}",
        "",
        f"galmass {galmass.__version__}; {len(plan.cells)} cells × {len(plan.datasets)} test datasets "
        f"(test split). Axes: " + "; ".join(f"{k} ∈ {v}" for k, v in plan.axes.items()) + ". Every number is read "
        "from the cells' metrics.json. Residual r = log10(M_pred / M_true) [dex], M_pred the posterior median.",
        "",
        "## Datasets",
        "",
    ]
    lines += _table(["dataset", "suites", "feedbacks", "path"],
                    [[d.name, ", ".join(d.suites), ", ".join(d.feedbacks), f"`{d.path}`"] for d in plan.datasets])
    if missing:
        lines += ["", f"**Missing** (not trained or not evaluated): {', '.join(missing)}"]
    lines += [
        "",
        "## Cross-suite matrices (train dataset × test dataset)",
        "",
        f"Each entry is the mean over the {len(entries[0][3].metrics['radii_factors'])} radii of the CNN bias "
        f"[dex], scatter [dex] and the empirical coverage of the central {m['level']:.0%} credible interval. "
        "The diagonal is in-distribution; off-diagonal entries test transfer to another suite/feedback model.",
        "",
        "![cross-suite matrices](cross_suite.png)",
        "",
    ]
    for gi, group in enumerate(m["groups"]):
        for key, fmt in (("bias", _b), ("scatter", _s), ("coverage", lambda x: f"{x:.3f}")):
            lines += [f"### {group}: {key}", ""]
            rows = [[tr] + ["—" if not np.isfinite(v) else fmt(v) for v in m[key][gi, j]]
                    for j, tr in enumerate(m["train"])]
            lines += _table(["train \\ test"] + m["test"], rows) + [""]
    lines += ["## In-distribution runs (each cell on its own dataset's test split)", ""]
    lines += _runs_body(diagonal, out)
    report = out / "report.md"
    atomic_write_bytes(report, ("\n".join(lines) + "\n").encode("utf-8"))
    return report
