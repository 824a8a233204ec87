"""bow.io.stage bookkeeping, bow.config, pipelines.cli config resolution and exit statuses,
bow.progress in logs."""
import argparse
import importlib
from dataclasses import dataclass, field

import pytest

from bow.bagofwords.encoder import AutoencoderConfig
from bow.config import ConfigError, narrow, option
from bow.io.stage import (
    LockedError,
    atomic_path,
    digest,
    is_done,
    locked,
    mark_done,
    stage_fingerprint,
)
from bow.progress import progress
from pipelines.cli import add_config_args, config_from_args
from pipelines.train_autoencoders import TrainAutoencodersConfig


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_fingerprints_and_done_markers(tmp_path):
    fp = stage_fingerprint({"a": 1, "b": (1, 2)}, {"up": "x"})
    assert fp == stage_fingerprint({"b": [1, 2], "a": 1}, {"up": "x"})
    assert fp != stage_fingerprint({"a": 2, "b": (1, 2)}, {"up": "x"})
    assert not is_done(tmp_path, fp)
    mark_done(tmp_path, fp, {"a": 1}, {"up": "x"})
    assert is_done(tmp_path, fp) and not is_done(tmp_path, digest("other"))


def test_lock_refuses_a_second_holder(tmp_path):
    with locked(tmp_path):
        with pytest.raises(LockedError, match="another stage is running"):
            with locked(tmp_path):
                pass
    with locked(tmp_path):  # released
        pass


@dataclass(frozen=True)
class Cfg:
    epochs: int = field(default=3, metadata={"help": "passes"})
    lr: float = 1e-3
    splits: tuple[str, ...] = ("train",)
    shuffle: bool = True
    name: str = "x"


def _parse(argv):
    p = argparse.ArgumentParser()
    add_config_args(p, Cfg)
    return config_from_args(Cfg, p.parse_args(argv))


def test_defaults_toml_and_overrides(tmp_path):
    assert _parse([]) == Cfg()
    toml = tmp_path / "c.toml"
    toml.write_text('epochs = 7\nsplits = ["1", "2"]\nshuffle = false\n')
    assert _parse(["--config", str(toml)]) == Cfg(epochs=7, splits=("1", "2"), shuffle=False)
    assert _parse(["--config", str(toml), "--epochs", "9", "--splits", "3,4", "--lr", "0.5"]) == \
        Cfg(epochs=9, splits=("3", "4"), shuffle=False, lr=0.5)


def test_bad_values_and_unknown_keys_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="--epochs"):
        _parse(["--epochs", "many"])
    toml = tmp_path / "c.toml"
    toml.write_text("epoks = 7\n")
    with pytest.raises(ConfigError, match=f"{toml}: unknown option"):
        _parse(["--config", str(toml)])
    toml.write_text("[a\n  b = 1\n")                       # a TOML syntax error names the file
    with pytest.raises(ConfigError, match=f"{toml}: cannot read the configuration file"):
        _parse(["--config", str(toml)])


def test_narrow_takes_the_estimator_part_of_a_stage_config():
    config = TrainAutoencodersConfig(hidden=64, encoder="random", max_clips=5)
    assert narrow(config, AutoencoderConfig) == AutoencoderConfig(hidden=64)
    with pytest.raises(TypeError):
        option([1], "mutable defaults are refused")


@pytest.mark.parametrize("stage", ["train_autoencoders", "fit_codebooks", "embed", "embed_kwmlp",
                                   "pretrain_kwmlp", "pretrain_audiomlp", "embed_audiomlp",
                                   "evaluate", "train_heads", "export_bundle",
                                   "export_hear_task", "hear_eval"])
def test_every_stage_takes_no_progress_and_exits_by_the_same_rules(stage, tmp_path, capsys):
    main = importlib.import_module(f"pipelines.{stage}").main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--no-progress" in capsys.readouterr().out
    argv = ["--artifacts", str(tmp_path), "--data", str(tmp_path / "missing"), "--no-progress"]
    argv += ["--features", str(tmp_path / "no.h5")] if stage == "train_heads" else []
    argv += ["--out", str(tmp_path / "out")] if stage.endswith("hear_task") else []
    argv += ["--tasks", str(tmp_path / "no-task"), "--out", str(tmp_path / "o")] \
        if stage == "hear_eval" else []
    with pytest.raises(SystemExit) as exit_:                # a user error: one line, status 1
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith(f"{stage}: error: "), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_progress_writes_sparse_lines_when_not_a_terminal(capsys):
    for _ in progress(range(5000), desc="work", enabled=True):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err and 1 <= len(err.splitlines()) <= 3 and "5000/5000" in err
    for _ in progress(range(10), enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_help_lists_defaults(capsys):
    p = argparse.ArgumentParser()
    add_config_args(p, Cfg)
    p.print_help()
    out = capsys.readouterr().out
    assert "--epochs" in out and "(default: 3)" in out and "(default: train)" in out
