"""Tests for hpc.launchers (fake environment mappings) and hpc.dist (single process, real torchrun, real mpiexec)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from hpc.dist import (
    all_reduce_sum,
    autocast_context,
    barrier,
    broadcast_object,
    cleanup,
    get_info,
    init_distributed,
    is_main,
)
from hpc.launchers import (
    LauncherError,
    MpiEnv,
    SingleProcessEnv,
    SlurmEnv,
    TorchrunEnv,
    detect_launcher,
    expand_hostlist,
    first_host,
    requested_gpus_per_node,
    slurm_master_port,
)
from hpc.slurm_resources import (
    NodeGroup,
    Partition,
    Request,
    SlurmResourceError,
    UnknownPartition,
    largest_cpus_per_task,
    parse_gpus,
    parse_sinfo,
    parse_time_min,
    read_partition,
    shortfalls,
)
from hpc.sampler import GlobalBatchSampler

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------------
# Fake environments, as the launchers would set them
# ---------------------------------------------------------------------------------------------------------------
TORCHRUN = {
    "TORCHELASTIC_RUN_ID": "none", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29511",
}
SLURM = {
    "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "4", "SLURM_PROCID": "2",
    "SLURM_LOCALID": "0", "SLURM_NODEID": "1", "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_NNODES": "2",
    "SLURM_NODELIST": "gpu[07-08]",
}
OMPI = {
    "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
}
HYDRA = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2", "PMI_FD": "9"}

_LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "TORCHELASTIC_")
_LAUNCHER_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                  "MASTER_PORT")


def _is_launcher_key(key: str) -> bool:
    return key in _LAUNCHER_KEYS or key.startswith(_LAUNCHER_PREFIXES)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.environ without launcher variables (the test suite itself may run inside a SLURM job)."""
    for key in list(os.environ):
        if _is_launcher_key(key):
            monkeypatch.delenv(key)


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _is_launcher_key(k)}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # force gloo on CPU: the tests check the CPU path deterministically
    return env


# ---------------------------------------------------------------------------------------------------------------
# Detection order
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, SingleProcessEnv),
        (TORCHRUN, TorchrunEnv),
        # a manual export of the four torch.distributed variables counts as torchrun
        ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1234"},
         TorchrunEnv),
        (SLURM, SlurmEnv),
        ({**SLURM, **TORCHRUN}, TorchrunEnv),  # srun + torchrun: torchrun owns the ranks
        ({**SLURM, **HYDRA}, SlurmEnv),  # srun-launched MPI program: SLURM before MPI
        (OMPI, MpiEnv),
        (HYDRA, MpiEnv),
        ({**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_TASKS_PER_NODE": "1"}, SingleProcessEnv),
        ({k: v for k, v in SLURM.items() if k != "SLURM_PROCID"}, SingleProcessEnv),  # salloc shell, no srun
    ],
)
def test_detection_order(env, expected):
    launcher = detect_launcher(env)
    assert type(launcher) is expected


def test_interactive_slurm_shell_is_single_process_with_warning():
    env = {**SLURM, "SLURM_JOB_NAME": "interactive", "SLURM_PROCID": "0", "SLURM_NODEID": "0"}
    assert SlurmEnv.detect(env) is False
    with pytest.warns(UserWarning, match="interactive"):
        launcher = detect_launcher(env)
    assert isinstance(launcher, SingleProcessEnv)


def test_detect_reads_only_the_given_mapping_and_changes_nothing(monkeypatch):
    for k, v in TORCHRUN.items():
        monkeypatch.setenv(k, v)
    before = dict(os.environ)
    assert TorchrunEnv.detect({}) is False  # the mapping, not os.environ, decides
    assert TorchrunEnv.detect() is True  # default: os.environ
    assert SlurmEnv.detect(SLURM) is True
    launcher = detect_launcher(SLURM)
    _ = (launcher.rank, launcher.master_addr, launcher.master_port, launcher.local_world_size)
    assert dict(os.environ) == before


def test_launcher_snapshots_env():
    env = dict(TORCHRUN)
    launcher = TorchrunEnv(env)
    env["RANK"] = "0"
    assert launcher.rank == 3


