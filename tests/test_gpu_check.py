"""The CPU-runnable parts of benchmarks/gpu.sh + gpu_check.py: exact-rows batches, the bf16/fp32 split, per-check
isolation and flushing of the report, and the clean stop (exit 3) without a GPU. No GPU is needed anywhere."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
GPU_SH = REPO / "benchmarks" / "gpu.sh"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


gc = _load()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _selftest(tmp_path: Path, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, str]:
    report = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-selftest", "--report", str(report), "--work",
                           str(tmp_path / "work"), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env())
    return proc, report.read_text() if report.exists() else ""


def _rows(report: str) -> dict[str, str]:
    """check name -> result cell of the report's table."""
    rows = [ln.split(" | ") for ln in report.splitlines() if ln.startswith("| ") and not ln.startswith("| check")]
    return {r[0][2:]: r[1] for r in rows}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ------------------------------------------------------------------------------------------------ exact rows


def test_contiguous_runs():
    assert gc.contiguous_runs(np.array([3, 4, 5, 9, 10, 20])) == [(3, 6), (9, 11), (20, 21)]
    assert gc.contiguous_runs(np.array([], dtype=np.int64)) == []


def test_reader_returns_exactly_the_requested_rows(tmp_path):
    data = gc.make_data(tmp_path / "d", n=50, shard=16, npix=8)
    rng = np.random.default_rng(0)
    # shuffled indices over all shards, a contiguous run, and a repeat (the sampler pads by wrapping around)
    idx = np.concatenate([rng.permutation(50)[:13], [20, 21, 22], [7]])
    batch = data.get_batch(idx)
    shard_of = np.searchsorted(data.offsets, idx, side="right") - 1
    for key in gc.KEYS:
        assert batch[key].shape[0] == len(idx)
        with_h5py = []
        for i, s in zip(idx, shard_of):
            with h5py.File(data.files[s], "r") as fh:
                with_h5py.append(fh[key][int(i - data.offsets[s])])
        np.testing.assert_array_equal(batch[key], np.stack(with_h5py))  # exact copies: no tolerance
    # The indices are sparse within some shard, so the old span read rows[0]:rows[-1]+1 would have returned more
    # rows than requested: this test tells the two readers apart.
    spans = [np.ptp(idx[shard_of == s]) + 1 - len(np.unique(idx[shard_of == s])) for s in np.unique(shard_of)]
    assert max(spans) > 0


def test_batch_source_delivers_the_requested_batch_size(tmp_path):
    from hpc.dali_loader import BatchSource

    data = gc.make_data(tmp_path / "d", n=50, shard=16, npix=8)
    source = BatchSource(data, gc.KEYS, 8, 0, 1, seed=0)
    for step in range(source.steps_per_epoch):  # 7 steps, the last one padded by wrapping around
        gc.check_batch_size(source.batch(0, step), 8, f"step {step}")
    with pytest.raises(RuntimeError, match="requested 9"):
        gc.check_batch_size(source.batch(0, 0), 9, "wrong size")


# ------------------------------------------------------------------------------------------------ bf16 split


def _dtypes_under(model, fn) -> dict[str, set]:
    """dtypes of the outputs of the encoder convolutions and of the flow's linear layers while fn() runs."""
    seen: dict[str, set] = {"conv": set(), "flow": set()}
    hooks = []
    for name, mod in model.named_modules():
        kind = "conv" if isinstance(mod, torch.nn.Conv2d) else \
            "flow" if isinstance(mod, torch.nn.Linear) and ".flow" in f".{name}" else None
        if kind:
            hooks.append(mod.register_forward_hook(lambda m, i, o, k=kind: seen[k].add(o.dtype)))
    try:
        out = fn()
    finally:
        for h in hooks:
            h.remove()
    return seen, out


def test_split_runs_the_encoders_in_bf16_and_the_flow_in_fp32(monkeypatch):
    model, desc = gc.build_model(16, torch.device("cpu"))
    model.eval()
    b = gc.to_device(gc.synthetic_arrays(np.random.default_rng(3), 8, 16), torch.device("cpu"))
    cpu = torch.device("cpu")
    with torch.no_grad():
        # Without bf16 the split is the model's own forward, operation for operation (exact equality).
        torch.testing.assert_close(gc.split_nll(model, b, cpu, False), model(b), rtol=0, atol=0)
        # CPU bf16 autocast stands in for CUDA's: the split must keep the flow in fp32 ...
        monkeypatch.setattr(gc, "autocast", lambda device, bf16: torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=bf16))
        seen, nll = _dtypes_under(model, lambda: gc.split_nll(model, b, cpu, True))
        assert seen["conv"] == {torch.bfloat16} and nll.dtype == torch.float32, desc
        if "MassPosterior" in desc:  # the stand-in's head is a single Linear outside ".flow"
            assert seen["flow"] == {torch.float32}
            # ... and so does the model's own forward under autocast (MassPosterior leaves autocast for its flow),
            # while the encoders there do run in bf16: the probe tells the two apart.
            with torch.autocast("cpu", dtype=torch.bfloat16):
                seen_full, _ = _dtypes_under(model, lambda: model(b))
            assert seen_full["flow"] == {torch.float32} and seen_full["conv"] == {torch.bfloat16}


