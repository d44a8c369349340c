"""Batch `galmass predict` throughput: catalogues/s with the model loaded once, ÷ one catalogue per command.

Usage:  python benchmarks/predict_throughput.py [--run RUN] [--catalogues 1000] [--stars 100] [--samples 1000]

Writes one table of N catalogues of ~``--stars`` stars (mock dwarfs of the median suite, 20 lines of sight each)
under benchmarks/_work/predict/, then times (1) one `predict` call on the whole table (model loaded once,
catalogues batched, no PNGs) and (2) the same catalogues one per `galmass predict` command (a new process and a
model load each: what a user's shell loop does), on the first ``--single`` of them. Both in this one run.
Writes benchmarks/results/predict_throughput.md with the machine named. Default model: the shipped one.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

import numpy as np
from _common import ROOT, load_average, machine, write_result  # noqa: E402  (puts the repository on sys.path)

from galmass.mocks.galaxy import draw_galaxy, sample_stars  # noqa: E402
from galmass.mocks.projection import project  # noqa: E402
from galmass.mocks.suites import load_feedback, load_suite  # noqa: E402
from galmass.predict import add_arguments, run  # noqa: E402


def write_table(path, n_cat: int, n_stars: int, seed: int = 0) -> None:
    """N catalogues with a galaxy column: 20 random lines of sight per mock galaxy, 2 km/s errors."""
    rng = np.random.default_rng(seed)
    suite, fb = load_suite("median"), load_feedback("cusp")
    lines = ["galaxy,x_kpc,y_kpc,v_los_kms,v_err_kms"]
    for g in range(-(-n_cat // 20)):
        pos, vel = sample_stars(draw_galaxy(suite, fb, 1000 + g), 20 * n_stars, rng)
        for p in range(min(20, n_cat - 20 * g)):
            los = rng.normal(size=3)
            sel = slice(p * n_stars, (p + 1) * n_stars)
            x, y, v = project(pos[sel], vel[sel], los / np.linalg.norm(los), 0.0)
            v = v + rng.normal(0, 2.0, n_stars)
            lines += [f"g{g:04d}p{p:02d},{a:.5f},{b:.5f},{c:.3f},2" for a, b, c in zip(x, y, v)]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--catalogues", type=int, default=1000)
    ap.add_argument("--stars", type=int, default=100)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--single", type=int, default=10, help="catalogues timed one per command")
    a = ap.parse_args()
    work = ROOT / "benchmarks" / "_work" / "predict"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    table = work / "table.csv"
    write_table(table, a.catalogues, a.stars)
    model = ["--run", a.run] if a.run else []
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--stars", str(table), "--out", str(work / "batch"), "--samples", str(a.samples),
                              "--no-plot", "--force", *model])
    t0 = time.perf_counter()
    run(args)
    batch_s = time.perf_counter() - t0

    singles = []
    text = table.read_text().splitlines()
    names = list(dict.fromkeys(ln.split(",", 1)[0] for ln in text[1:]))[: a.single]
    for name in names:
        one = work / f"{name}.csv"
        one.write_text("\n".join([text[0]] + [ln for ln in text[1:] if ln.startswith(name + ",")]) + "\n")
    t0 = time.perf_counter()
    for name in names:
        subprocess.run([sys.executable, "-m", "galmass", "predict", "--stars", str(work / f"{name}.csv"), "--out",
                        str(work / f"single-{name}"), "--samples", str(a.samples), "--no-plot", "--force", *model],
                       check=True, capture_output=True)
    single_s = (time.perf_counter() - t0) / len(names)
    batch_rate = a.catalogues / batch_s
    lines = [
        "# Batch predict throughput (`galmass predict`)", "",
        f"Machine: {machine()}; load {load_average()}", "",
        f"Model: {a.run or 'the shipped default'}; {a.catalogues} catalogues of {a.stars} stars (median suite, "
        f"cusp), {a.samples} posterior samples each, no PNGs. Wall time including reading, checks, maps, flow "
        "sampling and writing each galaxy's posterior.json + samples.npz and the summary.", "",
        "| mode | catalogues | wall s | catalogues/s |", "|---|---|---|---|",
        f"| one `predict` call, batched | {a.catalogues} | {batch_s:.1f} | {batch_rate:.1f} |",
        f"| one `galmass predict` command per catalogue | {len(names)} | {single_s * len(names):.1f} | "
        f"{1 / single_s:.2f} |", "",
        f"Ratio batched ÷ one per command: **{batch_rate * single_s:.0f}×** (measured in this one run).", "",
        "Reproduce: `python benchmarks/predict_throughput.py" + (f" --run {a.run}" if a.run else "") + "`.",
    ]
    write_result("predict_throughput", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