# ---------------------------------------------------------------------------------------------------------------
# Rank properties
# ---------------------------------------------------------------------------------------------------------------
def test_torchrun_properties():
    t = detect_launcher(TORCHRUN)
    assert (t.rank, t.local_rank, t.world_size, t.local_world_size, t.node_rank) == (3, 1, 4, 2, 1)
    assert (t.master_addr, t.master_port) == ("10.0.0.5", 29511)


def test_torchrun_missing_port_warns_and_uses_default():
    env = {k: v for k, v in TORCHRUN.items() if k != "MASTER_PORT"}
    with pytest.warns(UserWarning, match="MASTER_PORT"):
        assert TorchrunEnv(env).master_port == 29500


def test_slurm_properties():
    s = detect_launcher(SLURM)
    assert (s.rank, s.local_rank, s.world_size, s.local_world_size, s.node_rank) == (2, 0, 4, 2, 1)
    assert s.master_addr == "gpu07"


def test_slurm_port_is_shared_by_all_tasks_and_depends_on_job():
    ports = {SlurmEnv({**SLURM, "SLURM_PROCID": str(r)}).master_port for r in range(4)}
    assert len(ports) == 1
    port = ports.pop()
    assert 12000 <= port < 32000  # below the Linux ephemeral range
    assert SlurmEnv({**SLURM, "SLURM_JOB_ID": "4243"}).master_port != port
    assert SlurmEnv({**SLURM, "MASTER_PORT": "23456"}).master_port == 23456


JOB_IDS = [0, 1, 4242, 19999, 20000, 31999, 987654, 2**31 - 1]


def _shell_port(job_id: str) -> subprocess.CompletedProcess:
    snippet = 'die() { echo "$*" >&2; exit 2; }; source slurm/_python.sh; galmass_master_port "$1"'
    return subprocess.run(["bash", "-c", snippet, "bash", job_id], cwd=REPO, capture_output=True, text=True)


def test_slurm_master_port_is_one_rule_in_python_and_shell():
    """slurm/_python.sh (used by slurm/train_ddp.sh) and SlurmEnv derive the same port from a job id."""
    for job in JOB_IDS:
        py = SlurmEnv({**SLURM, "SLURM_JOB_ID": str(job)}).master_port
        assert py == slurm_master_port(job) == 12000 + job % 20000  # the documented rule
        out = _shell_port(str(job))
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == py, job
        assert 12000 <= py < 32768  # below Linux's ephemeral port range
    # the rule the shell script had before (20000 + id % 20000) disagrees: the comparison can fail
    assert any(20000 + j % 20000 != slurm_master_port(j) for j in JOB_IDS)
    bad = _shell_port("12x")
    assert bad.returncode == 2 and "not a number" in bad.stderr
    with pytest.raises(ValueError, match="HINT"):
        slurm_master_port(-1)


