"""Batch `galmass predict` throughput: catalogues/s with the model loaded once, ÷ one catalogue per command.

Usage:  python benchmarks/predict_throughput.py [--run RUN ...] [--catalogues 1000] [--stars 100] [--samples 1000]

Writes one table of N catalogues of ~``--stars`` stars (mock dwarfs of the median suite, 20 lines of sight each)
under benchmarks/_work/predict/, then times (1) one `predict` call on the whole table (model loaded once,
catalogues batched, no PNGs) in one process and with ``--workers`` forked processes (``--workers``, default 2),
each also with ``--single-file`` (all draws in one samples.h5 instead of two files per galaxy),
(2) the same one-process call with zuko's own flow sampler in place of ``galmass.models.sampling.sample_flow`` (the
path before it), and (3) the same catalogues one per `galmass predict` command (a new process and a model load
each: what a user's shell loop does), on the first ``--single`` of them.
Several ``--run`` (e.g. the same network with ``model.flow_passes`` null and 2) are timed batched in this one run,
so their ratio is fair; torch is imported before the first timing, so no row pays for it.
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
from galmass.predict import BATCH, add_arguments, run  # noqa: E402


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


SHIPPED = "shipped"
"""``--run shipped``: the model that ships inside the package (no ``--run`` passed to predict)."""


def _time_batch(table, out, samples: int, model: list[str], zuko_sampler: bool = False,
                batch: int | None = None, workers: int = 1, single_file: bool = False) -> float:
    """Wall seconds of one `predict` call on the whole table (model loaded once, catalogues batched); with
    ``zuko_sampler`` the flow is sampled by zuko's ``flow(c).sample`` as before galmass.models.sampling, with
    ``batch`` that many catalogues per network call instead of ``galmass.predict.BATCH``, with ``workers`` that
    many forked processes, with ``single_file`` all draws in one samples.h5 instead of a directory per galaxy."""
    import galmass.models.network as network
    import galmass.predict as predict

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--stars", str(table), "--out", str(out), "--samples", str(samples), "--no-plot",
                              "--force", "--workers", str(workers), *(["--single-file"] if single_file else []),
                              *model])
    fast, default_batch = network.sample_flow, predict.BATCH
    if zuko_sampler:
        network.sample_flow = _zuko_sampler
    predict.BATCH = batch or default_batch
    try:
        t0 = time.perf_counter()
        run(args)
        return time.perf_counter() - t0
    finally:
        network.sample_flow, predict.BATCH = fast, default_batch


def _zuko_sampler(flow, c, n, scale=None):
    """zuko's own sampler (the path before galmass.models.sampling), tempered like sample_flow when asked."""
    dist = flow(c)
    if scale is None:
        return dist.sample((n,))
    return dist.transform.inv(dist.base.rsample((n,)) * scale[:, None])


def _startup_seconds(model: list[str]) -> float:
    """Seconds for a fresh process to import galmass's predict path and load the model (paid once per command)."""
    code = ("import sys; from galmass.predict import load_model; "
            "load_model(sys.argv[1] if len(sys.argv) > 1 else None, None)")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *model[1:]], check=True, capture_output=True)
    return time.perf_counter() - t0


def _time_single(work, table, samples: int, model: list[str], n: int) -> tuple[int, float]:
    """(catalogues, seconds per catalogue) with one `galmass predict` command per catalogue (a user's shell loop)."""
    text = table.read_text().splitlines()
    names = list(dict.fromkeys(ln.split(",", 1)[0] for ln in text[1:]))[:n]
    for name in names:
        one = work / f"{name}.csv"
        one.write_text("\n".join([text[0]] + [ln for ln in text[1:] if ln.startswith(name + ",")]) + "\n")
    t0 = time.perf_counter()
    for name in names:
        subprocess.run([sys.executable, "-m", "galmass", "predict", "--stars", str(work / f"{name}.csv"), "--out",
                        str(work / f"single-{name}"), "--samples", str(samples), "--no-plot", "--force", *model],
                       check=True, capture_output=True)
    return len(names), (time.perf_counter() - t0) / len(names)


