"""Mock generation never mixes configs and never trusts a damaged shard (issue: reruns into one directory)."""

from __future__ import annotations

import json
import shutil
import sys

import h5py
import pytest

from conftest import TINY_DATA, run_cmd
from galmass.config import data_hash, load_config
from galmass.datasets import DatasetError, ShardedDataset, load_manifest
from galmass.mocks.generate import generate_dataset, plan_shards
from galmass.mocks.suites import CONFIG_DIR


def _cfg(path, *extra):
    return load_config(None, TINY_DATA + [f"--data.path={path}", *extra]).data


def _flip_byte(path, offset_from_end: int = 200) -> None:
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("change", ["--data.n_stars=[1000,1000]", "--data.npix=8", "--data.dtype=float16"])
def test_interrupted_generation_rerun_with_another_config_is_refused(tmp_path, change):
    out = tmp_path / "d"
    generate_dataset(_cfg(out), workers=1, progress=False, task_id=0, num_tasks=4)  # "killed" after a quarter
    before = sorted(p.name for p in out.glob("shard-*.h5"))
    key = change.split("=")[0][2:]
    with pytest.raises(DatasetError, match=rf"unfinished generation with a different data config.*{key}"):
        generate_dataset(_cfg(out, change), workers=1, progress=False)
    with pytest.raises(DatasetError, match=key):  # merge uses the same check
        generate_dataset(_cfg(out, change), merge=True, progress=False)
    assert sorted(p.name for p in out.glob("shard-*.h5")) == before  # nothing written, nothing overwritten
    proc = run_cmd([sys.executable, "-m", "galmass", "mock", *TINY_DATA, f"--data.path={out}", change], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and key in proc.stderr


def test_every_shard_and_the_manifest_carry_the_config_hash(tiny_dataset):
    m = load_manifest(tiny_dataset)
    h = data_hash(_cfg(tiny_dataset))
    assert m["config_hash"] == h and all(e["config_hash"] == h for e in m["shards"])
    for e in m["shards"]:
        with h5py.File(tiny_dataset / e["file"], "r") as fh:
            assert fh.attrs["config_hash"] == h


def test_corrupt_shard_is_refused_then_repaired_bit_identically_by_rerunning_mock(tiny_dataset, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_dataset, out)
    m = load_manifest(out)
    victim = next(e for e in m["shards"] if e["split"] == "val")
    _flip_byte(out / victim["file"])
    with pytest.raises(DatasetError, match="checksum mismatch.*rerun `galmass mock`"):
        ShardedDataset(out, "val")
    proc = run_cmd([sys.executable, "-m", "galmass", "mock", *TINY_DATA, f"--data.path={out}", "--workers", "1"])
    assert "regenerating" in proc.stdout
    ShardedDataset(out, None)  # verifies every checksum
    assert load_manifest(out)["shards"] == m["shards"]


def test_without_the_manifest_a_corrupt_shard_is_regenerated_not_accepted(tiny_dataset, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_dataset, out)
    ref = load_manifest(out)
    (out / "manifest.json").unlink()
    _flip_byte(out / ref["shards"][2]["file"])
    (out / ".receipts" / "shard-00003.json").unlink()  # a shard without its receipt is never trusted either
    generate_dataset(_cfg(out), workers=1, progress=False)
    assert [e["sha256"] for e in load_manifest(out)["shards"]] == [e["sha256"] for e in ref["shards"]]


def test_foreign_shard_with_a_receipt_of_another_plan_is_refused(tiny_dataset, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_dataset, out)
    (out / "manifest.json").unlink()
    receipt = out / ".receipts" / "shard-00000.json"
    entry = json.loads(receipt.read_text())
    entry["config_hash"] = "0" * 16
    receipt.write_text(json.dumps(entry))
    with pytest.raises(DatasetError, match="another config or plan"):
        generate_dataset(_cfg(out), workers=1, progress=False)


def test_plan_counts_match_the_manifest(tiny_dataset):
    assert len(plan_shards(_cfg(tiny_dataset))) == len(load_manifest(tiny_dataset)["shards"])


def test_edited_recipe_changes_the_hash_and_is_refused_on_resume(tmp_path):
    """A suite file edited between two runs makes other galaxies under the same name: never mixed."""
    recipe = tmp_path / "my_suite.yaml"
    shutil.copyfile(CONFIG_DIR / "suites" / "compact.yaml", recipe)
    out = tmp_path / "d"
    suites = f"--data.suites=[{recipe}]"
    before = data_hash(_cfg(out, suites))
    generate_dataset(_cfg(out, suites), workers=1, progress=False, task_id=0, num_tasks=4)
    recipe.write_text(recipe.read_text().replace("size_k: 0.008", "size_k: 0.009"))
    assert data_hash(_cfg(out, suites)) != before
    with pytest.raises(DatasetError, match="recipes"):
        generate_dataset(_cfg(out, suites), workers=1, progress=False)
    edited = data_hash(_cfg(out, suites))
    recipe.write_text(recipe.read_text() + "# a comment changes nothing\n")
    assert data_hash(_cfg(out, suites)) == edited