def _fake_tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_train_ddp_script_exports_the_shared_port(tmp_path):
    """The whole sbatch script, up to srun (replaced by a stub printing what the ranks would get)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "srun", 'echo "MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT"; echo "ARGS $*"\n')
    # `scontrol show hostnames` of a large job: more than a pipe buffer (64 KiB) after the first host, so a reader
    # that stops after one line (head) makes it die of SIGPIPE, which `set -o pipefail` turns into an exit
    _fake_tool(bin_dir, "scontrol", 'echo node-a; seq 30000 | sed s/^/node-b/\n')
    job = 98765
    env = {**_subprocess_env(), "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ['PATH']}", "SLURM_JOB_ID": str(job), "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "2",
           "SLURM_NTASKS_PER_NODE": "2", "SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "2",
           "SLURM_JOB_NODELIST": "node-[a-b]", "GALMASS_PYTHON": sys.executable}
    proc = subprocess.run(["bash", "slurm/train_ddp.sh", "configs/quickstart.yaml", "--train.epochs=1"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"MASTER_ADDR=node-a MASTER_PORT={slurm_master_port(job)}" in proc.stdout
    assert f"--rdzv_endpoint=node-a:{slurm_master_port(job)}" in proc.stdout
    # checks at job start: more CPUs than the job holds on the node, and a bad override, stop before srun
    crowded = subprocess.run(["bash", "slurm/train_ddp.sh", "configs/quickstart.yaml"], cwd=REPO,
                             env={**env, "SLURM_CPUS_PER_TASK": "2"}, capture_output=True, text=True, timeout=120)
    assert crowded.returncode == 2 and "needs 4 CPUs on this node but the job holds 2" in crowded.stderr
    assert "MASTER_PORT" not in crowded.stdout
    typo = subprocess.run(["bash", "slurm/train_ddp.sh", "configs/quickstart.yaml", "--train.epoch=1"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2 and "Did you mean 'epochs'" in typo.stderr and "MASTER_PORT" not in typo.stdout


def test_slurm_master_addr_precedence():
    assert SlurmEnv({**SLURM, "MASTER_ADDR": "login7"}).master_addr == "login7"
    # the step's node list names where rank 0 of *this* srun runs
    env = {**SLURM, "SLURM_STEP_NODELIST": "gpu08", "SLURM_JOB_NODELIST": "gpu[01-08]"}
    assert SlurmEnv(env).master_addr == "gpu08"
    env = {k: v for k, v in SLURM.items() if k != "SLURM_NODELIST"} | {"SLURM_JOB_NODELIST": "cn[100-101]"}
    assert SlurmEnv(env).master_addr == "cn100"


def test_slurm_compressed_tasks_per_node():
    env = {**SLURM, "SLURM_NTASKS": "7", "SLURM_PROCID": "6", "SLURM_LOCALID": "0", "SLURM_NODEID": "3",
           "SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_NNODES": "4"}
    s = SlurmEnv(env)
    assert s.tasks_per_node() == [2, 2, 2, 1]
    assert s.local_world_size == 1
    assert s.max_local_world_size() == 2
    # a step's own layout takes precedence over the job's
    s2 = SlurmEnv({**env, "SLURM_STEP_TASKS_PER_NODE": "4,3", "SLURM_NODEID": "1"})
    assert s2.local_world_size == 3


def test_mpi_openmpi_and_hydra():
    for env in (OMPI, HYDRA):
        m = detect_launcher(env)
        assert (m.rank, m.world_size, m.local_rank, m.local_world_size) == (1, 2, 1, 2)
        assert m.master_addr == "127.0.0.1"  # single node
    assert MpiEnv({**HYDRA, "MASTER_ADDR": "n01"}).master_addr == "n01"
    with pytest.warns(UserWarning, match="MASTER_PORT"):
        assert MpiEnv(HYDRA).master_port == 29500
    assert MpiEnv({**HYDRA, "MASTER_PORT": "31000"}).master_port == 31000


def test_mpi_multinode_without_master_addr_is_readable_error():
    env = {**OMPI, "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    m = detect_launcher(env)
    assert m.node_rank == 1
    with pytest.raises(LauncherError, match=r"8 ranks.*HINT: export MASTER_ADDR"):
        _ = m.master_addr


def test_mpi_localrankid_without_global_rank():
    env = {"MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"}
    assert MpiEnv.detect(env)
    with pytest.raises(LauncherError, match="OMPI_COMM_WORLD_RANK, PMI_RANK"):
        detect_launcher(env)


# ---------------------------------------------------------------------------------------------------------------
# SLURM host lists
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "nodelist, first",
    [
        ("node01", "node01"),
        ("node[01-03,7]", "node01"),
        ("node[7,01-03]", "node7"),
        ("gpu[8-10]", "gpu8"),
        ("node[5]", "node5"),
        ("a1,b[2-3]", "a1"),
        ("c[009-011],d1", "c009"),
        ("rack[2-3]-n[08-10]", "rack2-n08"),
        ("n[1-2]-ib", "n1-ib"),
        ("host0 host1", "host0"),
    ],
)
def test_first_host(nodelist, first):
    assert first_host(nodelist) == first


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("node[01-03,7],gpu-a1", ["node01", "node02", "node03", "node7", "gpu-a1"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("r[1-2]x[1-2]", ["r1x1", "r1x2", "r2x1", "r2x2"]),
    ],
)
def test_expand_hostlist(nodelist, hosts):
    assert expand_hostlist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["node[01-03", "node01-03]", "node[a-c]", "node[5-3]", ""])
def test_bad_hostlist_is_readable(bad):
    with pytest.raises(LauncherError, match=r"host list"):
        expand_hostlist(bad)


# ---------------------------------------------------------------------------------------------------------------
# Inconsistent environments
# ---------------------------------------------------------------------------------------------------------------
def test_rank_not_below_world_size():
    with pytest.raises(LauncherError, match=r"rank 4 is outside \[0, world size 4\).*HINT"):
        detect_launcher({**TORCHRUN, "RANK": "4"})


def test_local_rank_without_rank():
    with pytest.raises(LauncherError, match="LOCAL_RANK is set without RANK.*HINT"):
        detect_launcher({"LOCAL_RANK": "0"})


def test_partial_torch_env():
    with pytest.raises(LauncherError, match=r"missing \['LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR'\]"):
        detect_launcher({"RANK": "0"})


def test_non_integer_variable_is_named():
    with pytest.raises(LauncherError, match=r"WORLD_SIZE='four'"):
        detect_launcher({**TORCHRUN, "WORLD_SIZE": "four"})


def test_slurm_more_tasks_per_node_than_gpus():
    env = {**SLURM, "SLURM_NTASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1",
           "SLURM_TASKS_PER_NODE": "8(x2)", "SLURM_GPUS_ON_NODE": "4"}
    with pytest.raises(LauncherError) as err:
        detect_launcher(env)
    msg = str(err.value)
    assert "8 processes per node" in msg and "4 GPUs per node" in msg
    assert "HINT: --ntasks-per-node=4" in msg


def test_slurm_gpu_check_uses_busiest_node_so_all_ranks_agree():
    # node 1 is fine (2 tasks, 4 GPUs) but node 0 has 6: both nodes must refuse, or node 1 would hang.
    env = {**SLURM, "SLURM_NTASKS": "8", "SLURM_PROCID": "7", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
           "SLURM_TASKS_PER_NODE": "6,2", "SLURM_GPUS_PER_NODE": "gpu:a100:4"}
    with pytest.raises(LauncherError, match="HINT: --ntasks-per-node=4"):
        detect_launcher(env)
    assert isinstance(detect_launcher({**env, "SLURM_GPUS_PER_NODE": "a100:8"}), SlurmEnv)


def test_validate_torchrun_gpu_geometry():
    t = TorchrunEnv(TORCHRUN)
    t.validate(0)  # CPU run: no GPU check
    t.validate(2)
    with pytest.raises(LauncherError, match=r"2 processes per node but only 1 GPUs.*HINT: --nproc_per_node=1"):
        t.validate(1)


@pytest.mark.parametrize(
    "env, n",
    [({}, 0), ({"SLURM_GPUS_ON_NODE": "4"}, 4), ({"SLURM_GPUS_PER_NODE": "a100:2"}, 2),
     ({"SLURM_GPUS_PER_NODE": "gpu:h100:8"}, 8), ({"SLURM_GPUS_PER_NODE": "weird"}, 0)],
)
def test_requested_gpus_per_node(env, n):
    assert requested_gpus_per_node(env) == n


# ---------------------------------------------------------------------------------------------------------------
# hpc.dist in a single process
# ---------------------------------------------------------------------------------------------------------------
def test_single_process_init_and_noop_helpers(clean_env):
    info = init_distributed(timeout_s=10)
    try:
        assert (info.rank, info.world_size, info.backend, info.launcher) == (0, 1, None, "single")
        assert info.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
        assert not torch.distributed.is_initialized()
        assert get_info() == info
        assert is_main()
        assert all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
        assert all_reduce_sum(3.0) == 3.0
        t = torch.tensor([1.0, 2.0])
        assert all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
        payload = {"a": 1}
        assert broadcast_object(payload) is payload
        barrier()
    finally:
        cleanup()
    assert get_info() is None
    cleanup()  # idempotent


def test_init_distributed_rejects_bad_arguments(clean_env, monkeypatch):
    with pytest.raises(ValueError, match="timeout_s"):
        init_distributed(timeout_s=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="HINT: use backend='gloo'"):
            init_distributed(backend="nccl")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(LauncherError, match="LOCAL_RANK is set without RANK"):
        init_distributed()


def test_autocast_context_cpu_is_plain_fp32():
    x = torch.ones(4, 4)
    ctx = autocast_context("cpu", enabled_bf16=True)
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        assert (x @ x).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_context_cuda_bf16():
    x = torch.ones(4, 4, device="cuda")
    with autocast_context(torch.device("cuda", 0), enabled_bf16=True):
        assert (x @ x).dtype == torch.bfloat16
    with autocast_context("cuda", enabled_bf16=False):
        assert (x @ x).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# Real multi-process launches
# ---------------------------------------------------------------------------------------------------------------
TORCHRUN_SCRIPT = """
import torch
import torch.distributed as dist
from hpc.atomic import atomic_write_json
from hpc.dist import all_reduce_sum, barrier, broadcast_object, cleanup, init_distributed, is_main
from hpc.launchers import detect_launcher
from hpc.sampler import GlobalBatchSampler

