"""bow.io.stage bookkeeping and pipelines.cli config resolution."""
import argparse
from dataclasses import dataclass, field

import pytest

from bow.config import ConfigError
from bow.io.stage import (
    LockedError,
    atomic_path,
    digest,
    is_done,
    locked,
    mark_done,
    stage_fingerprint,
)
from pipelines.cli import add_config_args, config_from_args


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


def test_help_lists_defaults(capsys):
    p = argparse.ArgumentParser()
    add_config_args(p, Cfg)
    p.print_help()
    out = capsys.readouterr().out
    assert "--epochs" in out and "(default: 3)" in out and "(default: train)" in out