# ------------------------------------------------------------------------------------------------ the runner


def test_a_failing_and_a_hanging_check_leave_the_others_lines(tmp_path):
    # _hang's own limit of 8 s leaves it time to start Python + torch and write its pid on a loaded machine.
    proc, report = _selftest(tmp_path, "--checks", "_hang,_fail,data,model", "--limit", "_hang=8")
    assert proc.returncode == 1, proc.stderr  # 1: some check failed or timed out
    rows = _rows(report)
    assert list(rows) == ["_hang", "_fail", "data", "model"]
    assert rows["_hang"].startswith("TIMEOUT") and "8 s" in rows["_hang"]
    assert rows["_fail"].startswith("FAILED") and "deliberate failure" in rows["_fail"]
    assert "read with exactly 16 rows" in rows["data"]
    assert "split in fp32 == model(batch)" in rows["model"]
    assert _gone(int((tmp_path / "work" / "_hang.pid").read_text()))  # the timed-out check was killed
    assert "deliberate failure" in report.split("| model |")[1]  # the failure's stderr tail follows the table


def test_lines_are_on_disk_before_the_run_is_stopped(tmp_path):
    report, work = tmp_path / "report.md", tmp_path / "work"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--cpu-selftest", "--report", str(report), "--work",
                             str(work), "--checks", "device,_hang,data"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env())
    pid_file = work / "_hang.pid"
    try:
        for _ in range(600):  # the hanging check has started once its pid file exists (<= 60 s)
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        assert "| device | CPU self-test" in report.read_text()  # written before the run ends
        proc.send_signal(signal.SIGTERM)  # what gpu.sh's overall `timeout` does
        assert proc.wait(timeout=30) == 124, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = _rows(report.read_text())
    assert rows["device"].startswith("CPU self-test")
    assert rows["_hang"].startswith("INTERRUPTED") and rows["data"] == "not run: interrupted"
    assert _gone(int(pid_file.read_text()))


def test_selftest_refuses_the_real_report():
    assert gc.main(["--cpu-selftest", "--report", str(REPO / "benchmarks" / "results" / "gpu.md")]) == 2


@pytest.mark.slow
def test_full_cpu_selftest(tmp_path):
    proc, report = _selftest(tmp_path, timeout=300)
    assert proc.returncode == 0, report + proc.stderr
    rows = _rows(report)
    assert rows["nccl"].startswith("skipped") and "exactly" in rows["loader_w2"]
    assert rows["train_smoke"].startswith("1 epoch") or rows["train_smoke"].startswith("skipped")


# ------------------------------------------------------------------------------------------------ gpu.sh


def test_gpu_sh_stops_with_exit_3_without_a_gpu(tmp_path):
    real = REPO / "benchmarks" / "results" / "gpu.md"
    before = real.stat().st_mtime_ns if real.exists() else None
    for extra in ({"GALMASS_GPU_REPORT": str(tmp_path / "r.md")}, {}):
        proc = subprocess.run(["bash", str(GPU_SH)], capture_output=True, text=True, timeout=120,
                              env=_env(PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", **extra))
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "no CUDA GPU visible" in proc.stderr and "HINT" in proc.stderr
    assert not (tmp_path / "r.md").exists()
    assert (real.stat().st_mtime_ns if real.exists() else None) == before


def test_gpu_sh_assembles_the_report(tmp_path):
    """gpu.sh end to end with a Python that claims a GPU and runs the checks as a CPU self-test."""
    shim = tmp_path / "py"
    shim.write_text(f"""#!/usr/bin/env bash
if [ "${{1:-}}" = "-c" ] && [[ "$2" == *cuda.is_available* ]]; then exit 0; fi
if [[ "${{1:-}}" == *gpu_check.py ]]; then f=$1; shift; exec {sys.executable} "$f" --cpu-selftest "$@"; fi
exec {sys.executable} "$@"
""")
    shim.chmod(0o755)
    out = tmp_path / "gpu.md"
    proc = subprocess.run(["bash", str(GPU_SH), "--checks", "device,_fail"], capture_output=True, text=True,
                          timeout=120, env=_env(PYTHON=str(shim), GALMASS_GPU_REPORT=str(out)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = out.read_text()
    assert text.startswith("# GPU checks") and "| check | result | seconds |" in text
    assert _rows(text)["_fail"].startswith("FAILED") and "Exit status 1 " in text
