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
