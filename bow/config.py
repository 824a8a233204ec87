"""Configuration dataclasses: each setting declared once, with its default and its help.

An estimator takes its config dataclass (``Autoencoder`` an ``AutoencoderConfig``, ``Codebook``
a ``CodebookConfig``, ``Head`` a ``HeadConfig``, KW-MLP pretraining a ``PretrainConfig``); a
stage's config extends the estimator's with the stage's own fields (``TrainAutoencodersConfig``
adds the encoder kind, the training splits...). ``narrow`` takes the estimator's part back out
of a stage config, so the estimator never sees the stage's fields. The command lines, TOML
files and fingerprints of pipelines/ are derived from the same fields (pipelines.cli).
"""
from __future__ import annotations

import dataclasses
from typing import TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """An option with an invalid value, or a configuration file that cannot be used."""


def option(default, help: str):
    """A dataclass field with ``default`` and the ``help`` that ``--help`` shows."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not options: use a tuple")
    return dataclasses.field(default=default, metadata={"help": help})


def narrow(config, cls: type[C]) -> C:
    """The ``cls`` part of ``config`` (an instance of ``cls`` or of a dataclass extending it)."""
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def choose(name: str, value, choices) -> None:
    """ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {tuple(choices)}, got {value!r}")
