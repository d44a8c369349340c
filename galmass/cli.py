"""The ``galmass`` command: mock | ingest | train | evaluate | validate | calibrate | report | predict | ship |
ensemble | population | sweep | demo.

Every subcommand that takes ``--config`` also takes ``--section.key=value`` overrides (strictly checked before any
work starts). Heavy imports (torch, h5py) happen inside the subcommands so ``galmass --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from galmass.config import ConfigError, DataConfig, load_config
from galmass.predict import add_arguments as add_predict_arguments

__all__ = ["main"]


def _no_overrides(command: str, overrides: list[str], hint: str = "") -> None:
    """Commands without a run config refuse ``--section.key=value`` arguments instead of ignoring them."""
    if overrides:
        raise ConfigError(f"command line: galmass {command} takes no overrides{hint}, got {overrides}")


def _cmd_mock(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.mocks.generate import generate_dataset

    cfg = load_config(args.config, overrides)
    if (args.task_id is None) != (args.num_tasks is None):
        raise ConfigError("command line: --task-id and --num-tasks go together (a SLURM array: "
                          "--task-id $SLURM_ARRAY_TASK_ID --num-tasks $SLURM_ARRAY_TASK_COUNT)")
    path = generate_dataset(cfg.data, workers=args.workers, task_id=args.task_id, num_tasks=args.num_tasks,
                            merge=args.merge)
    if args.num_tasks is not None:
        print(f"[galmass] array task {args.task_id}/{args.num_tasks}: shards written to {path}; run "
              "`galmass mock --merge` with the same config when all tasks are done")
        return 0
    counts = json.loads(path.read_text())["counts"]
    print(f"[galmass] dataset {path.parent}: {counts['train']} train / {counts['val']} val / {counts['test']} test "
          f"projections ({counts['galaxies_train']}/{counts['galaxies_val']}/{counts['galaxies_test']} galaxies)")
    return 0


def _cmd_ingest(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.snapshots.ingest import ingest_snapshot, parse_centre
    from galmass.snapshots.tipsy import parse_tipsy_units

    cfg = load_config(args.config, overrides)
    if (args.task_id is None) != (args.num_tasks is None):
        raise ConfigError("command line: --task-id and --num-tasks go together (a SLURM array: "
                          "--task-id $SLURM_ARRAY_TASK_ID --num-tasks $SLURM_ARRAY_TASK_COUNT)")
    if args.halos is None and (args.num_tasks is not None or args.max_halos is not None):
        raise ConfigError("command line: --task-id/--num-tasks/--max-halos select haloes of --halos FILE")
    if args.halos is not None and args.centre is not None:
        raise ConfigError("command line: give either --centre (one halo) or --halos FILE (several), not both")
    try:
        units = {"paramfile": args.paramfile,
                 "tipsy_units": parse_tipsy_units(args.tipsy_units) if args.tipsy_units else None}
        if args.halos is not None:
            return _ingest_halo_list(args, cfg.data, units)
        centre = parse_centre(args.centre) if args.centre else None
        path = ingest_snapshot(args.snapshot, args.out, cfg.data, centre=centre, **units)
    except (ValueError, FileExistsError) as err:  # SnapshotError is a ValueError: it names the file and field
        print(f"galmass ingest: error: {err}", file=sys.stderr)
        return 2
    manifest = json.loads(path.read_text())
    r_conv = manifest["source"]["convergence_radius_kpc"]
    print(f"[galmass] ingested {args.snapshot} → {path.parent}: {manifest['counts']['test']} projections "
          f"(R200 = {manifest['source']['r200_kpc']:.1f} kpc, r_conv = "
          f"{'n/a' if r_conv is None else format(r_conv, '.3g')} kpc, "
          f"{manifest['source']['convergence']['labels_flagged']} labels flagged)")
    return 0


def _ingest_halo_list(args: argparse.Namespace, data_cfg: DataConfig, units: dict[str, object]) -> int:
    """``galmass ingest --halos``: one dataset per halo under --out/halo-<k>/; exit 2 if any halo failed."""
    from galmass.snapshots.halos import ingest_halos

    results = ingest_halos(args.snapshot, args.halos, args.out, data_cfg, max_halos=args.max_halos,
                           task_id=args.task_id, num_tasks=args.num_tasks, **units)
    for k, manifest, status in results:
        stream = sys.stderr if status.startswith("failed") else sys.stdout
        print(f"[galmass] halo {k}: {status}{'' if manifest is None else f' → {manifest.parent}'}", file=stream)
    failed = [k for k, _, status in results if status.startswith("failed")]
    task = "" if args.num_tasks is None else f" (array task {args.task_id}/{args.num_tasks})"
    print(f"[galmass] {len(results) - len(failed)} of {len(results)} haloes done{task} under {args.out}")
    if failed:
        print(f"galmass ingest: error: haloes {failed} of {args.halos} failed (reasons above)", file=sys.stderr)
        return 2
    return 0


def _cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.train import main as train_main

    return train_main((["--config", args.config] if args.config else []) + overrides)


def _cmd_evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.evaluate import main as eval_main

    _no_overrides("evaluate", overrides)
    argv = ["--run", args.run]
    for flag in ("data", "split", "out", "samples"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    return eval_main(argv)


def _cmd_report(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.report import write_report

    _no_overrides("report", overrides)
    dirs = []
    for d in args.eval:
        d = Path(d)
        if (d / "metrics.json").exists():
            dirs.append(d)
        else:  # a run directory: take its evaluations
            found = sorted(d.glob("eval-*/metrics.json"))
            if not found:
                raise FileNotFoundError(f"{d}: no metrics.json (nor eval-*/metrics.json). HINT: run galmass evaluate")
            dirs += [f.parent for f in found]
    path = write_report(dirs, Path(args.out), title=args.title)
    print(f"[galmass] report: {path}")
    return 0


def _cmd_predict(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.predict import run

    _no_overrides("predict", overrides, " (the model's config is fixed by --run or the shipped model)")
    return run(args)


def _cmd_validate(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.validate import run as validate_run

    _no_overrides("validate", overrides, " (the model's config is fixed by RUN)")
    return validate_run(args)


def _cmd_sweep(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.sweep import main as sweep_main

    _no_overrides("sweep", overrides, " (put them in the sweep YAML)")
    argv = [args.sweep] + (["--dry-run"] if args.dry_run else []) + (["--wait"] if args.wait else [])
    return sweep_main(argv + (["--executor", args.executor] if args.executor else []))


def _cmd_ship(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.pretrained.ship import ship_model

    _no_overrides("ship", overrides)
    card = ship_model(args.run, args.name)
    print(f"[galmass] shipped {args.run}/best.pt as {card.with_name(args.name + '.pt')} with {card}")
    return 0


def _cmd_population(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.population import run as population

    _no_overrides("population", overrides)
    return population(args)


def _cmd_calibrate(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.calibrate import run as calibrate

    _no_overrides("calibrate", overrides)
    return calibrate(args)


def _cmd_ensemble(args: argparse.Namespace, overrides: list[str]) -> int:
    from galmass.models.combine import combine_runs

    _no_overrides("ensemble", overrides)
    prov = combine_runs(args.runs, args.out)
    print(f"[galmass] wrote {prov.with_name('best.pt')}: a {len(args.runs)}-run ensemble (members: {prov})")
    return 0


def _cmd_demo(args: argparse.Namespace, overrides: list[str]) -> int:
    """Generate → torchrun training per tracer → evaluate → report, on the embedded mock suites."""
    from galmass.mocks.generate import generate_dataset
    from galmass.evaluate import evaluate
    from galmass.report import write_report

    cfg = load_config(args.config, overrides)  # validates everything before any work
    tracers = [t.strip() for t in args.tracers.split(",") if t.strip()]
    for t in tracers:
        load_config(args.config, overrides + [f"--model.tracer={t}"])
    out_root = Path(args.out)
    print(f"[galmass] 1/4 mock suites → {cfg.data.path}", flush=True)
    generate_dataset(cfg.data)
    eval_dirs = []
    for i, tracer in enumerate(tracers):
        run_dir = out_root / tracer.replace("+", "_")
        run_over = overrides + [f"--model.tracer={tracer}", f"--train.run_dir={run_dir}"]
        print(f"[galmass] 2/4 training '{tracer}' with {args.nproc} process(es) → {run_dir}", flush=True)
        cmd = [sys.executable, "-m", "galmass.train"]
        if args.nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                   "-m", "galmass.train"]
        cmd += (["--config", args.config] if args.config else []) + run_over
        env = dict(os.environ)
        rc = subprocess.call(cmd, env=env)
        if rc != 0:
            print(f"[galmass] training '{tracer}' failed (exit {rc}); rerun the same command to resume.",
                  file=sys.stderr)
            return rc
        print(f"[galmass] 3/4 evaluating '{tracer}' on held-out galaxies", flush=True)
        eval_dirs.append(evaluate(run_dir))
    print("[galmass] 4/4 report", flush=True)
    path = write_report(eval_dirs, out_root / "report", title="galmass quick start: embedded mock suites")
    print(f"[galmass] report: {path.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galmass", description="Mass profiles of galaxies from kinematics.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("mock", help="generate the mock suites as a sharded HDF5 dataset")
    p.add_argument("--config", default=None)
    p.add_argument("--workers", type=int, default=None, help="processes (default: data.workers, 0 = all cores)")
    p.add_argument("--task-id", type=int, default=None,
                   help="array task index I: write only shards with index %% N == I")
    p.add_argument("--num-tasks", type=int, default=None, help="number N of array tasks")
    p.add_argument("--merge", action="store_true", help="after all array tasks: check the shards, write the manifest")
    p.set_defaults(func=_cmd_mock)

    p = sub.add_parser("ingest", help="turn a Gadget/Arepo/GIZMO HDF5 or tipsy snapshot into a dataset (same "
                       "shards as mocks)")
    p.add_argument("--snapshot", required=True, help="snap_NNN.hdf5, snapdir_NNN/, snapdir_NNN/snap_NNN.0.hdf5 or "
                   "a tipsy file (format detected from the file)")
    p.add_argument("--centre", default=None, help="halo centre x,y,z in the snapshot's units (Gadget: ckpc/h; "
                   "tipsy: code lengths); default: shrinking spheres")
    p.add_argument("--halos", default=None, help="several haloes: an .AHF_halos file or a list of centres x,y,z "
                   "(one per line, snapshot units); one dataset per halo under OUT/halo-<k>/")
    p.add_argument("--max-halos", type=int, default=None, help="with --halos: the first N (AHF: the N most massive)")
    p.add_argument("--task-id", type=int, default=None, help="with --halos: array task I ingests haloes k %% N == I")
    p.add_argument("--num-tasks", type=int, default=None, help="number N of array tasks")
    p.add_argument("--paramfile", default=None, help="tipsy: the run's .param file (default: *.param next to the "
                   "snapshot or in its parent directory)")
    p.add_argument("--tipsy-units", default=None, help="tipsy without .param: length_kpc=L,mass_msun=M,h=H,"
                   "omega_m=OM,omega_l=OL (dKpcUnit [comoving kpc], dMsolUnit [Msun], cosmology)")
    p.add_argument("--out", required=True, help="output dataset directory (with --halos: the parent of halo-<k>/)")
    p.add_argument("--config", default=None)
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("train", help="train a model (single process; or use torchrun -m galmass.train)")
    p.add_argument("--config", default=None)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run on held-out galaxies")
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--split", default=None, choices=["train", "val", "test"])
    p.add_argument("--out", default=None)
    p.add_argument("--samples", type=int, default=None)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="markdown + PNG report from evaluation directories or run directories")
    p.add_argument("eval", nargs="+", help="evaluation directories (with metrics.json) or run directories")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="galmass report")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("predict", help="posterior mass profiles of observed star catalogues (one or many galaxies)")
    add_predict_arguments(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("validate", help="grade a trained run on the independent galpy validation set")
    p.add_argument("run", help="trained run directory (best.pt)")
    p.add_argument("--set", default=None, help="validation set .npz (default: cached, generated on first use)")
    p.add_argument("--set-name", default=None,
                   help="which set: 'default' (if not given), or 'sealed' (other haloes, light profiles and survey; "
                        "README); with --set, the file must hold that set")
    p.add_argument("--n-stars", default=None, help="N★ variants, e.g. 100,1000 (default: all in the set); other "
                   "sizes, e.g. 30, grade the set's galaxies drawn again at those sizes (a set of its own)")
    p.add_argument("--samples", type=int, default=400, help="posterior draws per catalogue")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (default RUN/validate-<set name>)")
    p.add_argument("--regenerate", action="store_true", help="regenerate the set even if it exists")
    p.add_argument("--workers", type=int, default=None, help="processes for generating the set")
    p.add_argument("--marginalise", action="store_true",
                   help="leave the binary/foreground fractions unstated (models with observer inputs)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("sweep", help="grid of runs (tracer × suite × …) as one SLURM array (submitit) + report")
    p.add_argument("sweep", help="sweep YAML (see slurm/sweep_tracer_suite.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and what would be submitted")
    p.add_argument("--executor", choices=["auto", "slurm", "local", "debug"], default=None)
    p.add_argument("--wait", action="store_true", help="with SLURM: wait until the report is written")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("ship", help="put a finished run's model into the package as a pretrained model + card")
    p.add_argument("run", help="finished run directory (best.pt, done.json, eval-test/ and validate-*/ if any)")
    p.add_argument("--name", default="stars", help="model name (galmass/pretrained/<name>.pt)")
    p.set_defaults(func=_cmd_ship)

    p = sub.add_parser("calibrate", help="temper a trained stars model's posteriors as a function of N★, fitted on "
                       "its validation split; writes a new run directory")
    p.add_argument("run", help="finished run directory (best.pt)")
    p.add_argument("--out", required=True, help="new directory for the calibrated best.pt and calibration.md")
    p.add_argument("--draws", type=int, default=100, help="posterior draws per validation catalogue")
    p.add_argument("--narrow", action="store_true", help="also narrow posteriors where the fit asks (default: widen "
                   "only, never narrower than trained)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("population", help="re-weight a trained model's posteriors to the mass-profile prior of a "
                       "population, learnt from its unlabelled catalogues; writes a new run directory")
    p.add_argument("--run", default=None, help="finished run directory (default: a shipped model)")
    p.add_argument("--model", default=None, help="name of a shipped model (default: stars)")
    p.add_argument("--target", required=True, help="the population: star catalogue(s) in predict's format (a CSV "
                   "with a galaxy column, or a directory of CSVs) or a dataset directory")
    p.add_argument("--out", required=True, help="new directory for the adapted best.pt and population.md")
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="split of a dataset target")
    p.add_argument("--features", type=int, default=1, help="shape components of the profile tilted (1: the inner "
                   "slope; 2: and the curvature)")
    p.add_argument("--draws", type=int, default=200, help="posterior draws per target catalogue")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="write a tilt that fails the checks (split-half agreement, "
                   "effective draws); recorded")
    p.set_defaults(func=_cmd_population)

    p = sub.add_parser("ensemble", help="one mixture model (deep ensemble) from finished runs trained with different "
                       "seeds on the same dataset")
    p.add_argument("runs", nargs="+", help="finished run directories (best.pt, done.json)")
    p.add_argument("--out", required=True, help="new directory for the combined best.pt and ensemble.json")
    p.set_defaults(func=_cmd_ensemble)

    p = sub.add_parser("demo", help="mock → torchrun training per tracer → evaluate → report")
    p.add_argument("--config", default=None)
    p.add_argument("--tracers", default="stars,gas,gas+stars")
    p.add_argument("--nproc", type=int, default=2, help="training processes (torchrun) per model")
    p.add_argument("--out", default="runs/quickstart")
    p.set_defaults(func=_cmd_demo)

    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--") or "=" not in o]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (overrides look like --section.key=value)")
    try:
        return args.func(args, overrides)
    except ConfigError as err:
        print(f"galmass {args.command}: config error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - user-facing errors become one message and exit 2; the rest propagate
        if not isinstance(err, _user_errors()):
            raise
        print(f"galmass {args.command}: error: {err}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a user's input or environment (their messages name the file and the fix)."""
    from galmass.calibrate import CalibrationError
    from galmass.catalogue import CatalogueError
    from galmass.datasets.reader import DatasetError
    from galmass.models.combine import EnsembleError
    from galmass.population import PopulationError
    from hpc.atomic import DiskFullError
    from hpc.checkpoint import CheckpointError
    from hpc.lock import LockedError

    return (CalibrationError, CatalogueError, DatasetError, EnsembleError, PopulationError, DiskFullError,
            CheckpointError, LockedError, FileNotFoundError, FileExistsError)


if __name__ == "__main__":
    sys.exit(main())