launcher = detect_launcher()
info = init_distributed(timeout_s=60)
sums = all_reduce_sum([float(info.rank + 1), 1.0])
tensor = all_reduce_sum(torch.tensor([10.0 ** info.rank]))
token = broadcast_object(f"token-from-rank-{info.rank}")
sampler = GlobalBatchSampler(n_samples=13, global_batch=4, rank=info.rank, world_size=info.world_size, seed=3)
sampler.set_epoch(2)
slices = [None] * info.world_size
dist.all_gather_object(slices, list(sampler))
barrier()
atomic_write_json(f"result-{info.rank}.json", {
    "launcher": type(launcher).__name__, "rank": launcher.rank, "world": launcher.world_size,
    "local_rank": launcher.local_rank, "info_rank": info.rank, "backend": info.backend,
    "group_world": dist.get_world_size(), "sums": sums, "tensor": tensor.tolist(), "token": token,
    "is_main": is_main(), "slices": slices,
})
cleanup()
"""


def _results(directory: Path) -> list[dict]:
    # One file per rank (written atomically by the rank): launchers multiplex the ranks' stdout and may
    # interleave partial lines, so stdout is kept for error messages only.
    return [json.loads(p.read_text()) for p in sorted(directory.glob("result-*.json"))]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    script = tmp_path / "ddp_check.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    proc = subprocess.run(cmd, env=_subprocess_env(), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = sorted(_results(tmp_path), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert r["launcher"] == "TorchrunEnv"
        assert r["world"] == r["group_world"] == 2
        assert r["local_rank"] == r["rank"] == r["info_rank"]
        assert r["backend"] == "gloo"
        assert r["sums"] == [1.0 + 2.0, 2.0]
        assert r["tensor"] == [1.0 + 10.0]
        assert r["token"] == "token-from-rank-0"
        assert r["is_main"] == (r["rank"] == 0)
    # the two ranks' slices of each step, concatenated, are the 1-rank global batch of that step
    single = GlobalBatchSampler(n_samples=13, global_batch=4, rank=0, world_size=1, seed=3)
    single.set_epoch(2)
    slices = results[0]["slices"]
    assert [a + b for a, b in zip(slices[0], slices[1])] == list(single)


MPI_SCRIPT = """
from hpc.atomic import atomic_write_json
from hpc.launchers import detect_launcher
launcher = detect_launcher()
from hpc.dist import all_reduce_sum, cleanup, init_distributed
info = init_distributed(timeout_s=60)
total = all_reduce_sum([float(info.rank + 1)])
atomic_write_json(f"result-{info.rank}.json", {
    "launcher": type(launcher).__name__, "rank": launcher.rank, "world": launcher.world_size,
    "local_rank": launcher.local_rank, "local_world": launcher.local_world_size,
    "master": launcher.master_addr, "backend": info.backend, "total": total,
})
cleanup()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.mpi
def test_mpiexec_two_ranks(tmp_path):
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip(f"no mpiexec next to {sys.executable} (install the 'mpich' wheel to run this test)")
    script = tmp_path / "mpi_check.py"
    script.write_text(textwrap.dedent(MPI_SCRIPT))
    env = _subprocess_env()
    env["MASTER_PORT"] = str(_free_port())  # MPI has no job id to derive a port from; avoid clashing with others
    proc = subprocess.run([str(mpiexec), "-n", "2", sys.executable, str(script)], env=env,
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = sorted(_results(tmp_path), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert r["launcher"] == "MpiEnv"
        assert (r["world"], r["local_world"], r["local_rank"]) == (2, 2, r["rank"])
        assert r["master"] == "127.0.0.1"
        assert r["backend"] == "gloo"
        assert r["total"] == [1.0 + 2.0]


def test_warnings_module_untouched():
    # detect_launcher on a clean mapping must not emit anything (warnings are reserved for real fallbacks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detect_launcher({})
        detect_launcher(SLURM)
        detect_launcher(TORCHRUN)


# ---------------------------------------------------------------------------------------------------------------
# hpc.slurm_resources: what a partition can hold (canned sinfo output)
# ---------------------------------------------------------------------------------------------------------------
# sinfo -h -e -o '%P|%c|%m|%G|%D|%l|%s' on a small site: 2-CPU default partition, GPU nodes of two sizes, a
# partition with a 2-node job limit; the "cpu" nodes appear twice (idle and allocated lines).
SINFO = """\
debug*|2|19284|(null)|1|infinite|1-infinite
gpu|32|256000|gpu:a100:4(S:0-1)|6|2-00:00:00|1-infinite
gpu|64|512000|gpu:a100:8(S:0-1),mps:400|2|2-00:00:00|1-infinite
cpu|128|512000|(null)|10|4:00:00|1-2
cpu|128|512000|(null)|30|4:00:00|1-2
"""


def test_parse_sinfo_groups_and_limits():
    parts = parse_sinfo(SINFO)
    assert set(parts) == {"debug", "gpu", "cpu"} and parts["debug"].default and not parts["gpu"].default
    assert parts["debug"].groups == (NodeGroup(cpus=2, mem_mb=19284, gpus=0, count=1),)
    assert sorted(parts["gpu"].groups, key=lambda g: g.cpus) == [NodeGroup(32, 256000, 4, 6),
                                                                  NodeGroup(64, 512000, 8, 2)]
    assert parts["cpu"].groups == (NodeGroup(128, 512000, 0, 40),) and parts["cpu"].nodes == 40  # lines merged
    assert parts["gpu"].max_time_min == 2 * 1440 and parts["cpu"].max_time_min == 240
    assert parts["cpu"].max_nodes == 2 and parts["debug"].max_nodes == float("inf")
    with pytest.raises(SlurmResourceError, match="7 '|'-separated columns"):
        parse_sinfo("debug*|2|1000\n")
    with pytest.raises(SlurmResourceError, match="CPUs"):
        parse_sinfo("debug*|two|1000|(null)|1|infinite|1-infinite\n")


@pytest.mark.parametrize("gres, n", [("(null)", 0), ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:tesla", 1),
                                     ("gpu:a100:2(S:0,1),gpu:v100:1", 3), ("mps:100", 0), ("", 0)])
def test_parse_gpus(gres, n):
    assert parse_gpus(gres) == n


@pytest.mark.parametrize("text, minutes", [("infinite", float("inf")), ("1-12:00:00", 2160), ("4:00:00", 240),
                                           ("30:00", 30), ("45", 45), ("2-06", 2 * 1440 + 6 * 60),
                                           ("0:00:30", 0.5)])
def test_parse_time_min(text, minutes):
    assert parse_time_min(text) == minutes
    with pytest.raises(SlurmResourceError, match="HINT"):
        parse_time_min("soon")


def test_shortfalls_name_what_no_node_can_hold():
    parts = parse_sinfo(SINFO)
    debug, gpu, cpu = parts["debug"], parts["gpu"], parts["cpu"]
    assert shortfalls(Request(), debug) == []
    assert shortfalls(Request(tasks_per_node=2), debug) == []  # exactly the node
    short = shortfalls(Request(cpus_per_task=4), debug)  # the README's sweep on the 2-CPU cluster
    assert [s.what for s in short] == ["cpus"] and "4 CPUs per node" in str(short[0]) and "has 2" in str(short[0])
    assert [s.what for s in shortfalls(Request(gpus_per_node=1), debug)] == ["gpus"]
    assert [s.what for s in shortfalls(Request(mem_mb=20000), debug)] == ["mem"]
    assert [s.what for s in shortfalls(Request(nodes=2), debug)] == ["nodes"]
    assert [s.what for s in shortfalls(Request(nodes=3), cpu)] == ["nodes"]  # MaxNodes 2 of 40
    assert [s.what for s in shortfalls(Request(time_min=300), cpu)] == ["time"]
    assert shortfalls(Request(time_min=240), cpu) == []
    # each fits alone, but only the 2 big GPU nodes hold 8 GPUs: 3 such nodes cannot be had
    assert shortfalls(Request(nodes=2, tasks_per_node=8, gpus_per_node=8), gpu) == []
    assert [s.what for s in shortfalls(Request(nodes=3, tasks_per_node=8, gpus_per_node=8), gpu)] == ["node"]


def test_largest_cpus_per_task():
    parts = parse_sinfo(SINFO)
    assert largest_cpus_per_task(Request(cpus_per_task=4), parts["debug"]) == 2
    assert largest_cpus_per_task(Request(tasks_per_node=2, cpus_per_task=4), parts["debug"]) == 1
    assert largest_cpus_per_task(Request(cpus_per_task=1), parts["debug"]) == 1  # never raised
    # 4 GPU tasks per node on the 32-CPU GPU nodes: 8 CPUs each; 3 nodes need the smaller nodes too
    assert largest_cpus_per_task(Request(nodes=3, tasks_per_node=4, gpus_per_node=4, cpus_per_task=16),
                                 parts["gpu"]) == 8
    assert largest_cpus_per_task(Request(tasks_per_node=3), parts["debug"]) == 0  # 3 tasks never fit 2 CPUs
    assert largest_cpus_per_task(Request(gpus_per_node=1, cpus_per_task=2), parts["debug"]) == 0


def test_read_partition_default_unknown_and_failures():
    calls = []

    def fake_run(args, **kw):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, SINFO, "")

    assert read_partition("", run=fake_run).name == "debug"  # the '*' one
    assert read_partition("gpu", run=fake_run).nodes == 8
    assert calls[0][1:] == ["--noheader", "--exact", "--format", "%P|%c|%m|%G|%D|%l|%s"]
    with pytest.raises(UnknownPartition, match=r"'gpus' does not exist \(sinfo lists: debug\*, gpu, cpu\)"):
        read_partition("gpus", run=fake_run)

    def failing(args, **kw):
        return subprocess.CompletedProcess(args, 1, "", "Unable to contact slurm controller")

    with pytest.raises(SlurmResourceError, match="Unable to contact") as err:
        read_partition("", run=failing)
    assert not isinstance(err.value, UnknownPartition)

    def no_default(args, **kw):
        return subprocess.CompletedProcess(args, 0, "gpu|32|1000|gpu:4|1|infinite|1-infinite\n", "")

    with pytest.raises(UnknownPartition, match="no default partition"):
        read_partition("", run=no_default)
    assert Partition("x", (NodeGroup(2, 10, 0, 1),)).describe() == \
        "partition 'x': 1 node(s) × 2 CPUs, 10 MB, 0 GPUs; no time limit"


@pytest.mark.parametrize("world", ["1", "2"])
def test_exit_worker_runs_atexit_and_keeps_the_exit_code(world, tmp_path):
    """As one of several torchrun ranks the script leaves by os._exit (no interpreter finalisation, where a live gloo
    thread can abort the process); the atexit handlers and buffered output must still run/appear, alone as in a job."""
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("""
        import atexit, sys, threading, time
        from hpc.dist import exit_worker
        atexit.register(lambda: print("atexit ran", flush=True))
        # a live non-daemon thread: a normal exit waits for it, os._exit does not
        threading.Thread(target=lambda: (time.sleep(2), print("thread done", end=" "))).start()
        print("buffered", end=" ")
        sys.stderr.write("to stderr")
        exit_worker(3)
        print("not reached")
    """))
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"}}
    env.update({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": world, "LOCAL_WORLD_SIZE": world,
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"} if world != "1" else {})
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    waited = "thread done " if world == "1" else ""
    assert proc.stdout == f"buffered {waited}atexit ran\n" and proc.stderr == "to stderr"
