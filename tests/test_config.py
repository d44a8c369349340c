"""The strict config schema: unknown keys, wrong types, overrides, resolved dumps."""

import pytest
import yaml

from galmass.config import Config, ConfigError, dump_config, load_config, parse_overrides


def write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_roundtrip(tmp_path):
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    again = load_config(write(tmp_path, dump_config(cfg)))
    assert again == cfg


def test_misspelled_key_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, "train:\n  learning_rat: 0.1\n  lr: 0.1\nmodel:\n  tracer: stars\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and "learning_rat" in msg and "Valid keys" in msg
    p = write(tmp_path, "train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        load_config(p)


def test_unknown_section_and_wrong_types(tmp_path):
    with pytest.raises(ConfigError, match="unknown section 'trian'.*Did you mean 'train'"):
        load_config(write(tmp_path, "trian:\n  lr: 1\n"))
    with pytest.raises(ConfigError, match=r"train.epochs: got 'ten'"):
        load_config(write(tmp_path, "train:\n  epochs: ten\n"))
    with pytest.raises(ConfigError, match="model.tracer: got 'dust'"):
        load_config(write(tmp_path, "model:\n  tracer: dust\n"))
    with pytest.raises(ConfigError, match=r"model.widths\[1\]"):
        load_config(write(tmp_path, "model:\n  widths: [8, x]\n"))
    with pytest.raises(ConfigError, match="leaves no training galaxies"):
        load_config(write(tmp_path, "data:\n  val_fraction: 0.5\n  test_fraction: 0.5\n"))


def test_overrides_win_and_are_checked(tmp_path):
    p = write(tmp_path, "train:\n  lr: 0.1\n  epochs: 3\n")
    cfg = load_config(p, ["--train.lr=1e-3", "--model.tracer=gas+stars", "--data.suites=[compact]"])
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 3
    assert cfg.model.tracer == "gas+stars" and cfg.data.suites == ["compact"]
    with pytest.raises(ConfigError, match="command line: unknown key 'train.lrr'.*Did you mean 'lr'"):
        load_config(p, ["--train.lrr=1"])
    with pytest.raises(ConfigError, match="command line: train.epochs"):
        load_config(p, ["--train.epochs=1.5"])
    with pytest.raises(ConfigError, match="expected --section.key=value"):
        parse_overrides(["--lr=3"])


def test_dump_is_plain_yaml():
    data = yaml.safe_load(dump_config(load_config(None, ["--train.epochs=7"])))
    assert data["train"]["epochs"] == 7 and set(data) == {"data", "model", "train", "evaluate"}


@pytest.mark.parametrize("override,key", [
    ("--train.keep_checkpoints=0", "keep_checkpoints"),
    ("--data.test_fraction=-0.3", "test_fraction"),
    ("--data.val_fraction=1.2", "val_fraction"),
    ("--train.lr=-1e-3", "train.lr"),
    ("--train.lr=.nan", "train.lr"),
    ("--train.threads=-1", "threads"),
    ("--train.num_workers=-1", "num_workers"),
    ("--evaluate.posterior_samples=0", "posterior_samples"),
    ("--data.workers=-2", "workers"),
    ("--model.embed_dim=0", "embed_dim"),
    ("--model.flow_passes=0", "flow_passes"),
    ("--model.flow_passes=two", "flow_passes"),
])
def test_values_that_would_crash_later_are_refused_at_load(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_optional_key_takes_null_and_round_trips():
    """``model.flow_passes`` (int or null): null on the command line and in the dumped YAML stays None."""
    assert load_config(None, ["--model.flow_passes=null"]).model.flow_passes is None
    cfg = load_config(None, ["--model.flow_passes=2"])
    assert yaml.safe_load(dump_config(cfg))["model"]["flow_passes"] == 2


def test_duplicate_yaml_keys_are_an_error_naming_both_lines(tmp_path):
    p = write(tmp_path, "train:\n  lr: 1.0e-3\n  epochs: 3\n  lr: 2.0e-3\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'lr' \(first on line 2, again on line 4\)") as err:
        load_config(p)
    assert str(p) in str(err.value)
    with pytest.raises(ConfigError, match="duplicate key 'train'"):
        load_config(write(tmp_path, "train:\n  lr: 1.0e-3\ntrain:\n  epochs: 3\n"))


def test_data_hash_ignores_location_but_not_content():
    from galmass.config import data_hash

    a = load_config(None).data
    assert data_hash(a) == data_hash(load_config(None, ["--data.path=elsewhere", "--data.workers=7"]).data)
    for change in ("--data.n_stars=[1000,1000]", "--data.npix=16", "--data.dtype=float16", "--data.suites=[compact]"):
        assert data_hash(load_config(None, [change]).data) != data_hash(a), change