def _flow_passes(run_dir: str | None) -> str:
    """The model's ``model.flow_passes`` as the table shows it."""
    from galmass.predict import load_model

    passes = load_model(run_dir, None)[1].model.flow_passes
    return "10 (autoregressive)" if passes is None else f"{passes} (coupling)" if passes == 2 else str(passes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=None,
                    help="trained run(s) to time, each in this one run; 'shipped' = the packaged model (default)")
    ap.add_argument("--catalogues", type=int, default=1000)
    ap.add_argument("--stars", type=int, default=100)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--single", type=int, default=10, help="catalogues timed one per command (first model)")
    ap.add_argument("--batch", type=int, nargs="*", default=[], help="other catalogues per network call to time "
                    "(first model)")
    ap.add_argument("--workers", type=int, default=2, help="forked processes of the multi-process rows")
    a = ap.parse_args()
    work = ROOT / "benchmarks" / "_work" / "predict"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    table = work / "table.csv"
    write_table(table, a.catalogues, a.stars)
    runs = [None if r == SHIPPED else r for r in a.run or [SHIPPED]]
    import torch

    rows = ["| model | flow passes per transform | mode | catalogues | wall s | catalogues/s |",
            "|---|---|---|---|---|---|"]
    rates, zuko_rate, pool_rate, single_rate = [], None, None, None
    for k, r in enumerate(runs):
        model = ["--run", r] if r else []
        label = r or "shipped default"
        modes = [(f"one `predict` call, {BATCH} catalogues per network call", False, None, 1, False),
                 (f"the same, `--workers {a.workers}`", False, None, a.workers, False)]
        if k == 0:
            modes += [("the same, one process, `--single-file`", False, None, 1, True),
                      (f"the same, `--workers {a.workers} --single-file`", False, None, a.workers, True)]
            modes += [(f"the same, {b} per call", False, b, 1, False) for b in a.batch if b != BATCH]
            modes += [("the same, one process, zuko's sampler (before)", True, None, 1, False)]
        for j, (mode, zuko_sampler, batch, workers, single) in enumerate(modes):
            batch_s = _time_batch(table, work / f"batch{k}-{j}", a.samples, model, zuko_sampler, batch, workers,
                                  single)
            rates.append(a.catalogues / batch_s)
            if zuko_sampler:
                zuko_rate = rates[-1]
            if k == 0 and workers > 1 and not single:
                pool_rate = rates[-1]
            if k == 0 and workers > 1 and single:
                single_rate = rates[-1]
            rows.append(f"| {label} | {_flow_passes(r)} | {mode} | {a.catalogues} | {batch_s:.1f} | "
                        f"{rates[-1]:.1f} |")
    startup = _startup_seconds(["--run", runs[0]] if runs[0] else [])
    n_single, single_s = _time_single(work, table, a.samples, ["--run", runs[0]] if runs[0] else [], a.single)
    rows.append(f"| {runs[0] or 'shipped default'} | {_flow_passes(runs[0])} | one `galmass predict` command per "
                f"catalogue | {n_single} | {single_s * n_single:.1f} | {1 / single_s:.2f} |")
    lines = [
        "# Batch predict throughput (`galmass predict`)", "",
        f"Machine: {machine()}; load {load_average()}", "",
        f"{a.catalogues} catalogues of {a.stars} stars (median suite, cusp), {a.samples} posterior samples each, "
        "no PNGs. Wall time including reading, checks, maps, flow sampling and writing each galaxy's "
        "posterior.json + samples.npz (with `--single-file`: every galaxy's draws in one samples.h5) and the "
        "summary.", "", *rows, "",
        f"Ratio batched ÷ one per command (first model, one process): **{rates[0] * single_s:.0f}×**; "
        f"`--workers {a.workers}` ÷ one process: **{pool_rate / rates[0]:.2f}×**; `--workers {a.workers} "
        f"--single-file` ÷ one process with a directory per galaxy: **{single_rate / rates[0]:.2f}×**; galmass's "
        "sampler ÷ zuko's in the "
        f"batched command ({BATCH} per call): **{rates[0] / zuko_rate:.2f}×** (all measured in this one run). "
        f"A fresh process needs {startup:.1f} s to start Python, import torch and load the model: each `galmass "
        "predict` command pays it once (the batched rows import torch beforehand but include loading the model). "
        f"{torch.get_num_threads()} torch threads in one process, 1 in each worker.",
        "", "Reproduce: `python benchmarks/predict_throughput.py" + "".join(f" --run {r}" for r in a.run or []) + "`.",
    ]
    write_result("predict_throughput", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
