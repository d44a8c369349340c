"""Fully autoregressive vs coupling-layer flow (``model.flow_passes`` null vs 2): accuracy, calibration and cost.

Usage:  python benchmarks/flow_passes.py --data TRAIN --test TEST [--set data.KEY=VALUE ...] [--out runs/passes]
        [--epochs 25]

Trains the same network on the same dataset twice (``configs/transfer.yaml`` sizes), differing only in
``model.flow_passes``: null (zuko's default MAF: sampling inverts it with one network pass per label dimension,
10 per transform) and 2 (coupling layers: two passes per transform). Each is evaluated on ``--test`` (held-out
galmass mocks) and on the independent validation set (``galmass validate``). Every step is a `galmass` command;
finished steps are skipped. Writes benchmarks/results/flow_passes.md (per-radius bias, scatter, 68 % coverage,
TARP, posterior sampling seconds, training seconds). Batch-predict throughput of the same two runs:
``python benchmarks/predict_throughput.py --run OUT/null --run OUT/2``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, load_average, machine, write_result  # noqa: E402  (puts the repository on sys.path)

SHOWN = (0, 2, 6, 9)  # f = 0.6, 1.0, 1.8, 2.4


def galmass(*args: str) -> float:
    """Run one `galmass` command; wall seconds."""
    print("[flow_passes] galmass " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "galmass", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_one(passes: str, a: argparse.Namespace) -> dict:
    """Train, evaluate and validate one flow; returns its metrics and timings."""
    run = Path(a.out) / passes
    train_s = None
    if not (run / "done.json").exists():
        train_s = galmass("train", "--config", str(ROOT / "configs" / "transfer.yaml"), f"--data.path={a.data}",
                          f"--train.epochs={a.epochs}", "--train.progress=false", f"--model.flow_passes={passes}",
                          f"--train.run_dir={run}", *(f"--{kv}" for kv in a.set))
    if not (run / "eval" / "metrics.json").exists():
        galmass("evaluate", "--run", str(run), "--data", a.test, "--out", str(run / "eval"))
    if not list(run.glob("validate-*/metrics.json")):
        galmass("validate", str(run))
    ev = json.loads((run / "eval" / "metrics.json").read_text())
    val = json.loads(next(run.glob("validate-*/metrics.json")).read_text())
    return {"eval": ev, "val": val, "train_s": train_s}


def rows(name: str, m: dict) -> list[str]:
    ev, out = m["eval"], []
    lv = np.array(ev["coverage"]["levels"])
    cov = np.array(ev["coverage"]["per_radius"])[:, int(np.argmin(np.abs(lv - 0.68)))]
    for k in SHOWN:
        vals = [f"{ev['cnn']['bias'][k]:+.3f}", f"{ev['cnn']['scatter'][k]:.3f}", f"{cov[k]:.2f}"]
        for n in ("100", "1000"):
            v = m["val"]["variants"][n]["cnn"]
            vals += [f"{v['bias'][k]:+.3f}", f"{v['rms'][k]:.3f}", f"{v['coverage68'][k]:.2f}"]
        out.append(f"| {name} | {0.6 + 0.2 * k:.1f} | " + " | ".join(vals) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="training dataset (made with configs/transfer.yaml)")
    ap.add_argument("--test", required=True, help="held-out dataset to evaluate on")
    ap.add_argument("--out", default="runs/passes")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override the dataset was made with, e.g. data.galaxies_per_cell=80 (repeatable)")
    a = ap.parse_args()
    res = {p: run_one(p, a) for p in ("null", "2")}
    lines = ["# Flow: fully autoregressive vs coupling layers (`model.flow_passes`)", "",
             f"Machine: {machine()}; load {load_average()}", "",
             f"Training data `{a.data}`, held-out test `{a.test}`; independent set: `galmass validate` (galpy DFs).",
             "Same network, data, seed and epochs; only `model.flow_passes` differs.", "",
             "| flow | NLL (held-out test) | TARP max error | validate: posterior sampling s (768 catalogues × 400) |",
             "|---|---|---|---|"]
    for p, m in res.items():
        lines.append(f"| passes {p} | {m['eval']['model_nll']:.3f} | {m['eval']['tarp']['max_abs_error']:.3f} | "
                     f"{m['val']['timing']['sampling_s']:.1f} |")
    lines += ["", "| flow | r / R_h | test bias | test scatter | test 68 % cov | indep. N★ 100 bias | RMS | 68 % cov "
              "| indep. N★ 1000 bias | RMS | 68 % cov |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, m in res.items():
        lines += rows(f"passes {p}", m)
    lines += ["", "Reproduce: `python benchmarks/flow_passes.py --data " + a.data + " --test " + a.test
              + "".join(f" --set '{kv}'" for kv in a.set) + "`."]
    write_result("flow_passes", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
