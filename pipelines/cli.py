"""Command lines from frozen config dataclasses: defaults < --config FILE.toml < --key value.

Every dataclass field becomes ``--field-name`` (underscores as dashes), with its default and
the ``help`` in the field's metadata shown by ``--help``. Tuples are given comma-separated
(``--train-splits 1,2,3``); booleans as true/false. A TOML file holds the same keys (with
underscores), at top level.
"""
from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing
from pathlib import Path


def _parse_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(tp):
    """A function turning a command-line string (or TOML value) into a value of type ``tp``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = _converter(typing.get_args(tp)[0])
        return lambda v: tuple(inner(x) for x in (v.split(",") if isinstance(v, str) else v)
                               if str(x).strip() != "")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _converter(args[0])
        return lambda v: None if v in (None, "", "none", "None") else inner(v)
    if tp is bool:
        return lambda v: v if isinstance(v, bool) else _parse_bool(v)
    return tp


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """Add ``--config`` and one option per field of the dataclass ``cls``."""
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML file with option values (command-line options override it)")
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f, tp in _fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                           metavar=f.name.upper(), type=str,
                           help=f"{f.metadata.get('help', '')} (default: {shown})")


def config_from_args(cls, args: argparse.Namespace):
    """The dataclass ``cls`` resolved from defaults, ``args.config`` (TOML) and explicit options."""
    values: dict = {}
    if getattr(args, "config", None):
        with open(args.config, "rb") as fh:
            toml = tomllib.load(fh)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(toml) - names)
        if unknown:
            raise SystemExit(f"{args.config}: unknown option(s) {unknown} for {cls.__name__}")
        values.update(toml)
    for f, _ in _fields(cls):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    typed = {}
    for f, tp in _fields(cls):
        if f.name in values:
            try:
                typed[f.name] = _converter(tp)(values[f.name])
            except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
                raise SystemExit(f"--{f.name.replace('_', '-')}: {e}") from e
    return cls(**typed)


def common_parser(description: str, data_required: bool = True,
                  data_help: str = "dataset folder: FSD50K release layout or audio/ + labels.csv"
                  ) -> argparse.ArgumentParser:
    """A parser with the options every stage takes: --data, --artifacts, --device.

    Stages that read only stores (heads, evaluation) pass ``data_required=False``."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, required=data_required, help=data_help)
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"),
                   help="where stage outputs are written")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p
