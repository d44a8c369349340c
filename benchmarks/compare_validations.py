"""Two models on the independent validation set: bias, RMS and 68 % coverage, and their paired differences.

Usage:  python benchmarks/compare_validations.py A_DIR B_DIR [--label-a shipped] [--label-b new] [--boot 1000]
                                                 [--name compare_validations] [--note TEXT] [--also DIR=LABEL ...]

A_DIR and B_DIR are ``galmass validate`` output directories (``RUN/validate-<set>/``) of the same validation set
and options. From their ``posteriors.npz`` (per catalogue: truth and the posterior's 16/50/84 % points) it reports,
per N★ variant and radius f R_h, each model's bias (median of log10 M_pred/M_true), RMS and 68 % coverage, and
B − A with a bootstrap standard error over *galaxies* (a galaxy's lines of sight are resampled together, the same
resample for both models: the difference is paired, so it is resolved well below either model's own error).
``--also`` adds more directories of the same set to a closing table of every model's own numbers (not paired):
e.g. several training seeds, to read a paired B − A against the spread between seeds. Writes
``benchmarks/results/<name>.md`` with the machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import load_average, machine, write_result  # noqa: E402  (puts the repository on sys.path)
from transfer_report import bootstrap  # noqa: E402

SHOWN = (0, 2, 6)
"""Indices of f = 0.6, 1.0 and 1.8 R_h in the label grid (inner radius, half-light, Errani's radius)."""


def _stats(res: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """[3, K]: bias (median), RMS and 68 % coverage of residuals [N, K] and in-interval flags [N, K]."""
    return np.stack([np.median(res, axis=0), np.sqrt(np.mean(res**2, axis=0)), inside.mean(axis=0)])


def _variant(z: np.lib.npyio.NpzFile, n: int) -> dict[str, np.ndarray]:
    truth = z[f"n{n}_truth"]
    inside = (truth >= z[f"n{n}_p16"]) & (truth <= z[f"n{n}_p84"])
    return {"res": z[f"n{n}_p50"] - truth, "inside": inside, "galaxy": z[f"n{n}_galaxy"], "index": z[f"n{n}_index"]}


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], n_boot: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point stats of A and B [2, 3, K], B − A [3, K] and its bootstrap standard error [3, K] (galaxies resampled)."""
    point, draws = bootstrap([a, b], n_boot, seed, stats=_stats)
    return point, point[1] - point[0], (draws[:, 1] - draws[:, 0]).std(axis=0)


def _family_lines(va: dict, vb: dict) -> list[str]:
    """Bias per generating family (``galmass validate``'s ``by_family``) of A and B beside the estimator's."""
    if "by_family" not in va or "by_family" not in vb:
        return []
    r = va["estimators"][va["best_estimator"]]["radius_factor"]
    lines = [f"By generating family at {r:.2f} R_h ({va['best_estimator']}'s radius): bias [dex]", "",
             "| family | catalogues | A | B | estimator | A − estimator | B − estimator |",
             "|---|---|---|---|---|---|---|"]
    for key, values in va["by_family"].items():
        for v, a in values.items():
            b, e = vb["by_family"][key][v]["bias"], a["estimator_bias"]
            lines.append(f"| {key} = {v} | {a['n']} | {a['bias']:+.3f} | {b:+.3f} | {e:+.3f} | {a['bias'] - e:+.3f} | "
                         f"{b - e:+.3f} |")
    return lines + [""]


def _load(path: Path, ap: argparse.ArgumentParser) -> tuple[np.lib.npyio.NpzFile, dict]:
    if not (path / "posteriors.npz").exists():
        ap.error(f"{path}/posteriors.npz does not exist. HINT: pass the directory `galmass validate RUN` wrote")
    return np.load(path / "posteriors.npz"), json.loads((path / "metrics.json").read_text())


def _summary_lines(models: list[tuple[str, np.lib.npyio.NpzFile, dict]], factors: np.ndarray) -> list[str]:
    """One row per model and N★: RMS ÷ best estimator, bias / RMS / 68 % coverage at the shown radii, the lowest
    coverage over all radii, TARP."""
    shown = " / ".join(f"{factors[k]:.1f}" for k in SHOWN)
    lines = ["## Every model on its own", "",
             f"| model | N★ | RMS ÷ best estimator | bias {shown} R_h | RMS {shown} R_h | 68 % cov {shown} R_h | "
             "lowest cov | TARP |", "|---|---|---|---|---|---|---|---|"]
    for n in sorted(models[0][2]["variants"], key=int):
        for label, z, m in models:
            v = _variant(z, int(n))
            st, var = _stats(v["res"], v["inside"]), m["variants"][n]
            cols = [" / ".join(f"{st[s, k]:{fmt}}" for k in SHOWN) for s, fmt in ((0, "+.3f"), (1, ".3f"), (2, ".2f"))]
            lines.append(f"| {label} | {n} | {var['rms_ratio_vs_best_estimator']:.2f} | {' | '.join(cols)} | "
                         f"{st[2].min():.2f} | {var['tarp']['max_abs_error']:.3f} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--name", default="compare_validations")
    ap.add_argument("--note", default="", help="a paragraph on what A and B are and how they were made")
    ap.add_argument("--also", action="append", default=[], metavar="DIR=LABEL",
                    help="another validate directory of the same set for the closing table (repeatable)")
    args = ap.parse_args()
    (za, ma), (zb, mb) = _load(Path(args.a), ap), _load(Path(args.b), ap)
    also = [(label, *_load(Path(d), ap)) for d, _, label in (x.partition("=") for x in args.also)]
    for other in [mb] + [m for _, _, m in also]:
        if ma["set"]["name"] != other["set"]["name"] or sorted(ma["variants"]) != sorted(other["variants"]):
            ap.error(f"different validation sets or N★ variants ({ma['set']['name']} vs {other['set']['name']}): "
                     "a comparison would mean nothing")
    factors = za["radii_factors"]
    lines = [f"# {args.label_b} vs {args.label_a} on the independent validation set", "",
             f"Machine: {machine()}; load {load_average()}", "",
             f"Set {ma['set']['name']}; A = `{args.a}` ({args.label_a}), B = `{args.b}` ({args.label_b}). Bias = "
             f"median of log10 M_pred/M_true [dex]; B − A ± bootstrap standard error over galaxies ({args.boot} "
             "paired resamples). Reproduce: `python benchmarks/compare_validations.py A B`.", ""] + (
                 [args.note, ""] if args.note else [])
    for n in sorted(ma["variants"], key=int):
        a, b = _variant(za, int(n)), _variant(zb, int(n))
        if not np.array_equal(a["index"], b["index"]):
            ap.error(f"N★ = {n}: the two directories graded different catalogues")
        point, diff, err = paired(a, b, args.boot, seed=int(n))
        lines += [f"## N★ = {n} ({len(a['res'])} catalogues, {len(np.unique(a['galaxy']))} galaxies)", "",
                  "| r / R_h | bias A | bias B | B − A | RMS A | RMS B | B − A | 68 % cov A | cov B | B − A |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for k in SHOWN:
            cells = [f"{point[0, s, k]:.3f} | {point[1, s, k]:.3f} | {diff[s, k]:+.3f} ± {err[s, k]:.3f}"
                     for s in range(3)]
            lines.append(f"| {factors[k]:.1f} | " + " | ".join(cells) + " |")
        ra, rb = (m["variants"][n]["rms_ratio_vs_best_estimator"] for m in (ma, mb))
        lines += ["", f"RMS ÷ best estimator ({ma['variants'][n]['best_estimator']}): A {ra:.2f}, B {rb:.2f}; "
                  f"TARP max |ECP − α|: A {ma['variants'][n]['tarp']['max_abs_error']:.3f}, "
                  f"B {mb['variants'][n]['tarp']['max_abs_error']:.3f}.", ""] + _family_lines(ma["variants"][n],
                                                                                           mb["variants"][n])
    if also:
        lines += _summary_lines([(args.label_a, za, ma), (args.label_b, zb, mb)] + also, factors)
    write_result(args.name, "\n".join(lines))


if __name__ == "__main__":
    main()
